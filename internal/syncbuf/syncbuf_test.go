package syncbuf

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// writeConcurrently writes "ab" 800 times from 8 goroutines, reading
// String meanwhile.
func writeConcurrently(b *Buffer) {
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
}

// TestKeepsConcurrentWrites: writes from many goroutines while others read
// all arrive whole (run with -race).
func TestKeepsConcurrentWrites(t *testing.T) {
	var b Buffer
	writeConcurrently(&b)
	if got := b.String(); got != strings.Repeat("ab", 800) {
		t.Errorf("kept %d bytes, want 1600 of \"ab\"", len(got))
	}
}

// TestPassesWritesOnOneAtATime: with To set, every write reaches To whole
// and none is kept (To, a bytes.Buffer, is not safe for concurrent writes:
// -race finds two at once).
func TestPassesWritesOnOneAtATime(t *testing.T) {
	var to bytes.Buffer
	b := Buffer{To: &to}
	writeConcurrently(&b)
	if to.String() != strings.Repeat("ab", 800) || b.String() != "" {
		t.Errorf("To got %d bytes, Buffer kept %d; want 1600 of \"ab\" and none", to.Len(), len(b.String()))
	}
}
