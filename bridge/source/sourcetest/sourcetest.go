// Package sourcetest helps the protocol packages' tests build a source
// Config as the wiring does: every config value from config.Default(), the
// one place defaults come from.
package sourcetest

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// Fill sets every zero field of the source Config that cfg points to
// (stompsrc.Config, amqpsrc.Config) whose name is a config value of the
// source section to config.Default()'s value, and a nil Limiter to one of
// the config's connect attempts a minute, and nil Names to
// config.SourceNames() (the config keys, as the wiring gives them). A
// heart-beat is left as it is (0 is off). It panics if cfg is not a pointer
// to a struct.
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
		"Names":         config.SourceNames(),
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

// Common are the source.Fields every protocol's Config has.
var Common = []source.Field{
	source.FieldEndpoint, source.FieldCAFile, source.FieldServerName, source.FieldInsecureSkipVerify,
	source.FieldParams, source.FieldConsumerGroupID, source.FieldIotInstanceID, source.FieldSignMethod,
	source.FieldConnections, source.FieldDialTimeout, source.FieldMinBackoff, source.FieldMaxBackoff,
	source.FieldLimiter,
}

// CheckFields fails t for every field that is no field path of the Config
// cfg (a "Params.X" field must be a field of what Params returns), so that
// the Fields a protocol reports stay the names of its Config's fields.
func CheckFields(t testing.TB, cfg any, fields ...source.Field) {
	t.Helper()
	for _, f := range fields {
		typ := reflect.TypeOf(cfg)
		for part := range strings.SplitSeq(string(f), ".") {
			if typ.Kind() == reflect.Func && typ.NumOut() > 0 {
				typ = typ.Out(0) // Params: the signing parameters it returns
			}
			if typ.Kind() != reflect.Struct {
				t.Errorf("%s is not a field of %T", f, cfg)
				break
			}
			sf, ok := typ.FieldByName(part)
			if !ok {
				t.Errorf("%s is not a field of %T", f, cfg)
				break
			}
			typ = sf.Type
		}
	}
}
