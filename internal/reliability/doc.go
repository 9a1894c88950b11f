// Package reliability holds the bridge's reliability suite: tests that
// count. Each scenario starts the IoT platform simulator and the MNS
// emulator (or RabbitMQ, or a misbehaving fake of our own), runs the real
// bridge (in process, or as a child process that it kills with SIGKILL),
// injects a fault through internal/faultproxy or the emulator, and reports
// the messages sent, arrived, lost and duplicated and the time to recover.
// It asserts that nothing is lost and that the bridge recovers by itself;
// times are reported, never asserted, except as generous failure deadlines.
//
// The package has no non-test code beyond this comment. Scenarios scale
// down under -short.
package reliability
