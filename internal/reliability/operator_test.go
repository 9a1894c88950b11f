package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestOperatorMistakes: wrong credentials, a wrong CA, a wrong server name
// and a clock 20 minutes off. Each gives a warning or error that names the
// problem; the bridge keeps running (and retrying), reports not ready, holds
// the messages, and never logs a secret.
func TestOperatorMistakes(t *testing.T) {
	_, otherCA := testpeers.CA(t)
	tests := []struct {
		name   string
		emuCfg mnsemu.Config
		simCfg iotsim.Config
		sp     spec
		// want: substrings (any one suffices, case-insensitive) of a
		// warning or error line.
		want []string
	}{
		{name: "wrong AccessKey secret for the source",
			simCfg: iotsim.Config{Secrets: map[string]string{testAK: "another-secret"}},
			want:   []string{"signature", "access_key_secret", "password"}},
		{name: "unknown AccessKey id for MNS",
			emuCfg: mnsemu.Config{AccessKeys: map[string]string{"LTAIother": testSecret}},
			want:   []string{"InvalidAccessKeyId", "access_key_id"}},
		{name: "wrong AccessKey secret for MNS",
			emuCfg: mnsemu.Config{AccessKeys: map[string]string{testAK: "another-secret"}},
			want:   []string{"SignatureDoesNotMatch", "access_key_secret"}},
		{name: "wrong CA", sp: spec{caFile: otherCA},
			want: []string{"ca_file", "unknown authority"}},
		{name: "wrong server name", sp: spec{serverName: "wrong.example.com"},
			want: []string{"wrong.example.com"}},
		{name: "clock 20 minutes off (MNS TimeExpired)",
			emuCfg: mnsemu.Config{Now: func() time.Time { return time.Now().Add(20 * time.Minute) }},
			want:   []string{"TimeExpired", "clock"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.emuCfg, tc.simCfg)
			sp := tc.sp
			sp.ack = "client-individual"
			r := runBridge(t, e.config(t, sp), app.Options{})
			pub := &publisher{sim: e.sim, prefix: "op"}
			pub.publish(5)
			waitFor(t, "a warning or error", time.Minute, func() bool { return firstWarning(r.logs.String()) != "" })
			// Let it retry a few times: it must keep running.
			time.Sleep(2 * time.Second)
			select {
			case err := <-r.done:
				t.Fatalf("the bridge stopped: %v", err)
			default:
			}
			// The first warning may be another one (a lookup at the start,
			// say): wait for the one that names the problem, whatever the
			// retries' pace on a loaded machine.
			waitFor(t, "a warning that names the problem", time.Minute, func() bool {
				return containsAnyFold(warnings(r.logs.String()), tc.want)
			}, func() string {
				return fmt.Sprintf("%s: no warning names the problem (want one of %q); warnings:\n%s", tc.name, tc.want, tail(warnings(r.logs.String()), 10))
			})
			t.Logf("%s: %s", tc.name, firstLine(warnings(r.logs.String())))
			if nr := r.b.NotReady(); len(nr) == 0 {
				t.Errorf("%s: the bridge reports ready", tc.name)
			} else {
				t.Logf("%s: not ready: %q", tc.name, nr)
			}
			noSecrets(t, "the bridge log", r.logs.String())
			noSecrets(t, "NotReady", strings.Join(r.b.NotReady(), "\n"))
			if st := e.sim.Stats(); st.Acked != 0 {
				t.Errorf("%s: %d messages acked upstream though none can have reached MNS", tc.name, st.Acked)
			}
		})
	}
}

func containsAnyFold(s string, subs []string) bool {
	ls := strings.ToLower(s)
	for _, sub := range subs {
		if strings.Contains(ls, strings.ToLower(sub)) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
