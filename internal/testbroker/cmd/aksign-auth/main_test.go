package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func TestRunServesUntilCancelled(t *testing.T) {
	keysFile := testfile.Write(t, t.TempDir(), "keys", "LTAIfile:file-secret\n")
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		id     string
		secret string
	}{
		{"keys from file", []string{"-listen", "127.0.0.1:0", "-keys-file", keysFile}, nil, "LTAIfile", "file-secret"},
		{"keys from env", []string{"-listen", "127.0.0.1:0"}, map[string]string{"AKSIGN_AUTH_KEYS": "LTAIenv:env-secret"}, "LTAIenv", "env-secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ready := make(chan string, 1)
			done := make(chan error, 1)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			go func() { done <- run(ctx, tc.args, func(k string) string { return tc.env[k] }, log, ready) }()
			var addr string
			select {
			case addr = <-ready:
			case err := <-done:
				t.Fatalf("run returned early: %v", err)
			}
			c, err := iotauth.Sign(iotauth.Params{ClientID: "c", AccessKeyID: tc.id, AccessKeySecret: tc.secret,
				ConsumerGroupID: "g", SignMethod: iotauth.HMACSHA256}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.PostForm("http://"+addr+"/auth/user", url.Values{"username": {c.Username}, "password": {c.Password}})
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "allow" {
				t.Errorf("decision = %q, want allow", body)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run after cancel: %v", err)
			}
		})
	}
}

func TestRunRefusesBadSetup(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no keys", []string{"-listen", "127.0.0.1:0"}, "", "no AccessKeys"},
		{"bad keys", []string{"-listen", "127.0.0.1:0"}, "justanid", "entry 1"},
		{"missing file", []string{"-keys-file", "/nonexistent/keys"}, "", "read keys"},
		{"bad flag", []string{"-nope"}, "", "not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			err := run(context.Background(), tc.args, func(string) string { return tc.env }, log, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
