//go:build race

package app

// raceEnabled: the race detector multiplies memory use (5 to 10 times), so
// memory figures taken under it say nothing about the bridge.
const raceEnabled = true
