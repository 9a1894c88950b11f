package stompsrc

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/gatherconn"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/rawio"
)

// dialGathering is source.DialTLS with the TCP connection's reads
// gathering (internal/gatherconn): once the link has logged in (Gather),
// while messages arrive less than pause apart, a read waits pause so that
// one socket read and one wake-up serve several of them.
func dialGathering(ctx context.Context, addr string, tc *tls.Config, pause time.Duration) (*gatherconn.Conn, *tls.Conn, error) {
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	gc := gatherconn.New(rawio.Wrap(tcp), pause)
	c := tls.Client(gc, tc)
	if err := source.Handshake(ctx, c); err != nil {
		tcp.Close()
		return nil, nil, err
	}
	return gc, c, nil
}
