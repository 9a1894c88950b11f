package stompsrc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/stompfake"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/syncbuf"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func TestToMessage(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		body    string
		base64  bool
		want    func(m *wantMsg)
	}{
		{
			name: "platform headers",
			headers: []string{"destination", "/topic/#", "message-id", "stomp-1", "subscription", "0",
				"ack", "a1", "content-length", "2", "topic", "/pk/dn/user/t", "messageId", "171",
				"generateTime", "1700000000123", "qos", "1"},
			body: "{}",
			want: func(m *wantMsg) {
				m.Topic, m.MessageID, m.GenerateTime, m.Body = "/pk/dn/user/t", "171", 1700000000123, "{}"
				m.Properties = map[string]string{"destination": "/topic/#", "message-id": "stomp-1", "qos": "1"}
			},
		},
		{
			name:    "no platform headers: destination and message-id",
			headers: []string{"destination", "/topic/a/b", "message-id", "T_1"},
			body:    "x",
			want: func(m *wantMsg) {
				m.Topic, m.MessageID, m.Body = "/topic/a/b", "T_1", "x"
				m.Properties = map[string]string{"destination": "/topic/a/b"}
			},
		},
		{
			name:    "bad generateTime kept as a property",
			headers: []string{"topic", "/t", "messageId", "1", "generateTime", "soon"},
			want: func(m *wantMsg) {
				m.Topic, m.MessageID = "/t", "1"
				m.Properties = map[string]string{"generateTime": "soon"}
			},
		},
		{
			name:    "repeated header: first wins",
			headers: []string{"topic", "/t", "messageId", "1", "k", "first", "k", "second"},
			want: func(m *wantMsg) {
				m.Topic, m.MessageID = "/t", "1"
				m.Properties = map[string]string{"k": "first"}
			},
		},
		{
			name:    "base64 decoded",
			headers: []string{"topic", "/t", "messageId", "1"},
			body:    "AAEC/w==",
			base64:  true,
			want:    func(m *wantMsg) { m.Topic, m.MessageID, m.Body = "/t", "1", "\x00\x01\x02\xff" },
		},
		{
			name:    "base64 with line breaks",
			headers: []string{"topic", "/t", "messageId", "1"},
			body:    "aGVs\r\nbG8=\n",
			base64:  true,
			want:    func(m *wantMsg) { m.Topic, m.MessageID, m.Body = "/t", "1", "hello" },
		},
		{
			name:    "invalid base64 kept raw and marked",
			headers: []string{"topic", "/t", "messageId", "1"},
			body:    "{\"not\":\"base64\"}",
			base64:  true,
			want: func(m *wantMsg) {
				m.Topic, m.MessageID, m.Body = "/t", "1", "{\"not\":\"base64\"}"
				m.Invalid = "body is not valid base64"
			},
		},
		{
			name:   "empty body with base64",
			base64: true,
			want:   func(m *wantMsg) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want wantMsg
			tt.want(&want)
			got := toMessage(frame.NewHeader(tt.headers...), []byte(tt.body), tt.base64)
			if got.Topic != want.Topic || got.MessageID != want.MessageID || got.GenerateTime != want.GenerateTime ||
				string(got.Body) != want.Body {
				t.Errorf("got topic %q id %q time %d body %q; want %q %q %d %q",
					got.Topic, got.MessageID, got.GenerateTime, got.Body, want.Topic, want.MessageID, want.GenerateTime, want.Body)
			}
			if len(got.Properties)+len(want.Properties) > 0 && !reflect.DeepEqual(got.Properties, want.Properties) {
				t.Errorf("properties = %v, want %v", got.Properties, want.Properties)
			}
			if (want.Invalid == "") != (got.Invalid == "") || !strings.HasPrefix(got.Invalid, want.Invalid) {
				t.Errorf("Invalid = %q, want prefix %q", got.Invalid, want.Invalid)
			}
		})
	}
}

type wantMsg struct {
	Topic, MessageID, Body, Invalid string
	GenerateTime                    int64
	Properties                      map[string]string
}

func TestConfigValidation(t *testing.T) {
	params := func() (iotauth.Params, error) { return goodParams(), nil }
	longID := goodParams()
	longID.ClientID = strings.Repeat("c", iotauth.MaxClientIDLen) // fine alone, too long with "-1"
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; none means valid
	}{
		{name: "minimal", cfg: Config{Settings: source.Settings{Endpoint: "h:61614", Params: params}}},
		{name: "everything wrong", cfg: Config{
			Settings: source.Settings{
				Endpoint:    "nohost",
				Connections: -1,
				DialTimeout: -1,
			},
			Ack:           "client",
			HeartBeat:     -time.Second,
			CheckInterval: -1,
		},
			wantErr: []string{"source.endpoint", "source.credentials", "source.connections", "source.stomp.ack",
				"source.stomp.heartbeat", "source.stomp.check_interval", "source.dial_timeout"}},
		{name: "bad port", cfg: Config{Settings: source.Settings{Endpoint: "h:99999", Params: params}}, wantErr: []string{"invalid port"}},
		{name: "missing endpoint", cfg: Config{Settings: source.Settings{Params: params}}, wantErr: []string{"source.endpoint: is required"}},
		// The signing inputs of every slot are checked at New (as in every
		// source: source.Settings.NewDriver), not first at the dial.
		{name: "client id too long with suffix", cfg: Config{Settings: source.Settings{Endpoint: "h:61614", Params: testParams(longID), Connections: 2}},
			wantErr: []string{"clientId"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(filled(tt.cfg))
			sourcetest.WantErr(t, "New", err, tt.wantErr)
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := filled(Config{Settings: source.Settings{Endpoint: "iot.example:61614", Params: testParams(goodParams())}}).checked()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Connections != 1 || cfg.Destination != "/topic/#" || cfg.Ack != AckAuto || cfg.HeartBeat != 0 ||
		cfg.CheckInterval != time.Second || cfg.DialTimeout != 15*time.Second || cfg.Limiter == nil ||
		cfg.Logger == nil || cfg.Clock == nil || cfg.host() != "iot.example" {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg.Host = "vhost"
	if cfg.host() != "vhost" {
		t.Fatal("host header override ignored")
	}
}

func TestSilenceLimit(t *testing.T) {
	tests := []struct {
		asked  time.Duration
		server string
		want   time.Duration
	}{
		{30 * time.Second, "30000,0", 61 * time.Second},
		{30 * time.Second, "60000,0", 121 * time.Second},
		{30 * time.Second, "1000,0", 61 * time.Second},
		{30 * time.Second, "0,0", 0},   // the server sends none
		{0, "30000,0", 0},              // we asked for none
		{30 * time.Second, "", 0},      // no header: STOMP 1.0
		{30 * time.Second, "bogus", 0}, // unparsable: do not guess
	}
	for _, tt := range tests {
		if got := silenceLimit(tt.asked, tt.server); got != tt.want {
			t.Errorf("silenceLimit(%s, %q) = %s, want %s", tt.asked, tt.server, got, tt.want)
		}
	}
}

func TestLinkCheck(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name               string
		silence            time.Duration
		lastRead, progress time.Duration // ago
		wantErr            bool
	}{
		{"fresh read", 10 * time.Second, time.Second, time.Hour, false},
		{"silent", 10 * time.Second, 11 * time.Second, time.Hour, true},
		{"blocked in the handler until just now", 10 * time.Second, time.Hour, time.Second, false},
		{"no heart-beats negotiated", 0, time.Hour, time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &link{name: "c", silence: tt.silence, w: &wire{}}
			l.progress.Store(now.Add(-tt.progress))
			l.w.lastAlive.Store(now.Add(-tt.lastRead))
			err := l.check(now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("check = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "heart-beats missed") {
				t.Errorf("error %q does not say heart-beats were missed", err)
			}
		})
	}
}

func TestDescribeDial(t *testing.T) {
	refused := stomp.Error{Message: "bad", Frame: stompfake.ErrorFrame("authentication failed: pw=SECRETPW")}
	tests := []struct {
		name string
		err  error
		want []string
		not  string
	}{
		{"login refused", refused, []string{"login refused", "authentication failed", "source.credentials"}, "SECRETPW"},
		{"timeout", fmt.Errorf("x: %w", context.DeadlineExceeded), []string{"timed out after 15s", "source.endpoint"}, ""},
		{"other", errors.New("boom"), []string{"stomp connect h:1: boom"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := describeDial(config.SourceNames(), "h:1", 15*time.Second, tt.err, "SECRETPW")
			sourcetest.WantErr(t, "describeDial", err, tt.want, tt.not)
		})
	}
	if !errors.Is(describeDial(nil, "h:1", time.Second, refused), ErrLoginRefused) {
		t.Error("a refused login does not wrap ErrLoginRefused")
	}
}

// Reading a MESSAGE frame as the simulator sends the platform's and mapping
// it to a bridge.Message allocates what the message keeps (the header
// values' string, the body, the Properties map with its slots) and no
// frame, no header slice and no interface value; the frame read next reuses
// them and the message read first is unchanged.
func TestReadAndMapAllocations(t *testing.T) {
	frameOf := func(id string) string {
		return "MESSAGE\ndestination:/a1BenchProduct/dev-1/user/telemetry\nmessage-id:" + id + "\nsubscription:0\n" +
			"topic:/a1BenchProduct/dev-1/user/telemetry\nmessageId:" + id + "\ngenerateTime:1700000000123\ncontent-length:4\n\nbody\x00"
	}
	raw := []byte(frameOf("1790000000000000001") + frameOf("1790000000000000002"))
	w := readerWire(raw)
	f, err := w.read()
	if err != nil {
		t.Fatal(err)
	}
	first := toMessage(f.Header, f.Body, false)
	if _, err := w.read(); err != nil {
		t.Fatal(err)
	}
	if first.MessageID != "1790000000000000001" || first.Properties["message-id"] != "1790000000000000001" || string(first.Body) != "body" {
		t.Fatalf("the first message changed when the next frame was read: %+v", first)
	}
	r := bytes.NewReader(raw)
	n := testing.AllocsPerRun(200, func() { readAndMap(t, w, r, raw) })
	if n > 4 {
		t.Errorf("reading and mapping a frame allocates %v times, want at most 4", n)
	}
}

// TestHangUpDuringTheHandshakeIsNamed: a server that reads the ClientHello
// and hangs up (a firewall or a proxy that filters TLS) is named as a
// hang-up during the TLS handshake, not as one on the login, which no
// server saw (the other protocol's port completes the handshake: the
// platform's ports share a certificate).
func TestHangUpDuringTheHandshakeIsNamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Read(make([]byte, 64<<10))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = CheckConnect(ctx, filled(Config{Settings: source.Settings{Endpoint: ln.Addr().String(),
		Params: testParams(goodParams()), DialTimeout: 10 * time.Second}}))
	sourcetest.WantErr(t, "CheckConnect", err, []string{"closed the connection during the TLS handshake", "source.endpoint",
		"firewall or proxy"}, testSecret)
	if err != nil && strings.Contains(err.Error(), "login") {
		t.Errorf("CheckConnect: %v: names a login, which no server saw", err)
	}
}

// BenchmarkReadAndMap reads a MESSAGE frame as the platform sends it and
// maps it to a bridge.Message: the source's work per message (allocations
// reported).
func BenchmarkReadAndMap(b *testing.B) {
	body := strings.Repeat("x", 256)
	raw := []byte("MESSAGE\nsubscription:0\nmessage-id:T_1\ndestination:/topic/#\ntopic:/a1BenchProduct/dev-1/user/telemetry\n" +
		"messageId:1790000000000000001\ngenerateTime:1700000000123\nqos:1\ncontent-length:256\n\n" + body + "\x00")
	r := bytes.NewReader(raw)
	w := &wire{br: bufio.NewReader(r)}
	b.ReportAllocs()
	for b.Loop() {
		readAndMap(b, w, r, raw)
	}
}

// readAndMap reads the first frame of raw through w (its reader r reset to
// raw) and maps it to a bridge.Message, as the source does a MESSAGE frame.
func readAndMap(tb testing.TB, w *wire, r *bytes.Reader, raw []byte) {
	r.Reset(raw)
	w.br.Reset(r)
	f, err := w.read()
	if err != nil {
		tb.Fatal(err)
	}
	_ = toMessage(f.Header, f.Body, false)
}

// BenchmarkReadAndMapGoStomp is BenchmarkReadAndMap with go-stomp's frame
// reader, for comparison (what the source used before it read frames
// itself).
func BenchmarkReadAndMapGoStomp(b *testing.B) {
	body := strings.Repeat("x", 256)
	raw := []byte("MESSAGE\nsubscription:0\nmessage-id:T_1\ndestination:/topic/#\ntopic:/a1BenchProduct/dev-1/user/telemetry\n" +
		"messageId:1790000000000000001\ngenerateTime:1700000000123\nqos:1\ncontent-length:256\n\n" + body + "\x00")
	r := bytes.NewReader(raw)
	br := bufio.NewReader(r)
	fr := frame.NewReader(br)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		br.Reset(r)
		f, err := fr.Read()
		if err != nil {
			b.Fatal(err)
		}
		_ = toMessage(f.Header, f.Body, false)
	}
}

// A check that runs long after the one before it (the process was stopped,
// its VM paused) does not blame the server for the time this process did not
// run: the heart-beats wait unread in the socket meanwhile. The silence
// counts again from that check, and a server silent a whole limit after it
// is still found.
func TestLinkCheckAfterAPause(t *testing.T) {
	var logs syncbuf.Buffer
	t0 := time.Now()
	l := &link{name: "c", silence: 21 * time.Second, interval: time.Second, w: &wire{},
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	l.progress.Store(t0)
	l.w.lastAlive.Store(t0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	l.checked.Store(at(time.Second))
	if err := l.check(at(2 * time.Second)); err != nil {
		t.Fatalf("check before the pause: %v", err)
	}
	// Stopped for 40 s: the next check runs 40 s after the last.
	if err := l.check(at(42 * time.Second)); err != nil {
		t.Fatalf("check right after a 40s pause: %v (the process's own pause was taken for the server's silence)", err)
	}
	if !strings.Contains(logs.String(), "this process did not run") || !strings.Contains(logs.String(), "gap=40s") {
		t.Errorf("the pause is not logged: %q", logs.String())
	}
	// The checks count on the monotonic clock (monotime): a step of the
	// wall clock (walk14: NTP setting a box that booted without a
	// real-time clock) is no gap, so the line does not offer it as one.
	if strings.Contains(logs.String(), "clock") {
		t.Errorf("the line names the clock, whose steps the checks no longer see: %q", logs.String())
	}
	if strings.Contains(logs.String(), "ACK timeout") { // ack auto: nothing waits for an ACK
		t.Errorf("with ack auto the line speaks of the ACK timeout: %q", logs.String())
	}
	for s := 43; s <= 63; s++ {
		if err := l.check(at(time.Duration(s) * time.Second)); err != nil {
			t.Fatalf("check %ds after the start, %ds after the pause: %v", s, s-42, err)
		}
	}
	if err := l.check(at(64 * time.Second)); err == nil || !strings.Contains(err.Error(), "heart-beats missed") {
		t.Fatalf("a server silent 22s after the pause: check = %v, want heart-beats missed", err)
	}
}
