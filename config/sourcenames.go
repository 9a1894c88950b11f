package config

import "github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"

// SourceNames maps every field of a source's Config (stompsrc.Config,
// amqpsrc.Config) that comes from a config key to that key. It is the one
// place that knows both: the protocol packages report and advise in terms
// of their own fields (source.FieldError, source.Names) and the wiring
// hands them these names, so that every error and log line of a source
// names the key the operator changes. Each call returns a new map.
func SourceNames() source.Names {
	return source.Names{
		source.FieldEndpoint:           "source.endpoint",
		source.FieldCAFile:             "source.tls.ca_file",
		source.FieldServerName:         "source.tls.server_name",
		source.FieldInsecureSkipVerify: "source.tls.insecure_skip_verify",
		source.FieldParams:             "source.credentials",
		source.FieldConsumerGroupID:    "source.consumer_group_id",
		source.FieldIotInstanceID:      "source.iot_instance_id",
		source.FieldSignMethod:         "source.sign_method",
		source.FieldConnections:        "source.connections",
		source.FieldDialTimeout:        "source.dial_timeout",
		source.FieldMinBackoff:         "source.reconnect_min_backoff",
		source.FieldMaxBackoff:         "source.reconnect_max_backoff",
		source.FieldLimiter:            "source.connect_attempts_per_minute",

		source.FieldDestination:   "source.stomp.destination",
		source.FieldAck:           "source.stomp.ack",
		source.FieldHeartBeat:     "source.stomp.heartbeat",
		source.FieldCheckInterval: "source.stomp.check_interval",

		source.FieldAddress:     "source.amqp.address",
		source.FieldCredit:      "source.amqp.credit",
		source.FieldIdleTimeout: "source.amqp.idle_timeout",
		source.FieldVhost:       "source.amqp.vhost",
		// AttachTimeout and SettleTimeout are the AMQP source's own, not
		// config keys.
	}
}
