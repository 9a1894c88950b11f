package stompsrc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
)

// TestMessageAfterTheReceiptIsHandedOver: a server may write a message its
// sender had taken before it read the DISCONNECT after the RECEIPT (the
// simulator does, about once in 20-40 shutdowns). With ack auto that
// message is settled by the platform, so Next reads on after the RECEIPT
// until the server closes and returns it; it used to stop at the RECEIPT and
// the message was lost.
func TestMessageAfterTheReceiptIsHandedOver(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	log := slog.New(slog.DiscardHandler)
	l := &link{name: "c", src: &Source{log: log}, w: newWire(client), log: log}
	go func() {
		_, _ = server.Write([]byte("RECEIPT\nreceipt-id:" + disconnectReceipt + "\n\n\x00" +
			"MESSAGE\ndestination:/topic/#\nmessage-id:m-1\nsubscription:0\ntopic:/pk/dev/user/x\nmessageId:late\ncontent-length:4\n\nbody\x00"))
		server.Close()
	}()
	d, err := l.Next(context.Background())
	if err != nil || d == nil || d.MessageID != "late" || string(d.Body) != "body" {
		t.Fatalf("Next = %v, %v; want the message written after the RECEIPT", d, err)
	}
	if _, err := l.Next(context.Background()); !errors.Is(err, errDisconnected) {
		t.Fatalf("Next after the server closed = %v, want errDisconnected", err)
	}
}
