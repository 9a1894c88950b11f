package mns_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/field/fieldtest"
)

// TestClientNamesNoConfigKey: the MNS client reports and advises in terms
// of its own Config fields (mns.Field, mns.FieldError); what the operator
// calls them comes from the wiring (config.MNSNames, handed over as
// Config.Names). It reads the package's non-test .go files and looks for
// every key config.MNSNames knows, the last part of every key that has an
// underscore ("request_timeout"), and any "mns.<lower case>" path.
func TestClientNamesNoConfigKey(t *testing.T) {
	fieldtest.NoConfigKeys(t, slices.Collect(maps.Values(config.MNSNames())), "mns", 10, ".")
}
