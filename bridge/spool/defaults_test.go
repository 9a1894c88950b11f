package spool_test

import (
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// The spool's tests run with the defaults the wiring gives the spool,
// config.Default()'s. config imports the spool, so only this external test
// package may import config; it hands them over before any test runs.
func init() {
	def := config.Default().Spool
	spool.SetConfigDefaults(int64(def.MaxBytes), def.CommitInterval)
}
