package spool

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

func benchMessage() bridge.Message {
	return bridge.Message{
		Topic:        "/a1b2c3d4e5f/dev-0001/user/telemetry",
		MessageID:    "1700000000000000001",
		GenerateTime: 1700000000123,
		Body:         bytes.Repeat([]byte("x"), 256),
	}
}

// BenchmarkAppend measures durable appends of 256-byte messages; one op is
// one message, committed (fsynced) before the benchmark stops. bbolt
// fdatasyncs twice per commit (pages, then meta).
func BenchmarkAppend(b *testing.B) {
	for _, producers := range []int{1, 8} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			s := open(b, Options{MaxBytes: 8 << 30})
			var wg sync.WaitGroup
			wg.Add(b.N)
			done := func(_ uint64, err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			}
			elapsed, commits := measure(b, s, func() {
				var pw sync.WaitGroup
				for p := range producers {
					pw.Add(1)
					go func() {
						defer pw.Done()
						m := benchMessage()
						for i := p; i < b.N; i += producers {
							if err := s.Append(context.Background(), &m, done); err != nil {
								b.Error(err)
								wg.Done()
							}
						}
					}()
				}
				pw.Wait()
				wg.Wait()
			})
			b.ReportMetric(2*commits/elapsed.Seconds(), "fsyncs/s")
			b.ReportMetric(float64(b.N)/commits, "msgs/commit")
		})
	}
}

// measure runs run as the timed part of b and reports the messages and
// commits a second; it returns how long run took and how many commits it
// made.
func measure(b *testing.B, s *Spool, run func()) (elapsed time.Duration, commits float64) {
	commits0 := s.commits.Load()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	run()
	elapsed = time.Since(start)
	b.StopTimer()
	commits = float64(s.commits.Load() - commits0)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(commits/elapsed.Seconds(), "commits/s")
	return elapsed, commits
}

// BenchmarkDelete measures removals in groups of 16 (one MNS batch each);
// one op is one message, durable before the benchmark stops.
func BenchmarkDelete(b *testing.B) {
	s := open(b, Options{MaxBytes: 8 << 30})
	keys := make([]uint64, b.N)
	var wg sync.WaitGroup
	wg.Add(b.N)
	m := benchMessage()
	for i := range b.N {
		if err := s.Append(context.Background(), &m, func(k uint64, err error) {
			if err != nil {
				b.Error(err)
			}
			keys[i] = k
			wg.Done()
		}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	measure(b, s, func() {
		for i := 0; i < len(keys); i += 16 {
			if err := s.Delete(keys[i:min(i+16, len(keys))]...); err != nil {
				b.Fatal(err)
			}
		}
		s.sync()
	})
	if st := s.Stats(); st.Depth != 0 {
		b.Fatalf("Depth = %d after deleting everything", st.Depth)
	}
}

// BenchmarkOpen measures Open of a spool holding 100,000 256-byte messages
// (about 36 MB): bbolt's consistency check plus the check of every record.
func BenchmarkOpen(b *testing.B) {
	const n = 100000
	dir := b.TempDir()
	s, err := Open(withDefaults(Options{Dir: dir}))
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(n)
	m := benchMessage()
	for range n {
		if err := s.Append(context.Background(), &m, func(uint64, error) { wg.Done() }); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		s, err := Open(withDefaults(Options{Dir: dir}))
		if err != nil {
			b.Fatal(err)
		}
		if st := s.Stats(); st.Depth != n {
			b.Fatalf("Depth = %d, want %d", st.Depth, n)
		}
		s.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "msgs-checked/s")
}

// BenchmarkAppendWait appends one message at a time and waits for its
// commit: the latency a single Append sees (linger plus two fdatasyncs).
func BenchmarkAppendWait(b *testing.B) {
	for _, linger := range []time.Duration{withDefaults(Options{}).CommitInterval, -1} {
		b.Run(fmt.Sprintf("linger=%v", max(linger, 0)), func(b *testing.B) {
			s := open(b, Options{CommitInterval: linger})
			m := benchMessage()
			ch := make(chan error, 1)
			done := func(_ uint64, err error) { ch <- err }
			b.ResetTimer()
			for range b.N {
				if err := s.Append(context.Background(), &m, done); err != nil {
					b.Fatal(err)
				}
				if err := <-ch; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/commit")
		})
	}
}

// BenchmarkStage measures the spool's whole cost per message as the bridge
// pays it: Intake (encode, group commit), the feeder reading the message
// back, and the delete once the pipeline (here: a handler that accepts,
// as MNS would) settled it. cpu-µs/msg is the process's CPU time
// (user + system, fdatasync and page writes included) over the messages;
// the messages carry the two properties a STOMP message keeps (destination,
// message-id). "max" takes messages as fast as the producer gives them (the
// spool builds a backlog that the feeder reads back); "5000/s" paces them.
//
// "backlog" is the spool draining a backlog, as in the bench's full-rate
// row after the platform stopped sending: every message is appended before
// the pipeline takes the first; then the feeder forwards them all (reading
// back what did not stay in memory) and the deletes commit without appends.
//
// "500/s" is a small edge box's rate: there a commit holds the messages of
// one spool.commit_interval, so msgs/commit and fsyncs/s show what the
// default interval costs the disk (an SD card's wear) per message.
//
// In the paced runs the handler accepts a message sendDelay after it got
// it, as the bridge's lane and MNS do, so the spool holds the messages of
// a few commits, as the bridge's does. written-B/msg is the bytes the
// spool writes to disk a message (diskWritten), pages/commit the page runs
// (nodes) a commit writes besides the meta page.
func BenchmarkStage(b *testing.B) {
	for _, rate := range []int{0, 5000, 500, -1} {
		name := "max"
		switch {
		case rate > 0:
			name = fmt.Sprintf("%d/s", rate)
		case rate < 0:
			name = "backlog"
		}
		b.Run(name, func(b *testing.B) {
			s := open(b, Options{MaxBytes: 8 << 30})
			var accepted sync.WaitGroup
			accepted.Add(b.N)
			open := make(chan struct{}) // the pipeline takes messages
			if rate >= 0 {
				close(open)
			}
			pipeline := func(_ context.Context, d *bridge.Delivery) error {
				<-open
				if rate > 0 {
					// Paced: the message stays in the spool as long as in
					// the bridge's, where MNS answers later.
					time.AfterFunc(sendDelay, func() { d.Accept(); accepted.Done() })
					return nil
				}
				d.Accept()
				accepted.Done()
				return nil
			}
			st := NewStage(s, pipeline, slog.New(slog.DiscardHandler))
			ctx, cancel := context.WithCancel(context.Background())
			fed := make(chan struct{})
			go func() { st.Feed(ctx); close(fed) }()
			defer func() { cancel(); <-fed }()

			m := benchMessage()
			m.Properties = map[string]string{"destination": m.Topic, "message-id": m.MessageID}
			cpu0, disk0, pages0 := cpuTime(b), diskWritten(b), pagesWritten(s)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if rate > 0 {
					if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
						time.Sleep(wait)
					}
				}
				if err := st.Intake(ctx, bridge.NewDelivery(m, nopSettler{}, nil)); err != nil {
					b.Fatal(err)
				}
			}
			if rate < 0 {
				s.sync()
				close(open)
			}
			accepted.Wait()
			s.sync() // the deletes too
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
			b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "msgs/commit")
			b.ReportMetric(float64(diskWritten(b)-disk0)/float64(b.N), "written-B/msg")
			b.ReportMetric(float64(pagesWritten(s)-pages0)/float64(s.commits.Load()), "pages/commit")
			if rate > 0 {
				b.ReportMetric(2*float64(s.commits.Load())/time.Since(start).Seconds(), "fsyncs/s")
			}
			b.ReportMetric(100*float64(st.readBack.Load())/float64(b.N), "%read-back")
			if d := s.Stats().Depth; d != 0 {
				b.Fatalf("Depth = %d after every message was accepted", d)
			}
		})
	}
}

// sendDelay is how long after the spool's feeder handed a message to the
// pipeline MNS has it, in the bench's paced runs: the lane's 5 ms linger
// and the MNS emulator's 20 ms latency.
const sendDelay = 25 * time.Millisecond

type nopSettler struct{}

func (nopSettler) Settle(*bridge.Delivery, bridge.Outcome) {}

// cpuTime is the process's user plus system time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pagesWritten is the page writes of every commit so far (bbolt's TxStats:
// one a page, or a run of pages that hold one node).
func pagesWritten(s *Spool) int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}

// diskWritten is the bytes the process has handed to write system calls
// so far (wchar, /proc/self/io): here bbolt's page images, whole pages
// however few bytes of them changed, the figure an SD card's wear follows
// (on a loop device the device saw these bytes, 2,200 a message at
// 500/s). The kernel's write_bytes is not used: with large page-cache
// folios (ext4, Linux 6.16 on) it counts a dirtied folio whole, about
// twice the bytes the device is written. 0 where the kernel gives neither.
func diskWritten(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "wchar:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatalf("/proc/self/io: %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// BenchmarkDecode measures the read-back decode of one message: a version 1
// record (verify and decode) and a member of a group of 64 (its share of
// the group's verify, and its decode), with the two properties of
// BenchmarkStage.
func BenchmarkDecode(b *testing.B) {
	m := benchMessage()
	m.Properties = map[string]string{"destination": m.Topic, "message-id": m.MessageID}
	b.Run("v1", func(b *testing.B) {
		v := encode(&m)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("group", func(b *testing.B) {
		p := encode(&m)[headerLen:]
		members := make([]groupMember, 64)
		for i := range members {
			members[i] = groupMember{uint64(i), p}
		}
		v := encodeGroup(members)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%len(members) == 0 {
				if err := verify(v); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := decodePayload(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
