package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"
)

func TestParseTypesUsageErrors(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Bool("v", false, "")
		return fs
	}
	if err := Parse(newFS(), []string{"-nope"}); !IsUsage(err) {
		t.Errorf("unknown flag: %v, want a *UsageError", err)
	}
	if err := Parse(newFS(), []string{"-h"}); !errors.Is(err, flag.ErrHelp) || IsUsage(err) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	fs := newFS()
	if err := Parse(fs, []string{"-v", "extra"}); err != nil {
		t.Fatal(err)
	}
	if err := NoArgs(fs); !IsUsage(err) || err.Error() != `unexpected argument "extra"` {
		t.Errorf("NoArgs: %v", err)
	}
	if err := fmt.Errorf("wrapped: %w", Usagef("bad %s", "x")); !IsUsage(err) {
		t.Errorf("a wrapped usage error is not recognised: %v", err)
	}
	if IsUsage(errors.New("flag provided but not defined: -x")) {
		t.Error("an untyped error that reads like a flag error counts as usage")
	}
}

func TestGivenNamesTheFlagsSet(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("a", "default", "")
	fs.String("b", "", "")
	fs.String("c", "", "")
	if err := Parse(fs, []string{"-c", "x", "-a", "default"}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(Given(fs, "a", "b", "c")); got != "[-a -c]" {
		t.Errorf("Given = %s, want [-a -c] (a flag set to its default counts)", got)
	}
}
