// Package broadcast lets goroutines wait, in a select and outside a lock,
// for the next change of what that lock guards: what sync.Cond does, for
// waits that must also end on a done context or a closing channel.
package broadcast

// Signal wakes every goroutine waiting for the next Notify. Its owner's
// lock guards it: call Wait and Notify with that lock held, and wait on the
// channel Wait returned after unlocking. The zero value is ready; the
// channel exists only while someone waits.
type Signal struct {
	ch chan struct{}
}

// Wait returns the channel the next Notify closes.
func (s *Signal) Wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every goroutine waiting on a channel Wait returned before.
func (s *Signal) Notify() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
