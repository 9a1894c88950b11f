// Package cmdline holds the one error type for a wrong command line or
// config (exit code 2), shared by the program and the commands it embeds
// (the MNS emulator, the IoT platform simulator), so that callers recognise
// it by type, never by the text of the message; the flag parsing that
// returns it; and Serve, the life of a command's HTTP server (serve until
// interrupted, then shut down gracefully).
package cmdline

import (
	"errors"
	"flag"
	"fmt"
)

// UsageError is a problem with the command line or the config: the operator has
// to change what they typed, retrying does not help.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError with the formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Parse parses args with fs (which must use flag.ContinueOnError): a flag
// error becomes a *UsageError; -h / -help stays flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &UsageError{Err: err}
}

// NoArgs returns a *UsageError when fs was given arguments after its flags.
func NoArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// IsUsage reports whether err is, or wraps, a *UsageError.
func IsUsage(err error) bool {
	var e *UsageError
	return errors.As(err, &e)
}

// Given returns, as "-name", those of names that the command line set, in
// the order of names: for flags that another one replaces.
func Given(fs *flag.FlagSet, names ...string) []string {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var out []string
	for _, n := range names {
		if set[n] {
			out = append(out, "-"+n)
		}
	}
	return out
}
