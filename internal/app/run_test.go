package app

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
)

// TestRunClosesWhatItOpenedWhenStartFails: when a step of Run's open fails
// (here http.listen, after the dead-letter file and the journal are open),
// Run returns the error and closeAll has closed what was opened: the
// dead-letter file's lock is free again.
func TestRunClosesWhatItOpenedWhenStartFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	c := configtest.New()
	c.Source.Endpoint, c.Source.ClientID = "127.0.0.1:1", "run-test"
	c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
	c.Source.STOMP.Ack = "client-individual"
	c.MNS.Endpoint = "http://127.0.0.1:1"
	c.DefaultRoute.Queue = "unrouted"
	dlFile := filepath.Join(dir, "dl.jsonl")
	c.Delivery.DeadLetter.File = dlFile
	c.Delivery.Dedup.File = filepath.Join(dir, "dedup.log")
	c.HTTP.Listen = busy.Addr().String()
	cfg, err := config.Load(configtest.Write(t, dir, "bridge.yaml", c))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "http.listen") ||
		!strings.Contains(err.Error(), "another process listens on "+busy.Addr().String()) {
		t.Fatalf("Run = %v, want the http.listen error saying the address is taken", err)
	}
	f, err := deadletter.OpenFile(dlFile)
	if err != nil {
		t.Fatalf("the dead-letter file is still held after Run failed: %v", err)
	}
	f.Close()
}
