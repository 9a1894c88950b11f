package broadcast

import (
	"sync"
	"testing"
)

// TestNotifyWakesEveryWaiterOnce: Notify closes the channel every earlier
// Wait returned, and only those; a Wait after it gets a new channel that the
// next Notify closes. A Notify with nobody waiting does nothing.
func TestNotifyWakesEveryWaiterOnce(t *testing.T) {
	var s Signal
	s.Notify()
	a, b := s.Wait(), s.Wait()
	select {
	case <-a:
		t.Fatal("the channel is closed before any Notify")
	default:
	}
	s.Notify()
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("a waiter is not woken by Notify")
		}
	}
	c := s.Wait()
	select {
	case <-c:
		t.Fatal("a Wait after Notify returns a closed channel; want it to wait for the next Notify")
	default:
	}
	s.Notify()
	<-c
}

// TestWaitersUnderTheOwnersLock: goroutines that wait for a counter to
// reach their goal, with the counter and the Signal guarded by one mutex,
// all see it reached.
func TestWaitersUnderTheOwnersLock(t *testing.T) {
	var (
		mu sync.Mutex
		n  int
		s  Signal
		wg sync.WaitGroup
	)
	for goal := 1; goal <= 8; goal++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if n >= goal {
					mu.Unlock()
					return
				}
				ch := s.Wait()
				mu.Unlock()
				<-ch
			}
		}()
	}
	for range 8 {
		mu.Lock()
		n++
		s.Notify()
		mu.Unlock()
	}
	wg.Wait()
}
