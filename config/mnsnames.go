package config

import "github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"

// MNSNames maps the fields of the MNS client's Config (mns.Config) to the
// config keys they come from, as SourceNames does for the sources: the
// client's errors and hints speak of its own fields and the wiring hands it
// these names, so that the operator reads the key to change. The AccessKey
// fields name where the key comes from: mns.credentials, or
// source.credentials when that is empty. Each call returns a new map.
func MNSNames() mns.Names {
	return mns.Names{
		mns.FieldEndpoint:         "mns.endpoint",
		mns.FieldAccessKeyID:      "mns.credentials.access_key_id, or source.credentials when mns.credentials is empty",
		mns.FieldAccessKeySecret:  "mns.credentials.access_key_secret (source.credentials when mns.credentials is empty)",
		mns.FieldBodyEncoding:     "mns.body_encoding",
		mns.FieldTimeout:          "mns.request_timeout",
		mns.FieldMaxConns:         "delivery.max_requests",
		mns.FieldSignatureVersion: "mns.signature_version",
		mns.FieldRegion:           "mns.region",
	}
}
