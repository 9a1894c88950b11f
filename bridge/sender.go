package bridge

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// outsPool holds the senders' request slices.
var outsPool = sync.Pool{New: func() any { s := make([]Outgoing, 0, 16); return &s }}

// sender sends the lane's ready batches, one request at a time, until none
// is ready. It was counted in l.senders and p.wg by startSender. It says
// whether MNS answered its last request (p.senders keeps its goroutine for
// the next request then).
func (l *lane) sender() (answered bool) {
	p := l.p
	defer p.wg.Done()
	var outs *[]Outgoing
	defer func() {
		if outs != nil {
			outsPool.Put(outs)
		}
	}()
	answered = true
	for {
		batch, probe := l.take()
		if batch == nil {
			return answered
		}
		if outs == nil {
			outs = outsPool.Get().(*[]Outgoing)
		}
		select {
		case p.reqs <- struct{}{}:
		case <-p.sendCtx.Done():
			p.releaseAll(batch)
			answered = false
			continue // take counts this sender out once the lane is stopped
		}
		*outs, answered = l.send(batch, (*outs)[:0], probe)
	}
}

// send performs one request for batch and handles each message's outcome:
// accepted ones are settled, retryable failures go back on the lane,
// permanent ones and exhausted retries are dead-lettered. It holds one
// global request slot, released before the outcomes are handled. outs is
// scratch space, returned for reuse; answered says whether MNS answered
// (a message accepted, or none failed retryably). probe says the batch was
// taken while the destination was failing.
func (l *lane) send(batch []*item, outs []Outgoing, probe bool) (_ []Outgoing, answered bool) {
	p := l.p
	envSize := 0
	for _, it := range batch {
		envSize += it.env.size
	}
	var envs []byte
	if envSize > 0 {
		// One buffer for the batch's JSON envelopes, dropped after the
		// request: a held message costs its payload, not its envelope too.
		envs = make([]byte, 0, envSize)
	}
	for _, it := range batch {
		o := it.out
		if it.env.size > 0 {
			start := len(envs)
			envs = it.env.append(envs, &it.d.Message)
			o.Body = envs[start:len(envs):len(envs)]
		}
		outs = append(outs, o)
		it.attempts++
	}
	start := p.now()
	errs := p.cfg.Sink.Send(p.sendCtx, l.dest, outs)
	end := p.now()
	p.answered(end) // once per request (liveness.go)
	p.m.request(l.dest, errs, end.Sub(start))
	<-p.reqs
	p.stats.requests.Add(1)
	clear(outs) // drop the bodies

	var retry, dead []*item
	ok := 0
	var failed error // a retryable failure, also of a message out of retries
	now := p.now()
	for i, it := range batch {
		var err error
		if i < len(errs) {
			err = errs[i]
		} else {
			err = errors.New("sink returned fewer outcomes than messages")
		}
		switch {
		case err == nil:
			ok++
			if p.cfg.Dedup != nil {
				p.cfg.Dedup.Add(it.d.MessageID, now)
			}
		case p.sendCtx.Err() != nil:
			p.done(it.d, Released, nil)
		case !Retryable(err) && !(it.fixed && MissingDestination(err)):
			// A missing destination of a fixed route is held and retried
			// (until the retry budget runs out), as refused credentials
			// are: the route is broken for every message, not this one.
			it.lastErr, it.class = err, ClassOf(err, ClassRejected)
			dead = append(dead, it)
		default:
			it.lastErr = err
			if failed == nil {
				failed = err
			}
			if reason := p.exhausted(it); reason != "" {
				it.lastErr, it.class = fmt.Errorf("%s: %w", reason, err), ClassRetriesExhausted
				dead = append(dead, it)
			} else {
				retry = append(retry, it)
			}
		}
	}
	if ok > 0 {
		// The accepted ids reach the de-dup journal's file before their
		// deliveries are settled: a crash while a settlement waits in the
		// source leaves a redelivery the journal suppresses on restart.
		if p.cfg.Dedup != nil {
			p.cfg.Dedup.Flush()
		}
		for i, it := range batch {
			if i < len(errs) && errs[i] == nil {
				p.done(it.d, Accepted, &p.stats.forwarded) // counted once settled: who reads Forwarded sees it settled
				p.m.Forwarded.Inc()
			}
		}
	}
	if len(dead) > 0 {
		l.deadLetter(dead)
	}
	// MNS answered (a message accepted, or none failed retryably); not
	// when the shutdown cut the request short, which is no answer.
	answered = ok > 0 || failed == nil && p.sendCtx.Err() == nil
	if answered {
		l.sendOK(p.now())
	}
	// A whole request failing is an outage of the destination; some
	// messages of a batch failing is not (their retries wait their
	// backoff). While it fails, what the probes did not carry still
	// reaches its retry time.
	outage := ok == 0 && failed != nil && p.sendCtx.Err() == nil
	if outage {
		l.sendFailed(len(retry), failed, p.now(), probe)
	}
	defer func() {
		if !outage {
			return
		}
		if expired := l.expired(); len(expired) > 0 {
			l.deadLetter(expired)
		}
	}()
	if len(retry) > 0 {
		if !l.retryLater(retry) {
			p.releaseAll(retry)
			return outs, answered
		}
		// Counted once they wait in the lane: a success seen after the
		// count moved makes them due.
		p.stats.retried.Add(int64(len(retry)))
		p.m.Retried.Add(float64(len(retry)))
	}
	return outs, answered
}

// exhausted says why it must not be retried again, or "".
func (p *Pipeline) exhausted(it *item) string {
	r := p.tune.Load().Retry
	if r.MaxAttempts > 0 && it.attempts >= r.MaxAttempts {
		return fmt.Sprintf("gave up after %d attempts", it.attempts)
	}
	if r.MaxAge > 0 && p.now().Sub(it.first) >= r.MaxAge {
		return fmt.Sprintf("gave up after %s of retries (%d attempts)", p.now().Sub(it.first).Round(time.Millisecond), it.attempts)
	}
	return ""
}
