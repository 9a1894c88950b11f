package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults of CacheOptions.
const (
	// DefaultRefreshBefore is how long before expiry a refresh starts.
	DefaultRefreshBefore = 180 * time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	// ExpiredMaxBackoff bounds the wait between failed refreshes while no
	// valid triple is held (none yet, or the held one expired): nothing
	// can be signed then, and one request to the provider every few
	// seconds is no load for a metadata service or a credentials URI.
	ExpiredMaxBackoff = 5 * time.Second
	// DefaultFetchTimeout bounds one Retrieve.
	DefaultFetchTimeout = 30 * time.Second
	// UnrenewedAskEvery is the shortest wait before the provider is asked
	// again after it gave the held triple once more when its refresh was
	// due (a credentials file nothing rotates any more, a stuck RAM role
	// agent): the refresh, due at half the remaining life, came closer
	// with every such answer, down to a few nanoseconds before the expiry.
	UnrenewedAskEvery = 10 * time.Second
)

// CacheOptions tune a Cache; the zero value selects the defaults.
type CacheOptions struct {
	// RefreshBefore: a triple is refreshed this long before it expires
	// (default 180 s), or at half its remaining life when that is shorter,
	// so a short-lived triple is not fetched again at every call.
	RefreshBefore time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// failed refreshes (default 1 s to 1 min); while no valid triple is
	// held, it is at most ExpiredMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// FetchTimeout bounds one Retrieve (default 30 s).
	FetchTimeout time.Duration
	// Logger receives one line per refresh and per change between failing
	// and working; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// OneShot marks a cache of a command that reports a failure and stops
	// (check, sign): its errors do not announce the next attempt, which
	// such a caller never makes. The daemon's caches leave it false.
	OneShot bool
}

// Cache holds the current triple of one Provider for every signer. It is
// safe for concurrent use.
//
// Get returns the cached triple while it is valid. A triple that expires
// is refreshed in the background when it is due, by a timer (so an idle
// bridge holds a valid triple too) or by the first Get after that time. A failed refresh keeps the old triple until it
// expires and is retried after a jittered, doubling backoff, at the latest
// when the triple expires; calls in between never reach the provider. Once the triple has expired and no
// refresh works, Get fails at once with an error naming the provider and
// the last failure (callers hold their work and try again later).
type Cache struct {
	p    Provider
	opts CacheOptions
	log  *slog.Logger

	mu            sync.Mutex
	cur           Credentials
	have          bool
	refreshAt     time.Time     // when cur is due for refresh
	nextTry       time.Time     // no provider call before this, after a failure
	failures      int           // consecutive failed refreshes
	lastErr       error         // the last failure, nil after a success
	inflight      chan struct{} // closed when the running refresh ends; nil if none
	expiredLogged bool
	refusedAt     time.Time   // when Refused last started a refresh
	refusedID     string      // the id Refused last logged
	staleID       string      // the refused id a refresh got again, logged once
	unrenewedID   string      // the id a due refresh got again, logged once
	refusedSay    bool        // the refusal of refusedID is to be logged by the refresh it started
	timer         *time.Timer // the next proactive refresh
	closed        bool
}

// NewCache returns a Cache over p. It does no I/O: the first Get fetches.
func NewCache(p Provider, opts CacheOptions) *Cache {
	if opts.RefreshBefore <= 0 {
		opts.RefreshBefore = DefaultRefreshBefore
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{p: p, opts: opts, log: log}
}

// Close stops the proactive refreshes; Get still works (on demand).
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
}

// schedule arms the proactive refresh at at. Called with mu.
func (c *Cache) schedule(at time.Time) {
	if c.closed {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(max(at.Sub(c.opts.Now()), 0), c.kick)
}

// kick starts a refresh when it is due and none runs.
func (c *Cache) kick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.inflight != nil || c.opts.Now().Before(c.nextTry) {
		return
	}
	c.inflight = make(chan struct{})
	go c.refresh(c.inflight)
}

// clockQuestionWithin is how close to its expiry, by this machine's clock,
// a refused triple that the provider gives again may have expired by the
// servers' clocks instead of being stale where it comes from: MNS refuses a
// request dated more than 15 minutes off (TimeExpired), so a clock behind
// by less passes that check and sees its triple refused as expired; one
// further off is refused for its date first.
const clockQuestionWithin = 15 * time.Minute

// refusedEvery bounds the refreshes Refused starts: at most one per this
// (the provider may hand out the same triple until it rotates it).
const refusedEvery = 5 * time.Second

// Refused tells the cache that a server refused the triple with AccessKeyId
// id as unknown, expired or not matching its token. The cache reads a
// triple's Expiration with this machine's clock: when the servers' clocks are
// ahead of it, an STS triple expires there before the refresh the cache
// planned, and every request fails until then. When id is the held triple's
// and the triple expires, Refused starts a refresh now (at most one per 5 s,
// none while one runs or a failed one backs off); a triple that does not
// expire (a static key) is not fetched again: fixing it is the operator's.
func (c *Cache) Refused(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if !c.have || c.cur.AccessKeyID != id || c.cur.Expiration.IsZero() || c.inflight != nil ||
		now.Before(c.nextTry) || (!c.refusedAt.IsZero() && now.Sub(c.refusedAt) < refusedEvery) {
		return
	}
	if c.refusedID != id {
		// Said once the refetch shows what it is: a triple the servers
		// think expired (a clock behind theirs) or that its issuer revoked
		// early, or the same one again (stale at its source; see refresh).
		c.refusedID, c.refusedSay = id, true
	}
	c.refusedAt = now
	c.inflight = make(chan struct{})
	go c.refresh(c.inflight)
}

// Status is a snapshot of a Cache for metrics and status pages; it holds
// no secret.
type Status struct {
	// Expiration of the held triple; zero when it does not expire or none
	// is held.
	Expiration time.Time
	// Held reports whether a triple was ever obtained.
	Held bool
	// Failures counts the refreshes that failed since the last success.
	Failures int
	// Closed: Close was called; no refresh runs by itself any more (a
	// proactive one, or the retry of a failed one).
	Closed bool
	// Refresh is when the held triple is due to be asked for again; zero
	// when it does not expire or none is held.
	Refresh time.Time
}

// Status returns the cache's state without fetching.
func (c *Cache) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Expiration: c.cur.Expiration, Held: c.have, Failures: c.failures, Closed: c.closed, Refresh: c.refreshAt}
}

// Provider returns the provider behind the cache.
func (c *Cache) Provider() Provider { return c.p }

// Get returns a valid triple. It blocks only when there is none (the first
// call, a changed file, an expired triple) while a refresh runs, or until
// ctx is done. Errors name the provider and never carry a secret.
func (c *Cache) Get(ctx context.Context) (Credentials, error) {
	for {
		c.mu.Lock()
		now := c.opts.Now()
		valid := c.have && (c.cur.Expiration.IsZero() || now.Before(c.cur.Expiration))
		changed := false
		if w, ok := c.p.(Watcher); ok && c.have && c.inflight == nil {
			changed = w.Changed()
		}
		due := !c.have || changed || (!c.cur.Expiration.IsZero() && !now.Before(c.refreshAt))
		if due && c.inflight == nil && (changed || !now.Before(c.nextTry)) {
			c.inflight = make(chan struct{})
			go c.refresh(c.inflight)
		}
		if valid && !changed {
			cur := c.cur
			c.mu.Unlock()
			return cur, nil
		}
		wait := c.inflight
		if wait == nil {
			err := c.failedErr(now)
			c.mu.Unlock()
			return Credentials{}, err
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return Credentials{}, fmt.Errorf("credentials from %s: %w", c.p.Name(), ctx.Err())
		}
		c.mu.Lock()
		now = c.opts.Now()
		ok := c.have && (c.cur.Expiration.IsZero() || now.Before(c.cur.Expiration))
		cur, failed, err := c.cur, c.lastErr != nil, c.failedErr(now)
		c.mu.Unlock()
		if ok {
			return cur, nil
		}
		if failed {
			return Credentials{}, err
		}
		// The refresh worked but its triple expired meanwhile: go round.
	}
}

// ErrUnavailable is wrapped by Get's error when no valid triple is held
// (none fetched yet, or the held one expired) and no refresh works. The
// error's text names the next attempt, which counts down: tell such errors
// apart from others with errors.Is, not by their text.
var ErrUnavailable = errors.New("no valid credentials")

// unavailableError is failedErr's error: its text, and ErrUnavailable.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string        { return e.msg }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// failedErr is Get's error when no valid triple is held. Called with mu.
func (c *Cache) failedErr(now time.Time) error {
	retry := ""
	if d := c.nextTry.Sub(now); d > 0 && !c.opts.OneShot {
		retry = fmt.Sprintf("; next attempt in %s", d.Round(100*time.Millisecond))
	}
	if c.have {
		return &unavailableError{fmt.Sprintf("credentials from %s expired at %s and could not be refreshed: %v%s; work is held until they can be",
			c.p.Name(), c.cur.Expiration.UTC().Format(time.RFC3339), c.lastErr, retry)}
	}
	return &unavailableError{fmt.Sprintf("no credentials from %s: %v%s", c.p.Name(), c.lastErr, retry)}
}

// refresh runs one Retrieve and stores its outcome, then closes done.
func (c *Cache) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.FetchTimeout)
	cr, err := c.p.Retrieve(ctx)
	cancel()
	now := c.opts.Now()
	if err == nil {
		// Named by where they came from (a file's path): failedErr and the
		// log name the provider already.
		what := cr.Source
		if what == "" {
			what = "the triple"
		}
		err = cr.check(what, now)
	}

	c.mu.Lock()
	defer func() {
		c.inflight = nil
		close(done)
		c.mu.Unlock()
	}()
	// The triple held, again: after a refusal, new credentials are not to
	// be had from this provider yet.
	same := err == nil && c.have && cr.AccessKeyID == c.cur.AccessKeyID && cr.SecurityToken == c.cur.SecurityToken
	if c.refusedSay && !same {
		c.log.Warn("a server refused the credentials before they expire by this machine's clock; fetching new ones now (is the clock behind, or did the issuer revoke them early?)",
			"provider", c.p.Name(), "access_key_id", MaskID(c.refusedID), "expires", c.cur.Expiration.UTC().Format(time.RFC3339))
	}
	c.refusedSay = false
	if err != nil {
		c.failures++
		c.lastErr = err
		valid := c.have && (c.cur.Expiration.IsZero() || now.Before(c.cur.Expiration))
		d := c.opts.MinBackoff << min(c.failures-1, 20)
		if d > c.opts.MaxBackoff || d <= 0 {
			d = c.opts.MaxBackoff
		}
		if !valid {
			// Nothing can be signed: every message is held until a
			// refresh works, so a provider back (the metadata service,
			// the credentials URI) is asked again within seconds, not
			// after a backoff of up to a minute (37 s in the walk).
			d = min(d, ExpiredMaxBackoff)
		}
		d = d/2 + rand.N(d/2+1) // jitter: 50..100 %
		c.nextTry = now.Add(d)
		if valid && !c.cur.Expiration.IsZero() && c.nextTry.After(c.cur.Expiration) {
			// Not past the held triple's expiry: one attempt then, which
			// renews it at once if the provider works again, and else says
			// that it expired when it does (the backoff ran up to a minute
			// past it: a provider back meanwhile was not asked, and an
			// idle bridge said nothing of the expiry).
			c.nextTry = c.cur.Expiration
			d = c.nextTry.Sub(now)
		}
		c.schedule(c.nextTry)
		switch {
		case valid && c.failures == 1:
			c.log.Warn("credentials refresh failed; using the current ones until they expire",
				"provider", c.p.Name(), "expires", c.cur.Expiration.UTC().Format(time.RFC3339), "retry_in", d.Round(time.Millisecond), "err", err)
		case !valid && !c.expiredLogged:
			c.expiredLogged = true
			c.log.Error("no valid credentials: signing fails and messages are held until a refresh works",
				"provider", c.p.Name(), "retry_in", d.Round(time.Millisecond), "err", err)
		}
		return
	}
	recovered := c.failures > 0
	again := same && cr.AccessKeyID == c.refusedID
	due := !c.refreshAt.IsZero() && !now.Before(c.refreshAt)
	c.failures, c.lastErr, c.nextTry, c.expiredLogged = 0, nil, time.Time{}, false
	c.cur, c.have = cr, true
	c.refreshAt = time.Time{}
	if !cr.Expiration.IsZero() {
		margin := min(c.opts.RefreshBefore, cr.Expiration.Sub(now)/2)
		c.refreshAt = cr.Expiration.Add(-margin)
		if same && due && !recovered {
			// Not renewed: ask again, but not sooner than this, and
			// not later than the expiry: then Get's refresh says that
			// the triple expired (a refresh due after it left Get with
			// no refresh and no failure: "could not be refreshed: <nil>").
			c.refreshAt = earlier(later(c.refreshAt, now.Add(UnrenewedAskEvery)), cr.Expiration)
		}
		c.schedule(c.refreshAt)
	}
	if again {
		if c.staleID != cr.AccessKeyID {
			c.staleID = cr.AccessKeyID
			msg := "the provider gave the refused credentials again: they are stale where they come from (a credentials file or " +
				"secret files that nothing rotates any more, a cached token); the servers refuse them until it has new ones"
			if left := cr.Expiration.Sub(now); left <= clockQuestionWithin {
				msg = "the provider gave the refused credentials again, which expire in " + left.Round(time.Second).String() +
					" by this machine's clock: is this clock behind the servers' by that much or more? (MNS takes requests dated up to " +
					"15 minutes off, and the servers judge the expiry by their own clock) sync it (NTP); else they are stale where they " +
					"come from (a credentials file or secret files that nothing rotates any more, a cached token); the servers refuse " +
					"them until it has new ones"
			}
			c.log.Warn(msg, "provider", c.p.Name(), "from", cr.Source, "access_key_id", MaskID(cr.AccessKeyID), "expires", cr.Expiration.UTC().Format(time.RFC3339))
		}
		return
	}
	if same && !recovered {
		// Not a refresh: the triple held, read again. When its refresh was
		// due, nothing renewed it in time (said once a triple; before,
		// "credentials refreshed" at every re-read, a dozen times as the
		// re-reads closed in on the expiry); a file rewritten with the
		// same triple says nothing.
		if due && c.unrenewedID != cr.AccessKeyID {
			c.unrenewedID = cr.AccessKeyID
			c.log.Warn("credentials not renewed: the provider gave the held ones again (they expire at "+cr.Expiration.UTC().Format(time.RFC3339)+
				"); they are used until then and asked for again at most every "+UnrenewedAskEvery.String()+" (is what renews them, "+
				"e.g. what rotates the credentials file or the RAM role's credential agent, still running?)",
				"provider", c.p.Name(), "from", cr.Source, "access_key_id", MaskID(cr.AccessKeyID), "expires", cr.Expiration.UTC().Format(time.RFC3339))
		}
		return
	}
	attrs := []any{"provider", c.p.Name(), "from", cr.Source, "access_key_id", MaskID(cr.AccessKeyID), "sts", cr.SecurityToken != ""}
	if !cr.Expiration.IsZero() {
		attrs = append(attrs, "expires", cr.Expiration.UTC().Format(time.RFC3339), "next_refresh", c.refreshAt.UTC().Format(time.RFC3339))
	}
	if recovered {
		attrs = append(attrs, "recovered", true)
	}
	if cr.Skipped != "" {
		attrs = append(attrs, "skipped", cr.Skipped)
	}
	c.log.Info("credentials refreshed", attrs...)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// earlier returns the earlier of a and b.
func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// MaskID shortens an AccessKeyId for logs and status lines: enough to tell
// two issues apart, not the whole id.
func MaskID(id string) string {
	if len(id) <= 10 {
		return id
	}
	return id[:8] + "..." + id[len(id)-2:]
}
