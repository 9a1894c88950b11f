package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// validConfig is a valid config built in code (no file, no lines).
func validConfig() Config {
	c := Default()
	c.Source.Endpoint = "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com"
	c.Source.ClientID = "edge-gw-01"
	c.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecret: testSecret}
	c.MNS.Endpoint = "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com"
	c.Routes = []Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	return c
}

// TestValidate changes one thing of a valid config; want "" means it stays
// valid (boundaries), else the error must contain want.
func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"endpoint with port", func(c *Config) { c.Source.Endpoint = "127.0.0.1:61613" }, ""},
		{"endpoint ipv6", func(c *Config) { c.Source.Endpoint = "[::1]:61613" }, ""},
		{"endpoint empty", func(c *Config) { c.Source.Endpoint = "" }, "source.endpoint: required"},
		{"endpoint port 0", func(c *Config) { c.Source.Endpoint = "h:0" }, `source.endpoint: "h:0" has port "0"`},
		{"endpoint path", func(c *Config) { c.Source.Endpoint = "h/x" }, "must be host or host:port, with no path"},
		{"endpoint no host", func(c *Config) { c.Source.Endpoint = ":5671" }, "has no host"},
		{"stomp on the amqp port", func(c *Config) { c.Source.Endpoint = "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5671" },
			`source.endpoint: "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5671" has port 5671, where the platform serves amqp, but source.protocol is stomp (served on 61614): write the port 61614, or leave the port out`},
		{"amqp on the stomp port", func(c *Config) {
			c.Source.Protocol, c.Source.Endpoint = "amqp", "1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com:61614"
		}, "has port 61614, where the platform serves stomp, but source.protocol is amqp (served on 5671)"},
		{"stomp on its own port", func(c *Config) { c.Source.Endpoint = "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:61614" }, ""},
		{"amqp without tls on the platform", func(c *Config) {
			c.Source.Protocol, c.Source.Endpoint = "amqp", "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5672"
		}, `source.endpoint: "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5672" has port 5672, which the platform does not serve: ` +
			`it serves the subscription over TLS only, AMQP 1.0 on 5671 and STOMP on 61614 (5672 is AMQP without TLS): write the port 5671, or leave the port out`},
		{"mqtt port on the platform", func(c *Config) { c.Source.Endpoint = "1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com:8883" },
			`has port 8883, which the platform does not serve: it serves the subscription over TLS only, AMQP 1.0 on 5671 and STOMP on 61614: write the port 61614, or leave the port out`},
		{"other port off the platform", func(c *Config) { c.Source.Endpoint = "nlb-walk.cn-shanghai.nlb.aliyuncs.com:5672" }, ""},
		{"amqp on its own port", func(c *Config) {
			c.Source.Protocol, c.Source.Endpoint = "amqp", "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5671"
		}, ""},
		{"mns host as source", func(c *Config) { c.Source.Endpoint = "1234567890123456.mns.cn-hangzhou.aliyuncs.com" },
			`source.endpoint: "1234567890123456.mns.cn-hangzhou.aliyuncs.com" is an MNS endpoint (it belongs in mns.endpoint, with https://): write the subscription endpoint from the IoT platform console`},
		{"mns host and port as source", func(c *Config) { c.Source.Endpoint = "1234567890123456.mns.cn-hangzhou.aliyuncs.com:443" }, "is an MNS endpoint"},
		{"platform host as mns", func(c *Config) { c.MNS.Endpoint = "https://iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com" },
			`mns.endpoint: "https://iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com" is the IoT platform's subscription endpoint (it belongs in source.endpoint, without a scheme): write the MNS endpoint from the MNS console`},
		{"public platform host as mns", func(c *Config) { c.MNS.Endpoint = "https://1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com" }, "is the IoT platform's subscription endpoint"},
		{"mns on another port", func(c *Config) { c.MNS.Endpoint = "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com:61614" },
			`mns.endpoint: "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com:61614" has port 61614: MNS serves http on 80 and https on 443; leave the port out`},
		{"mns https on 80", func(c *Config) { c.MNS.Endpoint = "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com:80" }, "has port 80: MNS serves http on 80 and https on 443"},
		{"mns https on 443", func(c *Config) { c.MNS.Endpoint = "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com:443" }, ""},
		{"mns http on 80", func(c *Config) { c.MNS.Endpoint = "http://1234567890123456.mns.cn-hangzhou-internal.aliyuncs.com:80" }, ""},
		{"mns emulator port", func(c *Config) { c.MNS.Endpoint = "http://127.0.0.1:61614" }, ""},
		{"amqp port off the platform", func(c *Config) { c.Source.Endpoint = "127.0.0.1:5671" }, ""},
		{"client id 64", func(c *Config) { c.Source.ClientID = long(64) }, ""},
		{"client id empty", func(c *Config) { c.Source.ClientID = "" }, "source.client_id: required"},
		{"client id comma", func(c *Config) { c.Source.ClientID = "a,b" }, `source.client_id: "a,b" must not contain ","`},
		{"group empty", func(c *Config) { c.Source.ConsumerGroupID = "" }, "source.consumer_group_id: required"},
		{"instance with =", func(c *Config) { c.Source.IotInstanceID = "a=b" }, "source.iot_instance_id:"},
		{"sign method case", func(c *Config) { c.Source.SignMethod = "HmacSHA256" }, ""},
		{"sign method", func(c *Config) { c.Source.SignMethod = "sha1" }, `source.sign_method: "sha1" is not supported`},
		{"connections 64", func(c *Config) { c.Source.Connections = 64 }, ""},
		{"connections 0", func(c *Config) { c.Source.Connections = 0 }, "source.connections: must be 1 to 64, got 0"},
		{"connections 65", func(c *Config) { c.Source.Connections = 65 }, "source.connections: must be 1 to 64, got 65: the platform allows 64 clients per consumer group"},
		{"no secret", func(c *Config) { c.Source.Credentials.AccessKeySecret = "" }, "source.credentials.access_key_secret: required (or access_key_secret_file)"},
		{"missing ca file", func(c *Config) { c.Source.TLS.CAFile = "/nonexistent/ca.pem" }, "source.tls.ca_file: stat /nonexistent/ca.pem"},
		{"ack", func(c *Config) { c.Source.STOMP.Ack = "client" }, `source.stomp.ack: "client" is not supported: use auto or client-individual`},
		{"ack client-individual", func(c *Config) { c.Source.STOMP.Ack = "client-individual" }, ""},
		{"destination", func(c *Config) { c.Source.STOMP.Destination = "" }, "source.stomp.destination: required"},
		{"heartbeat negative", func(c *Config) { c.Source.STOMP.HeartBeat = -time.Second }, "source.stomp.heartbeat: must not be negative, got -1s (0 turns heart-beats off)"},
		{"heartbeat 1ms", func(c *Config) { c.Source.STOMP.HeartBeat = time.Millisecond }, ""},
		{"heartbeat 999us", func(c *Config) { c.Source.STOMP.HeartBeat = 999 * time.Microsecond },
			"source.stomp.heartbeat: must be 0 (off) or at least 1ms, got 999µs: the heart-beat header counts milliseconds"},
		{"heartbeat off", func(c *Config) { c.Source.STOMP.HeartBeat = 0 }, ""},
		{"check interval", func(c *Config) { c.Source.STOMP.CheckInterval = 0 }, "source.stomp.check_interval: must be more than 0"},
		{"read gather off", func(c *Config) { c.Source.STOMP.ReadGather = 0 }, ""},
		{"read gather negative", func(c *Config) { c.Source.STOMP.ReadGather = -time.Millisecond }, "source.stomp.read_gather: must be 0 to 50ms, got -1ms"},
		{"read gather 51ms", func(c *Config) { c.Source.STOMP.ReadGather = 51 * time.Millisecond }, "source.stomp.read_gather: must be 0 to 50ms, got 51ms"},
		{"idle 60s", func(c *Config) { c.Source.AMQP.IdleTimeout = 60 * time.Second }, ""},
		{"idle 600s", func(c *Config) { c.Source.AMQP.IdleTimeout = 600 * time.Second }, ""},
		{"idle 601s", func(c *Config) { c.Source.AMQP.IdleTimeout = 601 * time.Second }, "source.amqp.idle_timeout: must be 60s to 600s, got 10m1s"},
		{"credit", func(c *Config) { c.Source.AMQP.Credit = 0 }, "source.amqp.credit: must be 1 to 10000, got 0"},
		{"credit 10000", func(c *Config) { c.Source.AMQP.Credit = 10000 }, ""},
		{"credit 10001", func(c *Config) { c.Source.AMQP.Credit = 10001 }, "source.amqp.credit: must be 1 to 10000, got 10001"},
		{"dial timeout", func(c *Config) { c.Source.DialTimeout = 0 }, "source.dial_timeout: must be more than 0"},
		{"backoff order", func(c *Config) { c.Source.ReconnectMaxBackoff = time.Millisecond }, "source.reconnect_max_backoff: 1ms is less than reconnect_min_backoff 1s"},
		{"attempts 45", func(c *Config) { c.Source.ConnectAttemptsPerMinute = 45 }, ""},
		{"attempts 0", func(c *Config) { c.Source.ConnectAttemptsPerMinute = 0 }, "source.connect_attempts_per_minute: must be 1 to 100, got 0"},
		{"attempts 101", func(c *Config) { c.Source.ConnectAttemptsPerMinute = 101 }, "source.connect_attempts_per_minute: must be 1 to 100, got 101"},
		{"mns endpoint http", func(c *Config) { c.MNS.Endpoint = "http://127.0.0.1:9000" }, ""},
		{"mns endpoint slash", func(c *Config) { c.MNS.Endpoint = "http://127.0.0.1:9000/" }, ""},
		{"mns endpoint empty", func(c *Config) { c.MNS.Endpoint = "" }, "mns.endpoint: required"},
		{"mns endpoint scheme", func(c *Config) { c.MNS.Endpoint = "ftp://h" }, `mns.endpoint: "ftp://h" must be http(s)://host[:port]`},
		{"mns endpoint query", func(c *Config) { c.MNS.Endpoint = "https://h?x=1" }, "must have no path or query"},
		{"mns endpoint port", func(c *Config) { c.MNS.Endpoint = "https://h:99999" }, `has port "99999"`},
		{"mns own credentials", func(c *Config) { c.MNS.Credentials = Credentials{AccessKeyID: "LTAImns"} }, "mns.credentials.access_key_secret: required"},
		{"body encoding", func(c *Config) { c.MNS.BodyEncoding = "hex" }, `mns.body_encoding: "hex" is not supported: use base64 or raw`},
		{"request timeout", func(c *Config) { c.MNS.RequestTimeout = -1 }, "mns.request_timeout: must be more than 0"},
		{"signature version", func(c *Config) { c.MNS.SignatureVersion = "v3" }, `mns.signature_version: "v3" is not supported: use v2 or v4`},
		{"v4 region from endpoint", func(c *Config) {
			c.MNS.SignatureVersion, c.MNS.Endpoint = "v4", "http://1234.mns.cn-hangzhou-internal.aliyuncs.com"
		}, ""},
		{"v4 loopback needs region", func(c *Config) { c.MNS.SignatureVersion, c.MNS.Endpoint = "v4", "http://127.0.0.1:9000" }, "mns.region: required with signature_version v4"},
		{"v4 loopback with region", func(c *Config) {
			c.MNS.SignatureVersion, c.MNS.Endpoint, c.MNS.Region = "v4", "http://127.0.0.1:9000", "cn-hangzhou"
		}, ""},
		{"properties prefix", func(c *Config) { c.MNS.Properties.Prefix = "iot." }, ""},
		{"properties bad prefix", func(c *Config) { c.MNS.Properties.Prefix = "iot/" }, `mns.properties.prefix: property name "iot/topic" has '/'`},
		{"properties bad platform name", func(c *Config) { c.MNS.Properties.PlatformProperties = []string{"a..b"} }, `mns.properties.platform_properties: property name "a..b" contains ".."`},
		{"v4 region of another endpoint", func(c *Config) { c.MNS.SignatureVersion, c.MNS.Region = "v4", "cn-shanghai" },
			`mns.region: "cn-shanghai", but mns.endpoint "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com" is in region cn-hangzhou: signature_version v4 signs for mns.region and MNS refuses a signature for another region; remove mns.region`},
		{"v4 region of the endpoint", func(c *Config) {
			c.MNS.SignatureVersion, c.MNS.Region, c.MNS.Endpoint = "v4", "cn-hangzhou", "http://1234.mns.cn-hangzhou-internal-vpc.aliyuncs.com"
		}, ""},
		{"region malformed", func(c *Config) { c.MNS.Region = "CN_Hangzhou" }, `mns.region: "CN_Hangzhou" is not a region id`},
		{"route neither", func(c *Config) { c.Routes[0].Queue = "" }, "routes[0]: set queue or topic"},
		{"route topic with tag", func(c *Config) { c.Routes[0] = Route{Match: "/{pk}/#", Topic: "t-{pk}", MessageTag: "{pk}"} }, ""},
		{"route catch all", func(c *Config) { c.Routes[0].Match = "/#"; c.Routes[0].Queue = "all" }, ""},
		{"route match empty", func(c *Config) { c.Routes[0].Match = "" }, "routes[0].match: required"},
		{"route pattern twice", func(c *Config) { c.Routes = append(c.Routes, Route{Match: c.Routes[0].Match, Queue: "other"}) },
			`routes[1].match: "/{productKey}/{deviceName}/user/#" is the pattern of routes[0] too: the first match wins, so this route never matches`},
		{"route empty segment", func(c *Config) { c.Routes[0].Match = "/a//b" }, `routes[0].match: "/a//b" has an empty segment`},
		{"route trailing slash", func(c *Config) { c.Routes[0].Match = "/a/" }, "has an empty segment"},
		{"route mixed segment", func(c *Config) { c.Routes[0].Match = "/a+/b" }, `segment "a+" mixes text with a wildcard`},
		{"route bad name", func(c *Config) { c.Routes[0].Match = "/{a-b}/c" }, `segment "{a-b}" is not a name`},
		{"queue starts with dash", func(c *Config) { c.Routes[0].Queue = "-q" }, `routes[0].queue: "-q" is not a valid MNS queue name: it must start with a letter or digit`},
		{"queue 120", func(c *Config) { c.Routes[0].Queue = long(120) }, ""},
		{"queue 121", func(c *Config) { c.Routes[0].Queue = long(121) }, "it is 121 characters long, the limit is 120"},
		{"queue unbalanced", func(c *Config) { c.Routes[0].Queue = "q-{productKey" }, `routes[0].queue: "q-{productKey" has a '{' without its '}'`},
		{"queue stray brace", func(c *Config) { c.Routes[0].Queue = "q}" }, "has a '}' without its '{'"},
		{"queue dot", func(c *Config) { c.Routes[0].Queue = "q.{productKey}" }, `routes[0].queue: template "q.{productKey}" can never render a valid MNS queue name: letters, digits and '-' only`},
		{"topic underscore", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "a_b"} }, `routes[0].topic: "a_b" is not a valid MNS topic name`},
		{"tag 16", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "t", MessageTag: long(16)} }, ""},
		{"tag 17", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "t", MessageTag: long(17)} }, "routes[0].message_tag: \"" + long(17) + "\" is not a valid MNS message tag: it is 17 characters long, the limit is 16"},
		{"tag 16 runes", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "t", MessageTag: strings.Repeat("温", 16)} }, ""},
		{"tag control", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "t", MessageTag: "a\tb"} }, `routes[0].message_tag: "a\tb" is not a valid MNS message tag: it must not contain control characters`},
		{"name digit first", func(c *Config) { c.Routes[0] = Route{Match: "/{1a}/#", Queue: "q"} }, `segment "{1a}" is not a name`},
		{"16 named segments", func(c *Config) { c.Routes[0] = Route{Match: namedPattern(16), Queue: "q"} }, ""},
		{"17 named segments", func(c *Config) { c.Routes[0] = Route{Match: namedPattern(17), Queue: "q"} }, "has more than 16 named segments"},
		{"tag unknown name", func(c *Config) { c.Routes[0] = Route{Match: "/#", Topic: "t", MessageTag: "{pk}"} }, `routes[0].message_tag: template uses {pk} but match "/#" has no such segment`},
		{"no routes, no default", func(c *Config) { c.Routes = nil }, "routes: none set and no default_route"},
		{"only default route", func(c *Config) { c.Routes = nil; c.DefaultRoute.Topic = "all" }, ""},
		{"default dead letter", func(c *Config) { c.DefaultRoute.DeadLetter = true }, ""},
		{"default queue and topic", func(c *Config) { c.DefaultRoute = DefaultRoute{Queue: "a", Topic: "b"} }, "default_route: set only one of queue, topic and dead_letter: true"},
		{"default template", func(c *Config) { c.DefaultRoute.Queue = "u-{productKey}" }, "default_route.queue: template uses {productKey} but the default route has no pattern"},
		{"default bad name", func(c *Config) { c.DefaultRoute.Queue = "u_1" }, `default_route.queue: "u_1" is not a valid MNS queue name`},
		{"default tag on queue", func(c *Config) { c.DefaultRoute = DefaultRoute{Queue: "u", MessageTag: "x"} }, "default_route.message_tag: applies to topics only"},
		{"batch size 16", func(c *Config) { c.Delivery.BatchSize = 16 }, ""},
		{"batch size 0", func(c *Config) { c.Delivery.BatchSize = 0 }, "delivery.batch_size: must be 1 to 16, got 0"},
		{"batch bytes", func(c *Config) { c.Delivery.BatchBytes = 65537 }, "delivery.batch_bytes: must be 1 to 65536, got 65537"},
		{"linger 0", func(c *Config) { c.Delivery.Linger = 0 }, ""},
		{"linger negative", func(c *Config) { c.Delivery.Linger = -time.Millisecond }, "delivery.linger: must not be negative"},
		{"in flight", func(c *Config) { c.Delivery.MaxInFlight = 0 }, "delivery.max_in_flight: must be at least 1"},
		{"dead-letter bytes", func(c *Config) { c.Delivery.DeadLetter.MaxBytes = 1000 }, "delivery.dead_letter.max_bytes: 1000 is less than 1MiB: a few large dead letters would fill it; use at least 1MiB (default 1GiB)"},
		{"in flight bytes", func(c *Config) { c.Delivery.MaxInFlightBytes = 64*KiB - 1 }, "delivery.max_in_flight_bytes: 65535 is less than the largest message MNS accepts (65536 bytes, 64KiB): the pipeline could not hold one; use at least 64KiB (default 64MiB)"},
		{"requests per destination", func(c *Config) { c.Delivery.MaxRequestsPerDestination = 0 }, "delivery.max_requests_per_destination: must be at least 1"},
		{"requests", func(c *Config) { c.Delivery.MaxRequests = 0 }, "delivery.max_requests: must be at least 1"},
		{"retry initial", func(c *Config) { c.Delivery.Retry.InitialBackoff = 0 }, "delivery.retry.initial_backoff: must be more than 0"},
		{"retry order", func(c *Config) { c.Delivery.Retry.MaxBackoff = time.Millisecond }, "delivery.retry.max_backoff: 1ms is less than initial_backoff 200ms"},
		{"retry attempts", func(c *Config) { c.Delivery.Retry.MaxAttempts = -1 }, "delivery.retry.max_attempts: must be at least 0"},
		{"retry age", func(c *Config) { c.Delivery.Retry.MaxAge = -1 }, "delivery.retry.max_age: must not be negative"},
		{"dedup off", func(c *Config) { c.Delivery.Dedup = Dedup{} }, ""},
		{"dedup 10 million", func(c *Config) { c.Delivery.Dedup.Size = 10_000_000 }, ""},
		{"dedup too large", func(c *Config) { c.Delivery.Dedup.Size = 10_000_001 },
			"delivery.dedup.size: must be 0 (off) to 10000000, got 10000001: the window is allocated whole at start, about 45 bytes an id, so it would take 508 MB of memory"},
		{"dedup negative", func(c *Config) { c.Delivery.Dedup.Size = -1 }, "delivery.dedup.size: must be 0 (off) to 10000000, got -1"},
		{"dedup age", func(c *Config) { c.Delivery.Dedup.MaxAge = 0 }, "delivery.dedup.max_age: must be more than 0"},
		{"dead letter queue only", func(c *Config) { c.Delivery.DeadLetter = DeadLetter{Queue: "dlq"} }, ""},
		{"dead letter none", func(c *Config) { c.Delivery.DeadLetter = DeadLetter{} }, "delivery.dead_letter: set file, queue or both"},
		{"dead letter queue is the default route's", func(c *Config) { c.DefaultRoute.Queue, c.Delivery.DeadLetter.Queue = "unrouted", "unrouted" },
			`delivery.dead_letter.queue: "unrouted" is also the queue of default_route: dead letters would mix with the messages; use a queue of its own`},
		{"dead letter queue name", func(c *Config) { c.Delivery.DeadLetter.Queue = "dl_q" }, `delivery.dead_letter.queue: "dl_q" is not a valid MNS queue name`},
		{"spool size", func(c *Config) { c.Spool = Spool{Dir: "/var/lib/x"} }, "spool.max_bytes: must be more than 0 when spool.dir is set"},
		{"spool off size 0", func(c *Config) { c.Spool.Dir, c.Spool.MaxBytes = "", 0 }, ""},
		{"auto without spool or dead-letter file", func(c *Config) {
			c.Spool.Dir, c.Delivery.DeadLetter = "", DeadLetter{Queue: "dl"}
		}, "delivery.dead_letter.file: is empty while source.stomp.ack is auto and spool.dir is empty"},
		{"auto with spool, dead-letter queue only", func(c *Config) { c.Delivery.DeadLetter = DeadLetter{Queue: "dl"} }, ""},
		{"envelope", func(c *Config) { c.Envelope = "xml" }, `envelope: "xml" is not supported: use raw or json`},
		{"listen any", func(c *Config) { c.HTTP.Listen = ":0" }, ""},
		{"listen off", func(c *Config) { c.HTTP.Listen = "" }, ""},
		{"listen port only", func(c *Config) { c.HTTP.Listen = "9477" }, `http.listen: "9477" must be host:port`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: "xml" is not supported: use text or json`},
		{"summary", func(c *Config) { c.Log.SummaryInterval = -1 }, "log.summary_interval: must not be negative"},
		{"shutdown", func(c *Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout: must be more than 0"},
		{"max procs negative", func(c *Config) { c.Runtime.MaxProcs = -1 }, "runtime.max_procs: must not be negative, got -1"},
		{"max procs Go's choice", func(c *Config) { c.Runtime.MaxProcs = 0 }, ""},
		{"max procs 4", func(c *Config) { c.Runtime.MaxProcs = 4 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			validateWants(t, &c, tc.want)
		})
	}
}

// validateWants validates c and fails the test unless the error holds want
// ("": unless c is valid); it returns the error.
func validateWants(t *testing.T, c *Config, want string) error {
	t.Helper()
	err := c.Validate()
	switch {
	case want == "" && err != nil:
		t.Fatalf("Validate() = %v, want nil", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("Validate() = %v, want %q", err, want)
	}
	return err
}

func TestAddressDefaultPorts(t *testing.T) {
	for _, tc := range []struct{ protocol, endpoint, want string }{
		{"stomp", "h.example.com", "h.example.com:61614"},
		{"amqp", "h.example.com", "h.example.com:5671"},
		{"amqp", "h.example.com:5672", "h.example.com:5672"},
		{"stomp", "::1", ""}, // ambiguous: IPv6 needs brackets
		{"stomp", "[::1]:61613", "[::1]:61613"},
	} {
		s := Source{Protocol: tc.protocol, Endpoint: tc.endpoint}
		got, err := s.Address()
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("Address(%s, %q) = %q, %v; want %q", tc.protocol, tc.endpoint, got, err, tc.want)
		}
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "c.yaml", Line: 3, Path: "a.b", Reason: "bad"}, "c.yaml:3: a.b: bad"},
		{FieldError{File: "c.yaml", Path: "a.b", Reason: "bad"}, "c.yaml: a.b: bad"},
		{FieldError{Line: 3, Path: "a.b", Reason: "bad"}, "line 3: a.b: bad"},
		{FieldError{Path: "a.b", Reason: "bad"}, "a.b: bad"},
		{FieldError{File: "c.yaml", Line: 3, Reason: "bad"}, "c.yaml:3: bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

// namedPattern returns "/{s0}/{s1}/..." with n named segments.
func namedPattern(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "/{s%d}", i)
	}
	return b.String()
}

// TestCAFileNotPEMSaysWhatItHolds: a CA file without a PEM certificate says
// what it holds instead, and what to do with it: a certificate in DER (the
// form a browser or Windows exports) is to be converted, a PEM key or
// request is not the CA's certificate. Before, each was asked 'is it the
// CA bundle, in PEM rather than DER?', a PEM key too (walked by hand).
func TestCAFileNotPEMSaysWhatItHolds(t *testing.T) {
	bundle, err := certgen.New("localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want string // PATH is the file's path
	}{
		{"der", bundle.CA.Raw, "PATH holds a certificate in DER, not PEM: convert it (openssl x509 -inform der -in PATH -out ca.pem) and name the PEM file"},
		{"key", bundle.KeyPEM, "PATH holds PEM blocks (PRIVATE KEY) but no certificate (-----BEGIN CERTIFICATE-----): name the file of the CA's certificate"},
		{"text", []byte("not a certificate\n"), "PATH holds no PEM certificate (-----BEGIN CERTIFICATE-----): is it the CA bundle?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testfile.Write(t, dir, tc.name, string(tc.data))
			if err, want := checkCAFile(path), strings.ReplaceAll(tc.want, "PATH", path); err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
	if err := checkCAFile(testfile.Write(t, dir, "ca.pem", string(bundle.CAPEM))); err != nil {
		t.Errorf("the CA in PEM: %v", err)
	}
}
