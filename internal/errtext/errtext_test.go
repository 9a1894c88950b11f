package errtext

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps the failures; Fatalf ends the
// goroutine as the real one does.
type recorder struct {
	testing.TB
	failures []string
	fatal    bool
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.fatal = true
	runtime.Goexit()
}

func check(err error, want []string, secrets ...string) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Want(r, "New", err, want, secrets...)
	}()
	<-done
	return r
}

func TestWant(t *testing.T) {
	bad := errors.New("source.endpoint: required; source.credentials: login refused")
	for _, tc := range []struct {
		name    string
		err     error
		want    []string
		secrets []string
		fails   []string // a part of each failure, in order
		fatal   bool
	}{
		{"nil, none wanted", nil, nil, nil, nil, false},
		{"an error, none wanted", bad, nil, nil, []string{"New: source.endpoint"}, true},
		{"nil, one wanted", nil, []string{"source.endpoint"}, nil, []string{"New succeeded, want an error saying"}, true},
		{"every text there", bad, []string{"source.endpoint", "login refused"}, []string{"SECRETPW", ""}, nil, false},
		{"one text missing", bad, []string{"source.endpoint", "mns.endpoint"}, nil, []string{`lacks "mns.endpoint"`}, false},
		{"a secret quoted", bad, []string{"source.endpoint"}, []string{"login"}, []string{"leaks the secret logi…"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := check(tc.err, tc.want, tc.secrets...)
			if len(r.failures) != len(tc.fails) || r.fatal != tc.fatal {
				t.Fatalf("failures %q (fatal %t), want %d (fatal %t)", r.failures, r.fatal, len(tc.fails), tc.fatal)
			}
			for i, f := range tc.fails {
				if !strings.Contains(r.failures[i], f) {
					t.Errorf("failure %q lacks %q", r.failures[i], f)
				}
			}
		})
	}
}
