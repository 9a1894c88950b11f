// Package app is the iot-mns-bridge program: its subcommands (main.go,
// commands.go, sign.go, statuscmd.go, demo.go), and the wiring of config,
// source, pipeline, sink and HTTP endpoints that "run" performs (bridge.go
// builds them from the config; run.go starts and stops them in order; the
// data path they make up, folder by folder, is in package bridge's doc).
// cmd/iot-mns-bridge only calls Main; tests call Main and Run directly.
//
// Its contract: the rules of the data path are not here. Defaults, limits
// and key names are config's and their owners'; routing, batching, retry,
// settling and de-duplication are package bridge's; what a source or the
// sink does is theirs. What the program itself decides is the process's
// own: the exit codes, the readiness and status it reports (http.go,
// status.go), where the messages kept at shutdown go (shutdown.go: the
// spool, else the dead-letter file), and the runtime's GOMAXPROCS and
// memory limit (maxprocs.go, memlimit.go: the logs and config keys around
// packages internal/maxprocs and internal/memlimit).
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/cmdline"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // a runtime failure
	ExitUsage   = 2 // bad usage or an invalid config
)

// Stdio is where a command reads and writes.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// UsageError is a problem with the command line or the config: exit code 2.
// It is cmdline.UsageError, which the embedded commands return too.
type UsageError = cmdline.UsageError

func usageErr(format string, args ...any) error { return cmdline.Usagef(format, args...) }

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, io Stdio) error
}

func commands() []command {
	return []command{
		{"run", "-config FILE", "run the bridge (the daemon)", cmdRun},
		{"check", "-config FILE [-connect [-probe]]", "validate the config; with -connect also log in to the source and look up every MNS destination; -probe also sends each one test message", cmdCheck},
		{"sign", "-config FILE [-timestamp MS]", "print the username and password the source would log in with", cmdSign},
		{"demo", "[flags]", "run the whole path on the built-in IoT platform simulator and MNS emulator (no cloud account needed)", cmdDemo},
		{"replay", "-config FILE DEADLETTER.jsonl", "send the messages of a dead-letter file through the routes again", cmdReplay},
		{"healthcheck", "[-url URL | -config FILE]", "exit 0 when the running bridge reports healthy (for container health checks)", cmdHealthcheck},
		{"status", "[-url URL | -config FILE] [-json]", "print the running bridge's connections, rates, in flight, dead letters and last errors", cmdStatus},
		{"mns-emulator", "[flags]", "run the MNS emulator (for tests and trials)", stdioCommand(mnsemu.RunCommand)},
		{"iot-simulator", "[flags]", "run the IoT platform simulator (STOMP and AMQP 1.0 over TLS; for tests and trials)", stdioCommand(iotsim.RunCommand)},
		{"version", "", "print the version and VCS revision", cmdVersion},
		{"help", "", "show this help", nil},
	}
}

// stdioCommand adapts a command written as func(ctx, args, stdout, stderr);
// its usage errors are *cmdline.UsageError.
func stdioCommand(f func(ctx context.Context, args []string, stdout, stderr io.Writer) error) func(context.Context, []string, Stdio) error {
	return func(ctx context.Context, args []string, stdio Stdio) error {
		return f(ctx, args, stdio.Out, stdio.Err)
	}
}

// MainOS is Main with the process's standard streams: what
// cmd/iot-mns-bridge runs, and a test binary that runs as it.
func MainOS(ctx context.Context, args []string) int {
	return Main(ctx, args, Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}

// Main runs the subcommand in args and returns the process exit code: 0 ok,
// 1 runtime failure, 2 bad usage or invalid config, with the reason on
// stdio.Err.
func Main(ctx context.Context, args []string, stdio Stdio) int {
	if len(args) == 0 {
		usage(stdio.Err)
		return ExitUsage
	}
	name := args[0]
	if name == "-version" || name == "--version" {
		name = "version"
	}
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		usage(stdio.Out)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != name || c.run == nil {
			continue
		}
		err := c.run(ctx, args[1:], stdio)
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stdio.Err, "iot-mns-bridge %s: %v\n", name, err)
		if hint := permissionHint(err, os.Getuid(), os.Getgid()); hint != "" {
			fmt.Fprintf(stdio.Err, "iot-mns-bridge %s: %s\n", name, hint)
		}
		if cmdline.IsUsage(err) {
			return ExitUsage
		}
		return ExitFailure
	}
	fmt.Fprintf(stdio.Err, "iot-mns-bridge: unknown command %q\n\n", name)
	usage(stdio.Err)
	return ExitUsage
}

// permissionHint says, for an error that comes of a permission denied
// (fs.ErrPermission), which user the process runs as, whom the file or
// directory it names must let read or write ("the bridge's user" of the
// errors: 65532 in the image, the unit's DynamicUser); for one that comes
// of a read-only filesystem (EROFS), that no user may write there and what
// helps (config.ReadOnlyAdvice); "" for other errors.
func permissionHint(err error, uid, gid int) string {
	if errors.Is(err, syscall.EROFS) {
		return "read-only filesystem: a state path (spool.dir, delivery.dead_letter.file, delivery.dedup.file) is on one; " + config.ReadOnlyAdvice
	}
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	return fmt.Sprintf("permission denied: this process runs as uid %d, gid %d: a file it reads (a secret, a CA) must be readable, and a state directory writable, by that user", uid, gid)
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("iot-mns-bridge forwards Alibaba Cloud IoT Platform subscription messages to MNS.\n\nUsage:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  iot-mns-bridge %-13s %-32s %s\n", c.name, c.args, c.summary)
	}
	b.WriteString("\nExit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.\n")
	io.WriteString(w, b.String())
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stdio Stdio) *flag.FlagSet {
	fs := flag.NewFlagSet("iot-mns-bridge "+name, flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	return fs
}

// parseFlags parses args, turning a flag error into a UsageError and
// refusing stray arguments unless allowArgs.
func parseFlags(fs *flag.FlagSet, args []string, allowArgs bool) error {
	if err := cmdline.Parse(fs, args); err != nil || allowArgs {
		return err
	}
	if fs.NArg() > 0 && fs.Lookup("config") != nil && looksLikeConfig(fs.Arg(0)) {
		// "check my.yaml": say what to type.
		return usageErr("unexpected argument %q: to use it as the config file, type: %s -config %s", fs.Arg(0), fs.Name(), fs.Arg(0))
	}
	return cmdline.NoArgs(fs)
}

// looksLikeConfig reports whether a stray argument is probably the config
// file: a YAML name or an existing file.
func looksLikeConfig(arg string) bool {
	if strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml") {
		return true
	}
	st, err := os.Stat(arg)
	return err == nil && st.Mode().IsRegular()
}

// stampedVersion is set at build time by builds without VCS information
// (the Dockerfile): -ldflags "-X github.com/iot-mns-bridge/iot-mns-bridge/internal/app.stampedVersion=v1.2.3".
var stampedVersion string

// Version returns the module version and VCS revision from the build info,
// or the version stamped at build time.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "iot-mns-bridge (no build info)"
	}
	v := bi.Main.Version
	if stampedVersion != "" {
		v = stampedVersion
	}
	if v == "" {
		v = "(devel)"
	}
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		case "vcs.time":
			when = s.Value
		}
	}
	out := "iot-mns-bridge " + v
	if rev != "" {
		out += " revision " + rev + modified
	}
	if when != "" {
		out += " (" + when + ")"
	}
	return out + " " + bi.GoVersion
}

// ShortVersion is the version as one token, for the MNS User-Agent: the
// module or stamped version, or "devel" with the first 12 digits of the VCS
// revision.
func ShortVersion() string {
	if stampedVersion != "" {
		return stampedVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func cmdVersion(_ context.Context, args []string, stdio Stdio) error {
	fs := newFlags("version", stdio)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	fmt.Fprintln(stdio.Out, Version())
	return nil
}
