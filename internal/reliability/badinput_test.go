package reliability

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// deadLetters reads the dead-letter file of e.
func deadLetters(t *testing.T, e *env) map[string]deadletter.Entry {
	t.Helper()
	out := map[string]deadletter.Entry{}
	data, err := os.ReadFile(filepath.Join(e.dir, "dead-letter.jsonl"))
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	// The bridge may be writing the file now: a line without its newline
	// yet (a large entry is copied in more than one piece) is not read.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var en deadletter.Entry
		if err := json.Unmarshal(sc.Bytes(), &en); err != nil {
			t.Fatalf("dead-letter file: a line is not JSON (%v): %.200q", err, sc.Text())
		}
		out[en.MessageID] = en
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("dead-letter file: %v", err)
	}
	return out
}

// storedBodies returns the decoded bodies stored in queue q.
func storedBodies(t *testing.T, e *env, q string) map[string]bool {
	t.Helper()
	return mapKeys(arrived(t, e.emu, q))
}

func mapKeys(m map[string]int) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// Expected fates of a bad message.
const (
	fateDeadLetter = "dead-lettered"         // in the dead-letter file with a reason
	fateKept       = "forwarded or dead"     // forwarded to some queue, or dead-lettered: never dropped
	fateReconnect  = "connection refused it" // the frame broke the connection; the bridge logged it and reconnected
)

type badSource struct {
	name  string
	id    string
	frame func(id string) []byte
	fate  string
	// logWant, for fateReconnect, must appear in a warning or error line:
	// the log names the problem.
	logWant string
}

// TestBadInputFromSource sends one bad frame after another from a raw STOMP
// server, each followed by a good message. Each bad one must be
// dead-lettered with its reason (or, for a frame that breaks the
// connection, be logged with a reconnect); the bridge keeps running and
// every good message arrives.
func TestBadInputFromSource(t *testing.T) {
	b64 := func(s []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(s)) }
	topic := stompHeader{"topic", "/pk1/dev1/user/data"}
	tests := []badSource{
		{"invalid base64 with encode=base64", "bad-b64", func(id string) []byte {
			return messageFrame(id, []stompHeader{topic}, []byte("*** not base64 ***"))
		}, fateDeadLetter, ""},
		{"body over 64 KB", "bad-big", func(id string) []byte {
			return messageFrame(id, []stompHeader{topic}, b64(bytes.Repeat([]byte("x"), 70000)))
		}, fateDeadLetter, ""},
		{"1 MB frame", "bad-1mb", func(id string) []byte {
			return messageFrame(id, []stompHeader{topic}, b64(bytes.Repeat([]byte{0xa5}, 1<<20)))
		}, fateDeadLetter, ""},
		{"missing topic", "bad-notopic", func(id string) []byte {
			return messageFrame(id, nil, b64([]byte(id)))
		}, fateKept, ""},
		{"non-UTF-8 topic", "bad-utf8", func(id string) []byte {
			return messageFrame(id, []stompHeader{{"topic", "/pk1/dev\xff\xfe/user/data"}}, b64([]byte(id)))
		}, fateKept, ""},
		{"generateTime not a number", "bad-gentime", func(id string) []byte {
			return messageFrame(id, []stompHeader{topic, {"generateTime", "yesterday"}}, b64([]byte(id)))
		}, fateKept, ""},
		{"malformed frame (header without a colon)", "bad-frame", func(id string) []byte {
			return []byte("MESSAGE\nsubscription:{sub}\nmessage-id:" + id + "\nthis line has no colon\n\nbody\x00")
		}, fateReconnect, "malformed"},
		{"content-length longer than the body", "bad-length", func(id string) []byte {
			return []byte("MESSAGE\nsubscription:{sub}\nmessage-id:" + id + "\ncontent-length:99999999\n\nshort\x00")
		}, fateReconnect, "over the limit"},
		{"content-length a little longer than the body", "bad-length-small", func(id string) []byte {
			// The frame never ends; the heart-beats that follow are read as
			// body bytes, so only the silence check can notice.
			return []byte("MESSAGE\nsubscription:{sub}\nmessage-id:" + id + "\ncontent-length:5000\n\nshort\x00")
		}, fateReconnect, "heart-beats missed"},
	}

	raw := startRawServer(t)
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	path := e.config(t, spec{endpoint: raw.Addr(), caFile: raw.CAFile, ack: "client-individual", encodeBase64: true,
		heartbeat: 500 * time.Millisecond, mnsEndpoint: "http://" + e.emuAddr})
	r := runBridge(t, path, app.Options{})
	raw.WaitSubscribed(t)

	for _, tc := range tests {
		ok := t.Run(tc.name, func(t *testing.T) {
			logins := len(raw.Record().Logins)
			logMark := len(r.logs.String()) // this case's log lines start here
			sendRaw(t, raw, tc.frame(tc.id))
			if tc.fate == fateReconnect {
				waitFor(t, "the bridge to reconnect after the bad frame", time.Minute, func() bool {
					return len(raw.Record().Logins) > logins
				})
				raw.WaitSubscribed(t)
			}
			good := "good-after-" + tc.id
			sendRaw(t, raw, messageFrame(good, []stompHeader{topic}, b64([]byte(good))))
			waitFor(t, "the good message after the bad one", time.Minute, func() bool {
				return storedBodies(t, e, queue)[good]
			})
			select {
			case err := <-r.done:
				t.Fatalf("the bridge stopped after %s: %v", tc.name, err)
			default:
			}
			switch tc.fate {
			case fateDeadLetter:
				waitFor(t, tc.name+" in the dead-letter file", time.Minute, func() bool { _, ok := deadLetters(t, e)[tc.id]; return ok })
				en := deadLetters(t, e)[tc.id]
				if en.Reason == "" {
					t.Errorf("%s: dead-lettered without a reason", tc.name)
				}
				t.Logf("%s: dead-lettered: %s", tc.name, en.Reason)
			case fateKept:
				waitFor(t, tc.name+" forwarded or dead-lettered", time.Minute, func() bool {
					_, dead := deadLetters(t, e)[tc.id]
					return dead || storedBodies(t, e, queue)[tc.id] || storedBodies(t, e, "unrouted")[tc.id]
				})
				if en, ok := deadLetters(t, e)[tc.id]; ok {
					t.Logf("%s: dead-lettered: %s", tc.name, en.Reason)
				} else {
					t.Logf("%s: forwarded (in %s: %v, in unrouted: %v)", tc.name, queue, storedBodies(t, e, queue)[tc.id], storedBodies(t, e, "unrouted")[tc.id])
				}
			case fateReconnect:
				line := lineWith(r.logs.String()[logMark:], "connection lost")
				t.Logf("%s: %s", tc.name, line)
				if !strings.Contains(line, tc.logWant) {
					t.Errorf("%s: the log does not name the problem (want %q): %s", tc.name, tc.logWant, line)
				}
			}
			if tc.fate != fateReconnect {
				waitFor(t, tc.name+" settled upstream (ACK)", time.Minute, func() bool { return raw.Settled(tc.id) })
			}
		})
		if !ok {
			t.Logf("bridge log tail:\n%s", tail(r.logs.String(), 20))
			break // the later cases depend on the connection state
		}
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run: %v", err)
	}
	noSecrets(t, "the bridge log", r.logs.String())
}

// TestBadInputRawXML: with mns.body_encoding raw, a body with bytes that XML
// 1.0 cannot carry is dead-lettered with the reason, and the next message
// goes through.
func TestBadInputRawXML(t *testing.T) {
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	path := e.config(t, spec{ack: "client-individual", bodyEncoding: "raw", mnsEndpoint: "http://" + e.emuAddr})
	r := runBridge(t, path, app.Options{})
	e.sim.Publish(group, iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "bad-xml", Body: []byte("ctl \x00\x01\x1b and \xff")})
	e.sim.Publish(group, iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "good-xml", Body: []byte("fine <text> & more")})
	waitFor(t, "the good message", time.Minute, func() bool {
		for _, m := range e.emu.Messages(queue) {
			if m.Body == "fine <text> & more" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the bad message dead-lettered", time.Minute, func() bool { _, ok := deadLetters(t, e)["bad-xml"]; return ok })
	t.Logf("raw XML: dead-lettered: %s", deadLetters(t, e)["bad-xml"].Reason)
	if st := e.sim.Stats(); st.Acked != 2 {
		waitFor(t, "both messages acked", time.Minute, func() bool { return e.sim.Stats().Acked == 2 })
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// lineWith returns the first log line containing sub (for the report).
func lineWith(logs, sub string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, sub) && (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) {
			return l
		}
	}
	return "(no warning or error mentions " + sub + ")"
}
