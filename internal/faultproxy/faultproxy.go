// Package faultproxy is a fault-injecting TCP proxy for tests. It sits between
// a client (the bridge) and a server (the IoT platform simulator, MNS, a
// broker), forwards bytes both ways, and on command from the test cuts every
// connection, stalls them without closing (a blackhole), adds latency,
// refuses new connections, or resets connections in the middle of the byte
// stream (and so in the middle of a TLS record or protocol frame).
//
// The proxy listens on loopback only and knows nothing of the protocols it
// carries. Every fault is bounded: it lasts until the test turns it off or
// closes the proxy, and Close ends every connection and goroutine.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction is a direction of the byte stream through the proxy.
type Direction int

const (
	// Upstream is client → server.
	Upstream Direction = iota
	// Downstream is server → client.
	Downstream
)

func (d Direction) String() string {
	if d == Upstream {
		return "upstream"
	}
	return "downstream"
}

// Stats are counters since Start.
type Stats struct {
	Accepted int64 // client connections accepted
	Refused  int64 // client connections refused (Refuse, or the target down)
	Active   int   // connection pairs open now
	Cuts     int64 // connections closed by Cut
	Resets   int64 // connections reset by ResetAfter
	// BytesUp and BytesDown count bytes forwarded to the server and to the
	// client.
	BytesUp, BytesDown int64
}

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	log    *slog.Logger
	wg     sync.WaitGroup

	mu      sync.Mutex
	pairs   map[*pair]bool
	open    chan struct{} // closed while no blackhole is in force
	latency time.Duration
	refuse  bool
	closed  bool

	accepted, refused, cuts, resets atomic.Int64
	bytesUp, bytesDown              atomic.Int64
}

// pair is one proxied connection: the client side and the server side.
type pair struct {
	client, server net.Conn
	done           chan struct{}
	once           sync.Once
	// resetAt[dir] is the number of bytes still to forward in dir before the
	// pair is reset; -1 when no reset is armed.
	resetAt [2]atomic.Int64
}

// Start listens on a free loopback port and forwards every connection to
// target (host:port). logger may be nil. The caller must Close the proxy.
func Start(target string, logger *slog.Logger) (*Proxy, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	open := make(chan struct{})
	close(open)
	p := &Proxy{ln: ln, target: target, log: logger.With("proxy", ln.Addr().String(), "target", target),
		pairs: map[*pair]bool{}, open: open}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the host:port clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the port of Addr.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if closed {
			c.Close()
			return
		}
		if refuse {
			p.refused.Add(1)
			reset(c)
			continue
		}
		p.wg.Add(1)
		go p.connect(c)
	}
}

// connect dials the target for client c and starts forwarding. While a
// blackhole is in force the dial waits, so a new connection stalls too.
func (p *Proxy) connect(c net.Conn) {
	defer p.wg.Done()
	pr := &pair{client: c, done: make(chan struct{})}
	pr.resetAt[0].Store(-1)
	pr.resetAt[1].Store(-1)
	if !p.register(pr) {
		c.Close()
		return
	}
	if !p.waitOpen(pr) {
		p.closePair(pr)
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.refused.Add(1)
		p.log.Debug("target dial failed", "err", err)
		pr.once.Do(func() { close(pr.done) })
		p.unregister(pr)
		reset(c)
		return
	}
	p.mu.Lock()
	pr.server = s
	stale := !p.pairs[pr]
	p.mu.Unlock()
	if stale { // cut or closed while dialing: closePair already ran
		s.Close()
		return
	}
	p.accepted.Add(1)
	p.wg.Add(2)
	go p.pipe(pr, Upstream, s, c)
	go p.pipe(pr, Downstream, c, s)
}

func (p *Proxy) register(pr *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.pairs[pr] = true
	return true
}

func (p *Proxy) unregister(pr *pair) {
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

// waitOpen blocks while a blackhole is in force; false when the pair ended.
func (p *Proxy) waitOpen(pr *pair) bool {
	for {
		p.mu.Lock()
		open := p.open
		p.mu.Unlock()
		select {
		case <-open:
			return true
		case <-pr.done:
			return false
		}
	}
}

// pipe copies src to dst chunk by chunk, applying the faults in force, until
// either side fails or the pair is closed; then it closes the pair.
func (p *Proxy) pipe(pr *pair, dir Direction, dst, src net.Conn) {
	defer p.wg.Done()
	defer p.closePair(pr)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitOpen(pr) || !p.delay(pr) {
				return
			}
			chunk := buf[:n]
			if left := pr.resetAt[dir].Load(); left >= 0 {
				if int64(n) > left {
					p.write(dir, dst, chunk[:left])
					p.resets.Add(1)
					p.log.Debug("reset mid-stream", "direction", dir, "after", left)
					p.resetPair(pr)
					return
				}
				pr.resetAt[dir].Add(-int64(n))
			}
			if !p.write(dir, dst, chunk) {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.log.Debug("read failed", "direction", dir, "err", err)
			}
			return
		}
	}
}

// write writes b to dst, counts the bytes and reports whether it worked.
func (p *Proxy) write(dir Direction, dst net.Conn, b []byte) bool {
	n, err := dst.Write(b)
	if dir == Upstream {
		p.bytesUp.Add(int64(n))
	} else {
		p.bytesDown.Add(int64(n))
	}
	return err == nil
}

// delay sleeps the latency in force; false when the pair ended meanwhile.
func (p *Proxy) delay(pr *pair) bool {
	p.mu.Lock()
	d := p.latency
	p.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-pr.done:
		return false
	}
}

func (p *Proxy) closePair(pr *pair) {
	pr.once.Do(func() {
		close(pr.done)
		pr.client.Close()
		p.mu.Lock()
		s := pr.server
		p.mu.Unlock()
		if s != nil {
			s.Close()
		}
	})
	p.unregister(pr)
}

// resetPair closes both sides with an RST instead of a FIN.
func (p *Proxy) resetPair(pr *pair) {
	p.mu.Lock()
	s := pr.server
	p.mu.Unlock()
	setLingerZero(pr.client)
	if s != nil {
		setLingerZero(s)
	}
	p.closePair(pr)
}

func setLingerZero(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

func reset(c net.Conn) {
	setLingerZero(c)
	c.Close()
}

func (p *Proxy) snapshot() []*pair {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		out = append(out, pr)
	}
	return out
}

// Cut closes every open connection on both sides (a FIN each way), as a
// server or middlebox that drops its connections does. New connections are
// accepted as before. It returns the number of connections cut.
func (p *Proxy) Cut() int {
	prs := p.snapshot()
	for _, pr := range prs {
		p.closePair(pr)
	}
	p.cuts.Add(int64(len(prs)))
	p.log.Debug("cut", "connections", len(prs))
	return len(prs)
}

// SetBlackhole starts (true) or ends (false) a blackhole: while it is in
// force no byte moves in either direction and nothing is closed, so the
// peers see a silent connection; new connections are accepted but stall
// before they reach the target. Bytes read meanwhile are held and forwarded
// when the blackhole ends (as TCP retransmission would), unless the
// connection was closed meanwhile.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		if on {
			p.open = make(chan struct{})
		}
	default:
		if !on {
			close(p.open)
		}
	}
	p.log.Debug("blackhole", "on", on)
}

// SetLatency delays every chunk forwarded in either direction by d; 0 ends
// the delay.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetRefuse makes the proxy reset (true) or accept (false) new client
// connections; open connections are left alone.
func (p *Proxy) SetRefuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// ResetAfter arms a reset on every connection open now: once it has
// forwarded n more bytes in direction dir, the rest of the chunk in hand is
// dropped and both sides are reset (RST). With n smaller than a frame, that
// is a reset in the middle of a frame. Connections opened later are not
// affected. It returns the number of connections armed.
func (p *Proxy) ResetAfter(dir Direction, n int64) int {
	if n < 0 {
		n = 0
	}
	prs := p.snapshot()
	for _, pr := range prs {
		pr.resetAt[dir].Store(n)
	}
	return len(prs)
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.pairs)
	p.mu.Unlock()
	return Stats{
		Accepted: p.accepted.Load(), Refused: p.refused.Load(), Active: active,
		Cuts: p.cuts.Load(), Resets: p.resets.Load(),
		BytesUp: p.bytesUp.Load(), BytesDown: p.bytesDown.Load(),
	}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	for _, pr := range p.snapshot() {
		p.closePair(pr)
	}
	p.wg.Wait()
	return err
}
