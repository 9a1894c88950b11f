package source

import "time"

// LateCheck is how much later than its period a source's silence check
// may run before the time in between counts as this process not running.
const LateCheck = time.Second

// Paused reports whether a silence check that runs every period, last ran
// at prev and runs again at now, ran more than LateCheck late, and the gap
// between the two runs. Such a gap is time this process did not run
// (SIGSTOP, a paused VM or container, a starved box), not the server's
// silence: what the server sent meanwhile waits unread in the socket, so a
// source counts its server's silence again from now (both protocols' checks
// apply this one rule).
func Paused(prev, now time.Time, period time.Duration) (gap time.Duration, paused bool) {
	gap = now.Sub(prev)
	return gap, gap > period+LateCheck
}
