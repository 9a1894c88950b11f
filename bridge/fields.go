package bridge

import "github.com/iot-mns-bridge/iot-mns-bridge/internal/field"

// Field is a setting of PipelineConfig, named by its Go name. The
// pipeline's log lines name it as PipelineConfig.Names says: in the bridge,
// the config key (config.PipelineNames), which is not the pipeline's to
// know.
type Field string

// The Fields the pipeline's log lines name.
const (
	FieldMaxInFlight      Field = "MaxInFlight"
	FieldMaxInFlightBytes Field = "MaxInFlightBytes"
)

// Names is what the operator calls the Fields (nil: "Config.<Field>").
type Names = field.Names[Field]
