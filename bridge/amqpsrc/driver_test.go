package amqpsrc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// TestRefusedDeliveryIsFatal: a delivery the pipeline refuses while intake
// runs is released and stops Run (the pipeline is gone), as in every source
// (source.Driver); the AMQP source used to redial, taking and giving back
// messages in a loop.
func TestRefusedDeliveryIsFatal(t *testing.T) {
	hs := newHarness(t, Config{}, func(context.Context, *bridge.Delivery) error {
		return errors.New("pipeline is shutting down")
	}, nil)
	c := hs.nextConn()
	select {
	case c.msgs <- platformMsg("1"):
	case <-time.After(waitLimit):
		t.Fatal("not received")
	}
	select {
	case err := <-hs.runErr:
		if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "refused a delivery") {
			t.Fatalf("Run = %v, want a fatal refusal", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return")
	}
	eventually(t, "the refused delivery released", func() bool { a, r := c.counts(); return a == 0 && r == 1 })
	select {
	case <-hs.dialer.dialed:
		t.Error("redialled after the pipeline refused a delivery")
	default:
	}
}
