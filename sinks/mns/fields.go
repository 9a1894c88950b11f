package mns

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

// Names maps Fields to what the operator calls them. The wiring fills it
// from the config (config.MNSNames: the config keys), so that every error
// and hint of the client names the key to change. A Field it does not name
// is shown as "Config.<Field>"; a nil Names shows every Field that way.
type Names map[Field]string

// Of is the operator's name of f.
func (n Names) Of(f Field) string {
	if s := n[f]; s != "" {
		return s
	}
	return "Config." + string(f)
}
