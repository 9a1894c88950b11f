package stompsrc

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/stompfake"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// checkConfig is the Config of a check against s, logging in with p.
func checkConfig(s *stompfake.Server, p iotauth.Params) Config {
	return Config{Settings: source.Settings{Endpoint: s.Addr(), TLS: source.TLSOptions{CAFile: s.CAFile},
		Params: testParams(p), DialTimeout: 10 * time.Second}}
}

func TestCheckConnect(t *testing.T) {
	s := startFakeServer(t)
	closedAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	wrongSecret := goodParams()
	wrongSecret.AccessKeySecret = "not-the-secret"
	tests := []struct {
		name         string
		mod          func(*Config)
		subscribeErr string
		want         []string // substrings of the error; none: success
		wantIs       error
	}{
		{name: "ok"},
		{name: "ok client-individual", mod: func(c *Config) { c.Ack = AckClientIndividual }},
		{name: "bad credentials", mod: func(c *Config) { c.Params = testParams(wrongSecret) },
			want: []string{"login refused", "password does not match"}, wantIs: ErrLoginRefused},
		{name: "unknown CA", mod: func(c *Config) { c.TLS = source.TLSOptions{} },
			want: []string{`unknown authority "CN=iot-mns-bridge throwaway test CA,O=iot-mns-bridge tests"; add that CA with source.tls.ca_file`}},
		// A ca_file of another CA (before, only 'add the CA that signed it
		// with source.tls.ca_file', which the operator had done).
		{name: "another CA", mod: func(c *Config) { _, ca := testpeers.CA(t); c.TLS = source.TLSOptions{CAFile: ca} },
			want: []string{`unknown authority "CN=iot-mns-bridge throwaway test CA,O=iot-mns-bridge tests"; add that CA with source.tls.ca_file (when it is set, the file it names does not hold that CA)`}},
		{name: "wrong server name", mod: func(c *Config) { c.TLS.ServerName = "wrong.example" },
			want: []string{"source.tls.server_name"}},
		// The check does not subscribe, so a destination the server would
		// refuse does not fail it (and nothing can be pushed to it).
		{name: "not subscribing", subscribeErr: "destination not allowed"},
		{name: "nothing listening", mod: func(c *Config) { c.Endpoint = closedAddr },
			want: []string{"cannot reach the server", "source.endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetSubscribeError(tt.subscribeErr)
			log, logs := testLogger(t)
			cfg := checkConfig(s, goodParams())
			cfg.Logger = log
			if tt.mod != nil {
				tt.mod(&cfg)
			}
			var refused []string
			cfg.Refused = func(id string) { refused = append(refused, id) }
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := CheckConnect(ctx, filled(cfg))
			sourcetest.WantErr(t, "CheckConnect", err, tt.want)
			// A refused login tells Settings.Refused the AccessKeyId it was
			// signed with (the credentials cache then fetches anew); no
			// other failure does.
			if want := errors.Is(err, ErrLoginRefused); want != (len(refused) == 1) || want && refused[0] != goodParams().AccessKeyID {
				t.Errorf("Refused heard %q for %v", refused, err)
			}
			if err == nil {
				return
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			for _, secret := range []string{testSecret, "not-the-secret"} {
				if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
					t.Error("a secret appears in the error or the log")
				}
			}
		})
	}
	// The check's client id does not displace the daemon's.
	for _, u := range s.Record().Logins {
		if u.ClientID != "edge-gw-01-check" {
			t.Errorf("check logged in as %q", u.ClientID)
		}
	}
}

func TestCheckConnectLongClientID(t *testing.T) {
	s := startFakeServer(t)
	p := goodParams()
	p.ClientID = strings.Repeat("c", iotauth.MaxClientIDLen)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := CheckConnect(ctx, filled(checkConfig(s, p)))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Record().Logins[0].ClientID; len(got) != iotauth.MaxClientIDLen || !strings.HasSuffix(got, "-check") {
		t.Fatalf("client id %q", got)
	}
}

// TestCheckConnectNeverAcknowledges: whatever source.stomp.ack says, the
// check neither subscribes nor acknowledges, so the platform has nowhere to
// push a message (with ack auto it would settle one on sending).
func TestCheckConnectNeverAcknowledges(t *testing.T) {
	for _, ack := range []string{AckAuto, AckClientIndividual} {
		t.Run(ack, func(t *testing.T) {
			s := startFakeServer(t)
			cfg := checkConfig(s, goodParams())
			cfg.Ack = ack
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := CheckConnect(ctx, filled(cfg)); err != nil {
				t.Fatal(err)
			}
			select {
			case c := <-s.Subscriptions():
				t.Errorf("the check subscribed (ack %q): the platform could push it messages", c.AckMode())
			default:
			}
			if acks := s.Record().Acks; len(acks) != 0 {
				t.Errorf("the check acknowledged %d messages", len(acks))
			}
		})
	}
}
