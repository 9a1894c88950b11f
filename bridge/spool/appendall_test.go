package spool

import (
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// TestAppendAllStoresOrReturns: AppendAll commits every message of an open
// spool (none returned) and returns every delivery a closed spool cannot
// take.
func TestAppendAllStoresOrReturns(t *testing.T) {
	s := open(t, Options{})
	ds := []*bridge.Delivery{
		bridge.NewDelivery(bridge.Message{MessageID: "a", Body: []byte("1")}, nil, nil),
		bridge.NewDelivery(bridge.Message{MessageID: "b", Body: []byte("2")}, nil, nil),
		bridge.NewDelivery(bridge.Message{MessageID: "c", Body: []byte("3")}, nil, nil),
	}
	if failed := s.AppendAll(ds); len(failed) != 0 {
		t.Fatalf("AppendAll on an open spool returned %d", len(failed))
	}
	if d := s.Stats().Depth; d != 3 {
		t.Fatalf("depth %d after AppendAll, want 3", d)
	}
	s.Close()
	if failed := s.AppendAll(ds[:2]); len(failed) != 2 {
		t.Fatalf("AppendAll on a closed spool returned %d, want both", len(failed))
	}
}
