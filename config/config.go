// Package config loads, expands, defaults and validates the iot-mns-bridge
// YAML config file. The key names are the product's contract with its users.
//
// Load is strict (an unknown key is an error with its line), expands ${VAR}
// and ${VAR:-default} from the environment, reads secrets from *_file keys
// (relative to $CREDENTIALS_DIRECTORY when systemd sets it), puts relative
// state paths under $STATE_DIRECTORY when it is set (Config.StateDir: the
// one reader of that variable), fills defaults from Default (the one place
// defaults come from), and Validate reports every problem at once, each with
// its path ("routes[2].queue: ..."). The limits Validate checks are their
// owners': the sources' are package source's, MNS's the MNS client's, the
// route grammar is the bridge's router's (Router compiles it).
package config

import (
	"sync"
	"time"
)

// Config is the whole file.
type Config struct {
	Source          Source        `yaml:"source"`
	MNS             MNS           `yaml:"mns"`
	Routes          []Route       `yaml:"routes"`
	DefaultRoute    DefaultRoute  `yaml:"default_route"`
	Delivery        Delivery      `yaml:"delivery"`
	Spool           Spool         `yaml:"spool"`
	Envelope        string        `yaml:"envelope"` // raw | json
	HTTP            HTTP          `yaml:"http"`
	Log             Log           `yaml:"log"`
	Runtime         Runtime       `yaml:"runtime"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Path is the file the config was loaded from ("" when built in code).
	Path string `yaml:"-"`
	// StateDir is $STATE_DIRECTORY (its first entry) as Parse found it:
	// the directory relative state paths (spool.dir, delivery.dead_letter.file,
	// delivery.dedup.file) were resolved against, and the only one the
	// systemd unit and the image let the bridge write. "" when it was not
	// set (relative state paths are then next to the config file) or the
	// Config was built in code. Parse is the one reader of the variable.
	StateDir string `yaml:"-"`

	// meta holds what Parse learned about the file (key lines) and the
	// cache of secret files. Nil for a Config built in code. A pointer, so
	// copies of a Config share it and fmt prints only an address.
	meta *loadInfo
}

// Source is the IoT platform subscription.
type Source struct {
	Protocol        string      `yaml:"protocol"` // stomp | amqp
	Endpoint        string      `yaml:"endpoint"` // host or host:port
	ClientID        string      `yaml:"client_id"`
	ConsumerGroupID string      `yaml:"consumer_group_id"`
	IotInstanceID   string      `yaml:"iot_instance_id"`
	SignMethod      string      `yaml:"sign_method"`
	Connections     int         `yaml:"connections"`
	Credentials     Credentials `yaml:"credentials"`
	TLS             TLS         `yaml:"tls"`
	STOMP           STOMP       `yaml:"stomp"`
	AMQP            AMQP        `yaml:"amqp"`
	// DialTimeout bounds TCP + TLS + login of one connection attempt.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReconnectMinBackoff and ReconnectMaxBackoff bound the jittered
	// exponential backoff between connection attempts.
	ReconnectMinBackoff time.Duration `yaml:"reconnect_min_backoff"`
	ReconnectMaxBackoff time.Duration `yaml:"reconnect_max_backoff"`
	// ConnectAttemptsPerMinute bounds this bridge's connection attempts in
	// any minute, all its connections together. The platform refuses more
	// than 100 a minute per consumer group across every client, so bridges
	// sharing a group split that budget.
	ConnectAttemptsPerMinute int `yaml:"connect_attempts_per_minute"`
}

// Credentials says where the key triple comes from: Provider pins one
// provider; empty, the keys below select "static" (the values and their
// *_file twins), CredentialsFile selects "file", and nothing at all selects
// the Alibaba Cloud default chain (see EffectiveProvider).
type Credentials struct {
	// Provider is "" or one of credentials.Names.
	Provider            string `yaml:"provider"`
	AccessKeyID         string `yaml:"access_key_id"`
	AccessKeyIDFile     string `yaml:"access_key_id_file"`
	AccessKeySecret     Secret `yaml:"access_key_secret"`
	AccessKeySecretFile string `yaml:"access_key_secret_file"`
	SecurityToken       Secret `yaml:"security_token"`
	SecurityTokenFile   string `yaml:"security_token_file"`
	// CredentialsFile is one JSON file with the whole triple, in the
	// credentials-URI format, replaced atomically by whoever rotates it.
	CredentialsFile string `yaml:"credentials_file"`
}

// Secret is a string that prints as "***" in every fmt verb and in YAML
// output, so a Config can be logged or dumped without leaking it.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "***"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalYAML hides the secret from YAML output.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Reveal returns the secret itself, for signing only.
func (s Secret) Reveal() string { return string(s) }

// TLS is the source's TLS settings.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// STOMP options (source.protocol: stomp).
type STOMP struct {
	Destination   string        `yaml:"destination"`
	Ack           string        `yaml:"ack"` // auto | client-individual
	EncodeBase64  bool          `yaml:"encode_base64"`
	Host          string        `yaml:"host"`
	HeartBeat     time.Duration `yaml:"heartbeat"`
	CheckInterval time.Duration `yaml:"check_interval"`
	// ReadGather is how long a read waits, while messages arrive densely,
	// so that one read serves several (0: each is read at once).
	ReadGather time.Duration `yaml:"read_gather"`
}

// AMQP options (source.protocol: amqp).
type AMQP struct {
	Address     string        `yaml:"address"`
	Credit      int           `yaml:"credit"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Vhost is the AMQP open hostname; "" uses the endpoint host. RabbitMQ
	// selects a vhost with "vhost:NAME"; the platform ignores it.
	Vhost string `yaml:"vhost"`
}

// MNS is where messages go.
type MNS struct {
	Endpoint string `yaml:"endpoint"`
	// Credentials default to the source's AccessKey pair when empty.
	Credentials    Credentials   `yaml:"credentials"`
	BodyEncoding   string        `yaml:"body_encoding"` // base64 | raw
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// SignatureVersion is v2 (HMAC-SHA1, the public default) or v4
	// (MNS4-HMAC-SHA256).
	SignatureVersion string `yaml:"signature_version"`
	// Region is the region V4 signs for; "" derives it from Endpoint when
	// that has the documented form.
	Region string `yaml:"region"`
	// Properties attaches the platform's metadata as MNS message properties.
	Properties MNSProperties `yaml:"properties"`
}

// MNSProperties says which MNS message properties every message gets from
// the platform's metadata (routes add their own with routes[].properties).
type MNSProperties struct {
	// Platform attaches topic, messageId, generateTime (NUMBER), productKey
	// and deviceName as user properties.
	Platform bool `yaml:"platform"`
	// PlatformProperties names properties of the platform message (STOMP
	// headers, AMQP application properties) to copy as user properties.
	PlatformProperties []string `yaml:"platform_properties"`
	// Prefix goes before the names above, e.g. "iot.".
	Prefix string `yaml:"prefix"`
	// Trace passes traceparent, tracestate and baggage on as MNS system
	// properties.
	Trace bool `yaml:"trace"`
}

// Route sends messages whose topic matches Match to Queue or Topic. Exactly
// one of Queue and Topic is set; both may be templates over the named
// segments of Match. MessageTag applies to topics only.
type Route struct {
	Match      string `yaml:"match"`
	Queue      string `yaml:"queue"`
	Topic      string `yaml:"topic"`
	MessageTag string `yaml:"message_tag"`
	// MessageGroupID is the MNS MessageGroupId template (FIFO queues and
	// topics), e.g. "{deviceName}"; "" sends none.
	MessageGroupID string `yaml:"message_group_id"`
	// Properties are MNS user properties: name to value template.
	Properties map[string]string `yaml:"properties"`
}

// DefaultRoute takes the messages no route matches: to a queue or topic, or
// to the dead-letter target when DeadLetter is true.
type DefaultRoute struct {
	Queue          string            `yaml:"queue"`
	Topic          string            `yaml:"topic"`
	MessageTag     string            `yaml:"message_tag"`
	MessageGroupID string            `yaml:"message_group_id"`
	Properties     map[string]string `yaml:"properties"`
	DeadLetter     bool              `yaml:"dead_letter"`
}

// Delivery tunes batching, flow control, retries, de-duplication and the
// dead-letter target.
type Delivery struct {
	// BatchSize is the most messages in one MNS batch request (1..16).
	BatchSize int `yaml:"batch_size"`
	// BatchBytes is the most body bytes in one batch (up to 65536).
	BatchBytes int `yaml:"batch_bytes"`
	// Linger is how long a partly filled batch waits for more messages.
	Linger time.Duration `yaml:"linger"`
	// MaxInFlight bounds the messages the pipeline holds at once; when it is
	// reached nothing more enters the pipeline: without the spool the source
	// stops reading (backpressure), with it the source goes on into the
	// spool until Spool.MaxBytes.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxInFlightBytes bounds the bytes the pipeline holds at once (bodies,
	// topics, ids and properties, plus about 0.5 KB per message); whichever
	// bound is reached first stops the pipeline's intake (as MaxInFlight).
	MaxInFlightBytes Size `yaml:"max_in_flight_bytes"`
	// MaxRequestsPerDestination and MaxRequests bound concurrent MNS requests.
	MaxRequestsPerDestination int        `yaml:"max_requests_per_destination"`
	MaxRequests               int        `yaml:"max_requests"`
	Retry                     Retry      `yaml:"retry"`
	Dedup                     Dedup      `yaml:"dedup"`
	DeadLetter                DeadLetter `yaml:"dead_letter"`
}

// Retry is the backoff for retryable MNS failures.
type Retry struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// MaxAttempts is the most sends of one message; 0 means no limit
	// (MaxAge still applies).
	MaxAttempts int `yaml:"max_attempts"`
	// MaxAge is how long a message may be retried before it is
	// dead-lettered; 0 means no limit.
	MaxAge time.Duration `yaml:"max_age"`
}

// Dedup is the window of recent message ids used to suppress redeliveries.
type Dedup struct {
	Size   int           `yaml:"size"` // 0 disables
	MaxAge time.Duration `yaml:"max_age"`
	// File journals the window so that it survives a restart, even a kill
	// -9: the redeliveries of messages MNS already has are suppressed after
	// it too. "" keeps the window in memory only.
	File string `yaml:"file"`
}

// DeadLetter says where messages go that cannot be delivered: a local JSONL
// file, an MNS queue, or both.
type DeadLetter struct {
	File  string `yaml:"file"`
	Queue string `yaml:"queue"`
	// MaxBytes bounds the file's size: when it is reached the bridge holds
	// the messages (backpressure) instead of writing, so the disk never
	// fills and nothing is lost.
	MaxBytes Size `yaml:"max_bytes"`
}

// Spool makes messages durable on local disk as they arrive.
//
// With STOMP ack auto the platform settles a message when it sends it, so
// the spool is what keeps it across an MNS outage and a restart: Dir is on
// ("spool", under $STATE_DIRECTORY) unless the file sets it, and an explicit
// `dir: ""` turns it off. With client-individual or AMQP the platform
// redelivers by itself, and the spool is on only when the file sets Dir.
type Spool struct {
	Dir      string `yaml:"dir"` // "" disables the spool
	MaxBytes Size   `yaml:"max_bytes"`
	// CommitInterval is the group-commit linger before an fsync; 0 commits
	// at once.
	CommitInterval time.Duration `yaml:"commit_interval"`
}

// Size is a byte count written as a number or with a unit ("64MiB", "1GB").
type Size int64

// HTTP is the metrics and health listener.
type HTTP struct {
	Listen string `yaml:"listen"` // "" disables
	// WebConfigFile is a web config in the Prometheus exporter-toolkit
	// format (TLS, basic auth) protecting /metrics and /status; "" for none.
	WebConfigFile string `yaml:"web_config_file"`
}

// Log settings.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
	// SummaryInterval is the period of the one-line summary; 0 disables.
	SummaryInterval time.Duration `yaml:"summary_interval"`
}

// Runtime tunes the Go runtime the bridge runs on.
type Runtime struct {
	// MaxProcs caps GOMAXPROCS, the threads that run Go code at once, at
	// the lower of it and what Go chooses (the CPUs, or the cgroup's CPU
	// limit). 0 is automatic: without the spool 1 while the bridge uses
	// less than 70% of a core, doubled (up to Go's choice) when it uses
	// more, halved again after 30 s of little use; with the spool Go's
	// choice. GOMAXPROCS in the environment wins.
	MaxProcs int `yaml:"max_procs"`
}

// SpoolByDefault reports whether the source needs the spool to lose nothing
// across MNS outages and restarts: STOMP with ack auto, where the platform
// never redelivers.
func (s Source) SpoolByDefault() bool { return s.Protocol == "stomp" && s.STOMP.Ack == "auto" }

// SpoolDirIsDefault reports whether Spool.Dir is the default one that
// SpoolByDefault turned on, not a dir the file sets: an error opening it
// then tells the operator how to choose another or turn the spool off.
// False for a Config built in code.
func (c *Config) SpoolDirIsDefault() bool {
	return c.meta != nil && c.Spool.Dir != "" && !c.written("spool.dir")
}

// loadInfo is the state behind Config.meta. Safe for concurrent use.
type loadInfo struct {
	lines map[string]int // key path → 1-based line; read-only after Parse
	// failed holds the key paths whose value Parse rejected before
	// validation (kept at their default); read-only after Parse.
	failed map[string]bool

	mu    sync.Mutex
	files map[string]secretFile // secret file path → last read
}
