package config

import (
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/field"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// fieldKeys is the one place that knows which config key feeds which field
// of a package's Config: the sources' (source.Field: stompsrc.Config,
// amqpsrc.Config), the MNS client's (mns.Field: mns.Config) and the
// pipeline's (bridge.Field: bridge.PipelineConfig). Those
// packages report and advise in terms of their own fields (package field)
// and the wiring hands them these names (SourceNames, MNSNames), so that
// every error, hint and log line names the key the operator changes.
var fieldKeys = []struct {
	field any // a source.Field, an mns.Field or a bridge.Field
	key   string
}{
	{source.FieldEndpoint, "source.endpoint"},
	{source.FieldCAFile, "source.tls.ca_file"},
	{source.FieldServerName, "source.tls.server_name"},
	{source.FieldInsecureSkipVerify, "source.tls.insecure_skip_verify"},
	{source.FieldParams, "source.credentials"},
	{source.FieldConsumerGroupID, "source.consumer_group_id"},
	{source.FieldIotInstanceID, "source.iot_instance_id"},
	{source.FieldSignMethod, "source.sign_method"},
	{source.FieldConnections, "source.connections"},
	{source.FieldDialTimeout, "source.dial_timeout"},
	{source.FieldMinBackoff, "source.reconnect_min_backoff"},
	{source.FieldMaxBackoff, "source.reconnect_max_backoff"},
	{source.FieldLimiter, "source.connect_attempts_per_minute"},

	{source.FieldDestination, "source.stomp.destination"},
	{source.FieldAck, "source.stomp.ack"},
	{source.FieldHeartBeat, "source.stomp.heartbeat"},
	{source.FieldCheckInterval, "source.stomp.check_interval"},

	{source.FieldAddress, "source.amqp.address"},
	{source.FieldCredit, "source.amqp.credit"},
	{source.FieldIdleTimeout, "source.amqp.idle_timeout"},
	{source.FieldVhost, "source.amqp.vhost"},
	// AttachTimeout and SettleTimeout are the AMQP source's own, not
	// config keys.

	{mns.FieldEndpoint, "mns.endpoint"},
	// The AccessKey's names say where the key comes from: mns.credentials,
	// or source.credentials when that is empty.
	{mns.FieldAccessKeyID, "mns.credentials.access_key_id, or source.credentials when mns.credentials is empty"},
	{mns.FieldAccessKeySecret, "mns.credentials.access_key_secret (source.credentials when mns.credentials is empty)"},
	{mns.FieldBodyEncoding, "mns.body_encoding"},
	{mns.FieldTimeout, "mns.request_timeout"},
	{mns.FieldMaxConns, "delivery.max_requests"},
	{mns.FieldSignatureVersion, "mns.signature_version"},
	{mns.FieldRegion, "mns.region"},

	{bridge.FieldMaxInFlight, "delivery.max_in_flight"},
	{bridge.FieldMaxInFlightBytes, "delivery.max_in_flight_bytes"},
}

// names is the Names of the fields of type F in fieldKeys: a new map.
func names[F ~string]() field.Names[F] {
	n := field.Names[F]{}
	for _, fk := range fieldKeys {
		if f, ok := fk.field.(F); ok {
			n[f] = fk.key
		}
	}
	return n
}

// SourceNames maps every field of a source's Config (stompsrc.Config,
// amqpsrc.Config) that comes from a config key to that key. Each call
// returns a new map.
func SourceNames() source.Names { return names[source.Field]() }

// MNSNames maps the fields of the MNS client's Config (mns.Config) to the
// config keys they come from. Each call returns a new map.
func MNSNames() mns.Names { return names[mns.Field]() }

// PipelineNames maps the fields of the pipeline's Config
// (bridge.PipelineConfig) that its log lines name to their config keys.
// Each call returns a new map.
func PipelineNames() bridge.Names { return names[bridge.Field]() }
