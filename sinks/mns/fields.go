package mns

import "github.com/iot-mns-bridge/iot-mns-bridge/internal/field"

// Field is a setting of Config, named by its Go name ("Timeout"). The
// client reports problems and gives advice in terms of Fields; what the
// operator calls a setting (a config key) is not its to know: the wiring
// gives it as Config.Names.
type Field string

// The Fields of Config that the client's errors and hints name.
const (
	FieldEndpoint         Field = "Endpoint"
	FieldAccessKeyID      Field = "AccessKeyID"     // also where Credentials gets the id
	FieldAccessKeySecret  Field = "AccessKeySecret" // also where Credentials gets the secret
	FieldBodyEncoding     Field = "BodyEncoding"
	FieldTimeout          Field = "Timeout"
	FieldMaxConns         Field = "MaxConns"
	FieldSignatureVersion Field = "SignatureVersion"
	FieldRegion           Field = "Region"
)

// Names is what the operator calls the Fields: config.MNSNames, the config
// keys, in the bridge (nil: "Config.<Field>"). FieldError is NewClient's
// refusal of one Field; find it with errors.As.
type (
	Names      = field.Names[Field]
	FieldError = field.Error[Field]
)
