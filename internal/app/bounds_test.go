package app

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// TestConfigAndSourcesAgreeOnBounds pins that each bound of a source
// setting has one owner (package source): the value at the bound passes
// both config.Validate and the protocol's New (through the wiring, as run
// builds it), and the value just past it is refused by both, each naming
// the same config key.
func TestConfigAndSourcesAgreeOnBounds(t *testing.T) {
	base := func(protocol string) *config.Config {
		c := configtest.New()
		c.Source.Protocol = protocol
		c.Source.Endpoint = "127.0.0.1:61614"
		c.Source.ClientID = "b1"
		c.Source.Credentials.AccessKeyID = "LTAI-test"
		c.Source.Credentials.AccessKeySecret = "not-a-secret"
		c.MNS.Endpoint = "http://127.0.0.1:1"
		c.DefaultRoute.Queue = "q"
		return c
	}
	params := func() (iotauth.Params, error) {
		return iotauth.Params{ClientID: "b1", AccessKeyID: "LTAI-test", AccessKeySecret: "not-a-secret",
			ConsumerGroupID: "DEFAULT_GROUP", SignMethod: "hmacsha1"}, nil
	}
	for _, tt := range []struct {
		name, protocol, key string
		set                 func(c *config.Config, past bool)
	}{
		{"connections stomp", "stomp", "source.connections", func(c *config.Config, past bool) {
			c.Source.ClientID = "b"
			c.Source.Connections = pick(past, source.MaxConnections, source.MaxConnections+1)
		}},
		{"connections amqp", "amqp", "source.connections", func(c *config.Config, past bool) {
			c.Source.ClientID = "b"
			c.Source.Connections = pick(past, source.MaxConnections, source.MaxConnections+1)
		}},
		{"credit", "amqp", "source.amqp.credit", func(c *config.Config, past bool) {
			c.Source.AMQP.Credit = pick(past, source.MaxCredit, source.MaxCredit+1)
		}},
		{"idle timeout low", "amqp", "source.amqp.idle_timeout", func(c *config.Config, past bool) {
			c.Source.AMQP.IdleTimeout = pick(past, source.MinIdleTimeout, source.MinIdleTimeout-2*time.Millisecond)
		}},
		{"idle timeout high", "amqp", "source.amqp.idle_timeout", func(c *config.Config, past bool) {
			c.Source.AMQP.IdleTimeout = pick(past, source.MaxIdleTimeout, source.MaxIdleTimeout+2*time.Millisecond)
		}},
		{"idle timeout a nanosecond low", "amqp", "source.amqp.idle_timeout", func(c *config.Config, past bool) {
			c.Source.AMQP.IdleTimeout = pick(past, source.MinIdleTimeout, source.MinIdleTimeout-time.Nanosecond)
		}},
		{"idle timeout a nanosecond high", "amqp", "source.amqp.idle_timeout", func(c *config.Config, past bool) {
			c.Source.AMQP.IdleTimeout = pick(past, source.MaxIdleTimeout, source.MaxIdleTimeout+time.Nanosecond)
		}},
		{"credit 0", "amqp", "source.amqp.credit", func(c *config.Config, past bool) {
			c.Source.AMQP.Credit = pick(past, 1, 0)
		}},
		{"connections 0", "stomp", "source.connections", func(c *config.Config, past bool) {
			c.Source.Connections = pick(past, 1, 0)
		}},
		{"heartbeat negative", "stomp", "source.stomp.heartbeat", func(c *config.Config, past bool) {
			c.Source.STOMP.HeartBeat = pick(past, 0, -time.Millisecond)
		}},
		{"heartbeat", "stomp", "source.stomp.heartbeat", func(c *config.Config, past bool) {
			c.Source.STOMP.HeartBeat = pick(past, source.MinHeartBeat, source.MinHeartBeat-time.Microsecond)
		}},
	} {
		for _, past := range []bool{false, true} {
			c := base(tt.protocol)
			tt.set(c, past)
			verr := c.Validate()
			src, serr := newSource(c, params, nil, nil, nil)
			if serr == nil {
				src.Close(t.Context())
			}
			var fe *source.FieldError
			if !past {
				if verr != nil || serr != nil {
					t.Errorf("%s at the bound: Validate() = %v, the source's New = %v; want both to accept it", tt.name, verr, serr)
				}
				continue
			}
			if verr == nil || !strings.Contains(verr.Error(), tt.key+":") {
				t.Errorf("%s past the bound: Validate() = %v, want an error at %s", tt.name, verr, tt.key)
			}
			if !errors.As(serr, &fe) || fe.Name != tt.key {
				t.Errorf("%s past the bound: the source's New = %v, want a *source.FieldError named %s", tt.name, serr, tt.key)
			} else if serr.Error() != fe.Error() {
				// Both sources say it the same way: the key and the problem.
				t.Errorf("%s past the bound: the source's New = %q, want the field error alone, %q", tt.name, serr, fe)
			}
		}
	}
}

// pick is at when past is false, else beyond.
func pick[T any](past bool, at, beyond T) T {
	if past {
		return beyond
	}
	return at
}
