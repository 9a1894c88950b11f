package stompsrc

import (
	"log/slog"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/stompfake"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

const (
	testAK     = "LTAItestkey"
	testSecret = "s3cr3t-value-never-logged"
)

// fakeConfig is the fake STOMP server's config for these tests: it knows
// the test AccessKey and offers no heart-beats.
func fakeConfig() stompfake.Config {
	return stompfake.Config{Secrets: map[string]string{testAK: testSecret}}
}

// startFakeServer starts the misbehaving STOMP server (internal/stompfake)
// with fakeConfig.
func startFakeServer(t *testing.T) *stompfake.Server {
	t.Helper()
	return stompfake.Start(t, fakeConfig())
}

// startBeatingServer starts the fake STOMP server offering heart-beats
// every hb.
func startBeatingServer(t *testing.T, hb time.Duration) *stompfake.Server {
	t.Helper()
	cfg := fakeConfig()
	cfg.HeartBeat = hb
	return stompfake.Start(t, cfg)
}

// syncBuffer collects log output from many goroutines.
type syncBuffer = testpeers.SyncBuffer

func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func testParams(p iotauth.Params) func() (iotauth.Params, error) {
	return func() (iotauth.Params, error) { return p, nil }
}

func goodParams() iotauth.Params {
	return iotauth.Params{
		ClientID:        "edge-gw-01",
		AccessKeyID:     testAK,
		AccessKeySecret: testSecret,
		ConsumerGroupID: "DEFAULT_GROUP",
		IotInstanceID:   "iot-test",
		SignMethod:      iotauth.HMACSHA1,
	}
}
