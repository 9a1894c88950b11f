package sourcetest

import (
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
)

// WantErr checks the error that call (what returned it: "New",
// "CheckConnect") returned: with no want, it fails t unless err is nil;
// else unless err's text holds every string of want. In every case the
// text must hold none of secrets. It is errtext.Want, the project's one
// check of what an error tells the operator.
func WantErr(t testing.TB, call string, err error, want []string, secrets ...string) {
	t.Helper()
	errtext.Want(t, call, err, want, secrets...)
}
