package stompsrc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// TestSignErrorIsFatal: signing inputs that became invalid after New (they
// come from the config and cannot fix themselves) stop Run with a fatal
// error naming the field, as in every source (source.Driver); the STOMP
// source used to redial them forever.
func TestSignErrorIsFatal(t *testing.T) {
	s := startFakeServer(t)
	var mu sync.Mutex
	calls := 0
	params := func() (iotauth.Params, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		p := goodParams()
		if calls > 1 { // valid for New, then broken
			p.ConsumerGroupID = "bad,group"
		}
		return p, nil
	}
	src, _ := newTestSource(t, s, func(c *Config) { c.Params = params })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := src.Run(ctx, func(context.Context, *bridge.Delivery) error { return nil })
	if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "consumerGroupId") {
		t.Errorf("Run = %v, want a fatal error naming consumerGroupId", err)
	}
	if err := src.Close(ctx); err != nil {
		t.Error(err)
	}
}

// TestRefusedDeliveryIsFatal: a delivery the pipeline refuses while intake
// runs stops Run (the pipeline is gone), after releasing it: with
// client-individual the server gets a NACK.
func TestRefusedDeliveryIsFatal(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.Ack = AckClientIndividual })
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(context.Background(), func(context.Context, *bridge.Delivery) error {
			return errors.New("pipeline is shutting down")
		})
	}()
	c := s.WaitSubscribed(t)
	id, _ := c.Send("/a/b/user/x", []byte("refused"))
	select {
	case err := <-errc:
		if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "refused a delivery") {
			t.Fatalf("Run = %v, want a fatal refusal", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if got := s.WaitSettle(t); got != "nack:"+id {
		t.Errorf("got %q, want nack:%s", got, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Error(err)
	}
}
