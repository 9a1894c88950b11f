package bridge

import "sync"

// idleSenders is how many sender goroutines wait for the next request
// between requests. At a moderate rate a request starts about when an
// earlier one ends (MNS answers them in turn), so one or two waiting cover
// nearly every start; at full rate the senders keep taking batches and do
// not wait here at all.
const idleSenders = 2

// senderPool runs the lanes' senders on goroutines kept between requests.
//
// Each request used to run on a goroutine of its own (started by Handle
// when a batch filled, or the linger's timer goroutine), which began with
// a small stack and grew it two or three times during the request (the
// MNS client's XML, signature and exchange need more than 8 KB): each
// growth copies the stack and walks its frames, 3–10 % of the bridge's CPU
// at 500–5,000 msgs/s. A kept goroutine has its stack grown already. It
// waits without a timer (no wake-up while the bridge is quiet) and only
// after a request MNS answered: while a destination fails its probes are
// minutes apart, and nothing waits for them.
type senderPool struct {
	mu     sync.Mutex
	idle   []chan func() bool // the waiting goroutines; the last to wait goes first
	closed bool
}

// start runs the sender f on a waiting goroutine, or on a new one.
func (sp *senderPool) start(f func() bool) {
	if c := sp.take(); c != nil {
		c <- f
		return
	}
	go sp.work(f)
}

// here runs f on a waiting goroutine if one waits (and returns at once),
// else on the calling goroutine, which then waits for the next request
// itself: a timer's goroutine becomes a kept sender.
func (sp *senderPool) here(f func() bool) {
	if c := sp.take(); c != nil {
		c <- f
		return
	}
	sp.work(f)
}

func (sp *senderPool) take() chan func() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	n := len(sp.idle)
	if n == 0 || sp.closed {
		return nil
	}
	c := sp.idle[n-1]
	sp.idle[n-1] = nil
	sp.idle = sp.idle[:n-1]
	return c
}

// work runs f, then the senders handed to it, while it may wait for them:
// f says whether it may (false: MNS did not answer its last request).
func (sp *senderPool) work(f func() bool) {
	var c chan func() bool
	for f != nil {
		if !f() {
			return
		}
		sp.mu.Lock()
		if sp.closed || len(sp.idle) >= idleSenders {
			sp.mu.Unlock()
			return
		}
		if c == nil {
			c = make(chan func() bool, 1)
		}
		sp.idle = append(sp.idle, c)
		sp.mu.Unlock()
		f = <-c
	}
}

// close ends the waiting goroutines; later senders run on goroutines of
// their own that end with them.
func (sp *senderPool) close() {
	sp.mu.Lock()
	idle := sp.idle
	sp.idle, sp.closed = nil, true
	sp.mu.Unlock()
	for _, c := range idle {
		c <- nil
	}
}
