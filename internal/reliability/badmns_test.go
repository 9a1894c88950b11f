package reliability

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// badMNS is an MNS that answers the first `bad` message requests (send and
// batch send) wrongly, in a way chosen by the test, and passes everything
// else to the emulator.
type badMNS struct {
	emu    *mnsemu.Emulator
	bad    atomic.Int64 // message requests still to spoil
	spoil  func(w http.ResponseWriter, rec *httptest.ResponseRecorder)
	spoilt atomic.Int64
}

func (b *badMNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isSend := r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages")
	if !isSend || b.bad.Add(-1) < 0 {
		b.emu.ServeHTTP(w, r)
		return
	}
	b.spoilt.Add(1)
	rec := httptest.NewRecorder()
	b.emu.ServeHTTP(rec, r)
	b.spoil(w, rec)
}

// copyHeaders copies the recorded headers except Content-Length.
func copyHeaders(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
}

var md5Re = regexp.MustCompile(`<MessageBodyMD5>[0-9A-Fa-f]+</MessageBodyMD5>`)

// TestBadInputFromMNS: malformed XML, an HTML error page, a wrong
// MessageBodyMD5, a 200 where 201 is expected and a body that trickles in
// slower than request_timeout. For each, the bridge logs a warning that
// names the problem, loses nothing (retries, or dead-letters with the
// reason), and forwards what follows.
func TestBadInputFromMNS(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(w http.ResponseWriter, rec *httptest.ResponseRecorder)
		// quiet: the reply is taken as success without a warning. Only for
		// a 200 whose body proves the messages were stored (every
		// MessageId and MessageBodyMD5 present and matching).
		quiet bool
	}{
		{"malformed XML", func(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(rec.Code)
			w.Write([]byte(`<?xml version="1.0"?><Messages><Message><MessageId>12`))
		}, false},
		{"HTML error page", func(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"))
		}, false},
		{"wrong MessageBodyMD5", func(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
			copyHeaders(w, rec)
			w.WriteHeader(rec.Code)
			w.Write(md5Re.ReplaceAll(rec.Body.Bytes(), []byte("<MessageBodyMD5>00000000000000000000000000000000</MessageBodyMD5>")))
		}, false},
		{"200 where 201 is expected", func(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
			copyHeaders(w, rec)
			code := rec.Code
			if code == http.StatusCreated {
				code = http.StatusOK
			}
			w.WriteHeader(code)
			w.Write(rec.Body.Bytes())
		}, true},
		{"slow body (slower than request_timeout)", func(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
			copyHeaders(w, rec)
			w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()))
			w.WriteHeader(rec.Code)
			fl, _ := w.(http.Flusher)
			for i, c := range rec.Body.Bytes() {
				if _, err := w.Write([]byte{c}); err != nil {
					return // the client gave up
				}
				if fl != nil {
					fl.Flush()
				}
				if i > 20 {
					time.Sleep(200 * time.Millisecond)
				}
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
			bad := &badMNS{emu: e.emu, spoil: tc.spoil}
			bad.bad.Store(3)
			addr := testpeers.Serve(t, bad)

			r := runBridge(t, e.config(t, spec{ack: "client-individual", mnsEndpoint: "http://" + addr, mnsTimeout: 2 * time.Second}), app.Options{})
			pub := &publisher{sim: e.sim, prefix: "x"}
			pub.publish(scale(200, 4))
			sent := pub.sent()
			waitFor(t, "every message at MNS or dead-lettered", 2*time.Minute, func() bool {
				got, dead := arrived(t, e.emu, queue), deadLetters(t, e)
				for _, id := range sent {
					if _, ok := dead[id]; got[id] == 0 && !ok {
						return false
					}
				}
				return true
			})
			tl := count(sent, arrived(t, e.emu, queue))
			dead := len(deadLetters(t, e))
			tl.report(t, tc.name)
			t.Logf("%s: %d spoilt responses, %d dead-lettered; first warning: %s", tc.name, bad.spoilt.Load(), dead, firstWarning(r.logs.String()))
			if bad.spoilt.Load() == 0 {
				t.Fatal("no response was spoilt: the scenario did not happen")
			}
			if !tc.quiet && firstWarning(r.logs.String()) == "" {
				t.Errorf("%s: nothing logged at warning or error level", tc.name)
			}
			if tl.Lost-dead > 0 {
				t.Errorf("%d messages neither at MNS nor dead-lettered", tl.Lost-dead)
			}
			noSecrets(t, "the bridge log", r.logs.String())
		})
	}
}

// firstWarning returns the first WARN or ERROR line of a text log.
func firstWarning(logs string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			return l
		}
	}
	return ""
}

// warnings returns every WARN or ERROR line.
func warnings(logs string) string {
	var b bytes.Buffer
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}
