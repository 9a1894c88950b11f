// Package sourcetest helps the protocol packages' tests build a source
// Config as the wiring does: every config value from config.Default(), the
// one place defaults come from.
package sourcetest

import (
	"fmt"
	"reflect"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// Fill sets every zero field of the source Config that cfg points to
// (stompsrc.Config, amqpsrc.Config) whose name is a config value of the
// source section to config.Default()'s value, and a nil Limiter to one of
// source.connect_attempts_per_minute. A heart-beat is left as it is (0 is
// off). It panics if cfg is not a pointer to a struct.
func Fill(cfg any) {
	d := config.Default().Source
	values := map[string]any{
		"Connections":   d.Connections,
		"DialTimeout":   d.DialTimeout,
		"MinBackoff":    d.ReconnectMinBackoff,
		"MaxBackoff":    d.ReconnectMaxBackoff,
		"Destination":   d.STOMP.Destination,
		"Ack":           d.STOMP.Ack,
		"CheckInterval": d.STOMP.CheckInterval,
		"Address":       d.AMQP.Address,
		"Credit":        d.AMQP.Credit,
		"IdleTimeout":   d.AMQP.IdleTimeout,
		"Limiter":       source.NewAttemptLimiter(d.ConnectAttemptsPerMinute, time.Minute),
	}
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("sourcetest.Fill: %T is not a pointer to a Config", cfg))
	}
	v = v.Elem()
	for name, val := range values {
		if f := v.FieldByName(name); f.IsValid() && f.IsZero() {
			f.Set(reflect.ValueOf(val))
		}
	}
}
