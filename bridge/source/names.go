package source

import "github.com/iot-mns-bridge/iot-mns-bridge/internal/field"

// Field is a setting of a protocol's source Config, named by its Go path in
// that Config ("TLS.CAFile"). The protocol packages report problems and give
// advice in terms of Fields; what the operator calls a field (a config key)
// is not theirs to know: the wiring gives it to them as Names.
type Field string

// The Fields of the source Configs. The first group is common to every
// protocol; Params.* are the parts of the signing inputs the operator sets.
const (
	FieldEndpoint           Field = "Endpoint"
	FieldCAFile             Field = "TLS.CAFile"
	FieldServerName         Field = "TLS.ServerName"
	FieldInsecureSkipVerify Field = "TLS.InsecureSkipVerify"
	FieldParams             Field = "Params" // the credentials
	FieldConsumerGroupID    Field = "Params.ConsumerGroupID"
	FieldIotInstanceID      Field = "Params.IotInstanceID"
	FieldSignMethod         Field = "Params.SignMethod"
	FieldConnections        Field = "Connections"
	FieldDialTimeout        Field = "DialTimeout"
	FieldMinBackoff         Field = "MinBackoff"
	FieldMaxBackoff         Field = "MaxBackoff"
	FieldLimiter            Field = "Limiter" // the connection attempts a minute

	// STOMP (stompsrc.Config).
	FieldDestination   Field = "Destination"
	FieldAck           Field = "Ack"
	FieldHeartBeat     Field = "HeartBeat"
	FieldCheckInterval Field = "CheckInterval"

	// AMQP (amqpsrc.Config).
	FieldAddress       Field = "Address"
	FieldCredit        Field = "Credit"
	FieldIdleTimeout   Field = "IdleTimeout"
	FieldVhost         Field = "Vhost"
	FieldAttachTimeout Field = "AttachTimeout"
	FieldSettleTimeout Field = "SettleTimeout"
)

// Names maps Fields to what the operator calls them. The wiring fills it
// from the config (config.SourceNames: the config keys), so that every error
// and log line of a source names the key to change. A Field it does not name
// is shown as "Config.<Field>"; a nil Names shows every Field that way.
// Names.Bad makes a *FieldError.
type Names = field.Names[Field]

// Problems gathers a Config's problems, each a *FieldError named by its
// Names (Names.Problems).
type Problems = field.Problems[Field]

// FieldError reports a Config field whose value cannot work. Field is the
// field, Name what the operator calls it (Names.Of(Field)) and Err the
// reason; Error() is "Name: reason". Find it with errors.As; Fields lists
// every one in an error.
type FieldError = field.Error[Field]

// Fields lists the Field of every *FieldError in err's tree (through Unwrap
// and errors.Join), in order; nil when there is none.
func Fields(err error) []Field { return field.Fields[Field](err) }

// HasField reports whether err holds a *FieldError for f.
func HasField(err error, f Field) bool { return field.Has(err, f) }
