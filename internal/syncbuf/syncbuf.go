// Package syncbuf serialises the writes of many goroutines: into a buffer
// that a test reads while they write (what a command or a bridge logs as it
// runs), or on to another writer (a command's progress on its terminal). It
// depends on the standard library only, so that any package's own tests can
// use it (the simulator's too, which internal/testpeers imports).
package syncbuf

import (
	"bytes"
	"io"
	"sync"
)

// Buffer takes writes from many goroutines at once, one at a time: it
// keeps them (String reads them, also while others write) or, when To is
// set, writes them on to To. The zero value keeps them.
type Buffer struct {
	To io.Writer // where writes go; nil: kept in the Buffer

	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.To != nil {
		return s.To.Write(p)
	}
	return s.b.Write(p)
}

// String returns everything kept so far (nothing when To is set).
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
