package source_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/field/fieldtest"
)

// TestProtocolPackagesNameNoConfigKey: the protocol packages (this one,
// its sourcetest, stompsrc and amqpsrc) report and advise in terms of their
// own Config fields (source.Field, source.FieldError); what the operator
// calls a field comes from the wiring as data (config.SourceNames, handed
// over as Config.Names). A config key written into their code, in a string
// or a comment, would be a second owner of the mapping that drifts from the
// config: this test fails on one. It reads the non-test .go files and looks
// for every key config.SourceNames knows, the last part of every key that
// has an underscore ("ca_file"), and any "source.<lower case>" path.
func TestProtocolPackagesNameNoConfigKey(t *testing.T) {
	fieldtest.NoConfigKeys(t, slices.Collect(maps.Values(config.SourceNames())), "source", 15,
		".", "sourcetest", "../stompsrc", "../amqpsrc")
}
