// Package childbridge runs iot-mns-bridge as a child process for the
// benchmark harness and the soak: the calling executable re-runs itself
// with Env set, and its main calls RunIfChild first, so the child runs
// exactly what cmd/iot-mns-bridge runs (app.Main) and its CPU time and
// memory are the bridge's alone. It also reads those figures from /proc.
//
// Linux only (/proc, Pdeathsig). Not part of the product.
package childbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// Env marks the child; CPUProfileEnv, when set in the child, names a file
// that receives a CPU profile of the whole child run (and FILE.allocs its
// allocation profile).
const (
	Env           = "IOT_MNS_BENCH_CHILD"
	CPUProfileEnv = "IOT_MNS_BENCH_CPUPROFILE"
	// HeapProfileEnv, when set in the child, is a path prefix: every
	// second the child writes its heap profile to PREFIX.<n>.heap and a
	// line of runtime memory figures to PREFIX.mem, to see what a peak of
	// RSS is made of.
	HeapProfileEnv = "IOT_MNS_BENCH_HEAPPROFILE"
)

// RunIfChild runs the bridge command line in os.Args[1:] until SIGTERM or
// SIGINT and exits with its code when this process is a child; otherwise it
// returns at once. Call it first in main.
func RunIfChild() {
	if os.Getenv(Env) != "bridge" {
		return
	}
	os.Exit(runChild())
}

// RunTests is the TestMain of a package whose tests start bridge children
// with this test binary: the binary runs as the bridge when it is a child
// (RunIfChild), else it runs the tests.
func RunTests(m *testing.M) {
	RunIfChild()
	os.Exit(m.Run())
}

func runChild() int {
	if path := os.Getenv(CPUProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench child: cpu profile: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench child: cpu profile: %v\n", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			// And what the run allocated, beside it.
			if af, err := os.Create(path + ".allocs"); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(af, 0)
				af.Close()
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if prefix := os.Getenv(HeapProfileEnv); prefix != "" {
		go heapProfiles(ctx, prefix)
	}
	return app.Main(ctx, os.Args[1:], app.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}

// heapProfiles samples the memory figures every 50 ms until ctx is done:
// one line a second to PREFIX.mem, and each time the anonymous RSS reaches
// a new peak a line to PREFIX.peaks and the heap profile to PREFIX.peak.heap.
func heapProfiles(ctx context.Context, prefix string) {
	mem, err := os.Create(prefix + ".mem")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child: heap profile: %v\n", err)
		return
	}
	defer mem.Close()
	peaks, err := os.Create(prefix + ".peaks")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child: heap profile: %v\n", err)
		return
	}
	defer peaks.Close()
	const head = "t_s rss_anon_mib heap_alloc_mib heap_inuse_mib heap_idle_mib heap_released_mib stack_mib sys_mib next_gc_mib num_gc gc_cpu"
	fmt.Fprintln(mem, head)
	fmt.Fprintln(peaks, head)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	var peak int64
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		anon := selfRssAnonKB()
		if anon <= peak && n%20 != 0 {
			continue
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		const mib = 1 << 20
		line := fmt.Sprintf("%.2f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %d %.3f\n", time.Since(start).Seconds(), float64(anon)/1024,
			float64(ms.HeapAlloc)/mib, float64(ms.HeapInuse)/mib, float64(ms.HeapIdle)/mib, float64(ms.HeapReleased)/mib,
			float64(ms.StackInuse)/mib, float64(ms.Sys)/mib, float64(ms.NextGC)/mib, ms.NumGC, ms.GCCPUFraction)
		if n%20 == 0 {
			fmt.Fprint(mem, line)
		}
		if anon > peak {
			peak = anon
			fmt.Fprint(peaks, line)
			if f, err := os.Create(prefix + ".peak.heap"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
	}
}

// selfRssAnonKB is this process's anonymous RSS in kB, 0 when unknown.
func selfRssAnonKB() int64 {
	kb, _ := statusKB("/proc/self/status")
	return kb["RssAnon"]
}

// statusKB reads a /proc/<pid>/status file: the number of each of its
// lines, by the line's key ("VmRSS:   1234 kB" is VmRSS 1234).
func statusKB(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kb := make(map[string]int64)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			kb[k] = n
		}
	}
	return kb, nil
}

// Proc is a running bridge child. Its methods are safe to call from one
// goroutine at a time.
type Proc struct {
	Cmd      *exec.Cmd
	HTTPAddr string // the bridge's http.listen
	LogPath  string // stdout and stderr of the child
	exited   chan struct{}
	waitErr  error
}

// Start runs "iot-mns-bridge run -config cfgPath" as a child (this
// executable re-run), logging to logPath. httpAddr is the config's
// http.listen, used by WaitReady. extraEnv is added to the child's
// environment. The child gets SIGKILL if this process dies first.
func Start(cfgPath, httpAddr, logPath string, extraEnv ...string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start bridge: find own executable to re-run as the bridge: %w", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start bridge: %w", err)
	}
	cmd := exec.Command(self, "run", "-config", cfgPath)
	// The bench's bridge never asks the cloud metadata address for
	// credentials, whatever its config says.
	cmd.Env = append(append(os.Environ(), Env+"=bridge", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true"), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start bridge: %w", err)
	}
	p := &Proc{Cmd: cmd, HTTPAddr: httpAddr, LogPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// StartIn starts the bridge in runDir (created if missing): its config,
// written by config for the http.listen address it is given (FreeAddr), is
// runDir/bridge.yaml and its log runDir/bridge.log. extraEnv is as for
// Start.
func StartIn(runDir string, config func(httpAddr string) ([]byte, error), extraEnv ...string) (*Proc, error) {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("start bridge: %w", err)
	}
	httpAddr, err := FreeAddr()
	if err != nil {
		return nil, fmt.Errorf("start bridge: free port for http.listen: %w", err)
	}
	cfg, err := config(httpAddr)
	if err != nil {
		return nil, fmt.Errorf("start bridge: config: %w", err)
	}
	cfgPath := filepath.Join(runDir, "bridge.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("start bridge: %w", err)
	}
	return Start(cfgPath, httpAddr, filepath.Join(runDir, "bridge.log"), extraEnv...)
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for the child's http.listen. The port is below the kernel's ephemeral
// range (testpeers.PickFreePort): one chosen by listening on ":0" can be
// taken by an outgoing connection of another process before the child binds
// it.
func FreeAddr() (string, error) {
	port, err := testpeers.PickFreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// WaitReady polls /readyz until the bridge is ready (connected, destinations
// looked up), the child exits, ctx is done or timeout passes.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + p.HTTPAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("bridge exited before it was ready (%v); log:\n%s", p.waitErr, p.LogTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge not ready within %s; log:\n%s", timeout, p.LogTail())
		}
	}
}

// LogTail returns the end of the child's log.
func (p *Proc) LogTail() string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Stat is what /proc says about the child now.
type Stat struct {
	CPU       time.Duration // user + system
	PeakRSSKB int64         // VmHWM
	RSSKB     int64         // VmRSS
	// RssAnonKB and RssFileKB split the current RSS: heap and stacks, and
	// mapped file pages (the spool's bbolt file is mmapped).
	RssAnonKB, RssFileKB int64
	// Switches is the context switches of the child's threads alive now
	// (voluntary and not, from /proc/<pid>/task/*/status): its wake-ups.
	Switches int64
	// Run is the time the child's threads alive now ran on a CPU, to the
	// nanosecond (/proc/<pid>/task/*/schedstat), where CPU counts in
	// 10 ms ticks: what a run of a few CPU seconds is measured with. The
	// runtime keeps its threads, so few ran and ended.
	Run time.Duration
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// Stat reads the child's CPU time from /proc/<pid>/stat and its memory from
// /proc/<pid>/status.
func (p *Proc) Stat() (Stat, error) {
	var st Stat
	pid := p.Cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("read bridge CPU time: %w", err)
	}
	// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, errors.New("read bridge CPU time: malformed /proc/pid/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return st, errors.New("read bridge CPU time: short /proc/pid/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return st, errors.New("read bridge CPU time: bad utime/stime")
	}
	st.CPU = time.Duration(ut+stt) * clockTick
	kb, err := statusKB(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("read bridge memory: %w", err)
	}
	st.PeakRSSKB, st.RSSKB, st.RssAnonKB, st.RssFileKB = kb["VmHWM"], kb["VmRSS"], kb["RssAnon"], kb["RssFile"]
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		if kb, err := statusKB(filepath.Join(t, "status")); err == nil {
			st.Switches += kb["voluntary_ctxt_switches"] + kb["nonvoluntary_ctxt_switches"]
		}
		if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				st.Run += time.Duration(ns)
			}
		}
	}
	return st, nil
}

// Stop sends SIGTERM and waits for the child to exit (it drains first),
// killing it after timeout. It returns the error of an unclean exit.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return fmt.Errorf("bridge exited early (%v); log:\n%s", p.waitErr, p.LogTail())
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("bridge did not stop within %s after SIGTERM; killed it", timeout)
	}
	if p.waitErr != nil {
		return fmt.Errorf("bridge exit: %v; log:\n%s", p.waitErr, p.LogTail())
	}
	return nil
}

// Kill ends the child at once (error paths); a no-op once it exited.
func (p *Proc) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}
