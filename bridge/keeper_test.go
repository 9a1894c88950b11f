package bridge

import (
	"context"
	"errors"
	"testing"
)

// TestKeeperKeepsWhatNoUpstreamSendsAgain: once the shutdown began (ctx
// done), a delivery the intake refuses is kept when no upstream would
// redeliver it, and reported taken; a redeliverable one, or a refusal before
// the shutdown, is the intake's error as it was.
func TestKeeperKeepsWhatNoUpstreamSendsAgain(t *testing.T) {
	refused := errors.New("pipeline closed")
	intake := func(context.Context, *Delivery) error { return refused }
	var k Keeper
	h := k.Wrap(intake)
	done, cancel := context.WithCancel(context.Background())
	cancel()

	once := NewDelivery(Message{MessageID: "ack-auto"}, nil, nil)
	again := NewDelivery(Message{MessageID: "client-ack"}, &recorder{}, nil)
	early := NewDelivery(Message{MessageID: "early"}, nil, nil)

	if err := h(done, once); err != nil {
		t.Errorf("a kept delivery: %v, want nil (taken)", err)
	}
	if err := h(done, again); !errors.Is(err, refused) {
		t.Errorf("a redeliverable delivery: %v, want the intake's error", err)
	}
	if err := h(context.Background(), early); !errors.Is(err, refused) {
		t.Errorf("a refusal before the shutdown: %v, want the intake's error", err)
	}
	got := k.Take()
	if len(got) != 1 || got[0] != once {
		t.Fatalf("kept %v, want only %q", got, once.MessageID)
	}
	if len(k.Take()) != 0 {
		t.Error("Take did not empty the keeper")
	}
	k.Add(again)
	if got := k.Take(); len(got) != 1 || got[0] != again {
		t.Errorf("Add then Take: %v", got)
	}
}
