// Package configtest writes bridge configs for tests from a typed
// config.Config: start from New (config.Default()), set the fields a test
// needs, and Write it. The YAML holds only what differs from the defaults,
// so the bridge under test fills in the same defaults as a real deployment,
// and it holds secrets in clear (the Config prints them as "***"): for tests
// only.
package configtest

import (
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// New returns config.Default(), ready to be filled in.
func New() *config.Config {
	c := config.Default()
	return &c
}

// YAML renders c as a config file (config.Marshal): every field that
// differs from config.Default(), under its YAML key.
func YAML(c *config.Config) ([]byte, error) { return config.Marshal(c) }

// Write renders c into dir/name and returns the file's path; it fails the
// test on error.
func Write(t testing.TB, dir, name string, c *config.Config) string {
	t.Helper()
	data, err := YAML(c)
	if err != nil {
		t.Fatal(err)
	}
	return testfile.Write(t, dir, name, string(data))
}
