package amqpsrc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

const testSecret = "sEcReT-never-shown"

func testParams() (iotauth.Params, error) {
	return iotauth.Params{
		ClientID:        "edge-gw-01",
		AccessKeyID:     "LTAItestkey",
		AccessKeySecret: testSecret,
		ConsumerGroupID: "DEFAULT_GROUP",
		SignMethod:      "hmacsha1",
	}, nil
}

func TestNewIdleTimeoutBounds(t *testing.T) {
	tests := []struct {
		idle    time.Duration
		wantErr bool
		want    time.Duration // after defaults
	}{
		{0, false, 60 * time.Second},
		{59 * time.Second, true, 0},
		{60 * time.Second, false, 60 * time.Second},
		{120 * time.Second, false, 120 * time.Second},
		{600 * time.Second, false, 600 * time.Second},
		{601 * time.Second, true, 0},
		{time.Minute - time.Millisecond, true, 0},
		{-time.Second, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.idle.String(), func(t *testing.T) {
			s, err := New(filled(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams}, IdleTimeout: tc.idle}))
			if tc.wantErr {
				if err == nil {
					t.Fatal("New accepted it")
				}
				if !strings.Contains(err.Error(), "source.amqp.idle_timeout") {
					t.Errorf("error %q does not name source.amqp.idle_timeout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.cfg.IdleTimeout != tc.want {
				t.Errorf("IdleTimeout = %s, want %s", s.cfg.IdleTimeout, tc.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	// The wiring gives the endpoint the AMQP port (config.Source.Address)
	// and every value from config.Default().
	sc := config.Source{Protocol: "amqp", Endpoint: "iot-06z00.amqp.iothub.aliyuncs.com"}
	addr, err := sc.Address()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(filled(Config{Settings: source.Settings{Endpoint: addr, Params: testParams}}))
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.Endpoint != "iot-06z00.amqp.iothub.aliyuncs.com:5671" || c.Address != "default" || c.Credit != 64 ||
		c.Connections != 1 || c.AttachTimeout != 15*time.Second || c.DialTimeout != 15*time.Second ||
		c.Limiter == nil || c.Logger == nil || c.Clock == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	if got := s.ConnStates(); len(got) != 1 || got[0].Name != "edge-gw-01" {
		t.Errorf("ConnStates = %+v, want one slot named edge-gw-01", got)
	}
}

func TestNewConnectionsNameSlots(t *testing.T) {
	s, err := New(filled(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, Connections: 3}}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range s.ConnStates() {
		names = append(names, st.Name)
	}
	if got, want := strings.Join(names, ","), "edge-gw-01-0,edge-gw-01-1,edge-gw-01-2"; got != want {
		t.Errorf("slot names %s, want %s", got, want)
	}
}

func TestNewRejects(t *testing.T) {
	long := func() (iotauth.Params, error) {
		p, _ := testParams()
		p.ClientID = strings.Repeat("c", 63) // fine alone, too long with "-1"
		return p, nil
	}
	failing := func() (iotauth.Params, error) { return iotauth.Params{}, errors.New("secret file missing") }
	tests := []struct {
		name string
		cfg  Config
		keys []string // every one must be named in the error
	}{
		{"no endpoint, no params", Config{}, []string{"source.endpoint", "source.credentials"}},
		{"bad port", Config{Settings: source.Settings{Endpoint: "h:99999", Params: testParams}}, []string{"source.endpoint"}},
		{"no host", Config{Settings: source.Settings{Endpoint: ":5671", Params: testParams}}, []string{"source.endpoint"}},
		{"connections and credit at once", Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, Connections: 65}, Credit: -1},
			[]string{"source.connections", "source.amqp.credit"}},
		{"credit too big", Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams}, Credit: source.MaxCredit + 1}, []string{"source.amqp.credit"}},
		{"negative timeouts", Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, DialTimeout: -1}, AttachTimeout: -1},
			[]string{"source.dial_timeout", "Config.AttachTimeout"}}, // AttachTimeout is no config key
		{"backoff inverted", Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, MinBackoff: time.Minute, MaxBackoff: time.Second}},
			[]string{"source.reconnect_max_backoff"}},
		{"client id too long with suffix", Config{Settings: source.Settings{Endpoint: "h:5671", Params: long, Connections: 2}}, []string{"clientId"}},
		{"params fail", Config{Settings: source.Settings{Endpoint: "h:5671", Params: failing}}, []string{"source.credentials", "secret file missing"}},
		{"ca file missing", Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, TLS: source.TLSOptions{CAFile: "/nonexistent/ca.pem"}}},
			[]string{"source.tls.ca_file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(filled(tc.cfg))
			sourcetest.WantErr(t, "New", err, tc.keys, testSecret)
		})
	}
}

func TestNewCAFileNotPEM(t *testing.T) {
	p := testfile.Write(t, t.TempDir(), "ca.pem", "not a certificate")
	_, err := New(filled(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams, TLS: source.TLSOptions{CAFile: p}}}))
	if err == nil || !strings.Contains(err.Error(), "source.tls.ca_file") {
		t.Fatalf("New = %v, want an error naming source.tls.ca_file", err)
	}
}

// A check that runs long after the one before it (the process was stopped,
// its VM paused) does not take the time this process did not run for the
// server's silence: the server's frames, or its close, wait unread in the
// socket. The silence counts again from that check, and a server silent a
// whole limit after it is still found.
func TestReadWatchAfterAPause(t *testing.T) {
	t0 := time.Now()
	w := newReadWatch(nil, 30*time.Second, "source.amqp.idle_timeout")
	w.last.Store(t0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	if w.silentAt(at(3), at(0), 3*time.Second) {
		t.Fatal("silent 3s after a read")
	}
	// Stopped for 120 s: the next check runs 120 s after the last.
	if w.silentAt(at(123), at(3), 3*time.Second) {
		t.Fatal("silent right after a 120s pause: the process's own pause was taken for the server's silence")
	}
	for s := 126; s < 153; s += 3 {
		if w.silentAt(at(s), at(s-3), 3*time.Second) {
			t.Fatalf("silent %ds after the pause", s-123)
		}
	}
	if !w.silentAt(at(153), at(150), 3*time.Second) {
		t.Fatal("a server silent 30s after the pause is not found")
	}
}
