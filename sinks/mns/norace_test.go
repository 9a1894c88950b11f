//go:build !race

package mns

// raceEnabled: see race_test.go.
const raceEnabled = false
