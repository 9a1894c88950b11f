//go:build race

package mns

// raceEnabled: under the race detector sync.Pool drops some of what is put
// back, on purpose, so allocation counts say nothing about the client.
const raceEnabled = true
