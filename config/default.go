package config

import "time"

// Default returns the config with every optional key at its default. It is
// the one place defaults come from: Parse decodes the file over it, so a key
// the file leaves out keeps the value set here. Required keys (endpoints,
// client id, credentials, routes) stay empty.
func Default() Config {
	return Config{
		Source: Source{
			Protocol:        "stomp",
			ConsumerGroupID: "DEFAULT_GROUP",
			SignMethod:      "hmacsha1",
			Connections:     1,
			STOMP: STOMP{
				Destination:   "/topic/#",
				Ack:           "auto",
				HeartBeat:     30 * time.Second,
				CheckInterval: time.Second,
				ReadGather:    0, // off: on an idle machine the pause's timer costs more than it saves (bench/README)
			},
			AMQP: AMQP{
				Address:     "default",
				Credit:      64,
				IdleTimeout: 60 * time.Second,
			},
			DialTimeout:         15 * time.Second,
			ReconnectMinBackoff: time.Second,
			ReconnectMaxBackoff: 60 * time.Second,

			ConnectAttemptsPerMinute: 90,
		},
		MNS: MNS{
			BodyEncoding:     "base64",
			RequestTimeout:   10 * time.Second,
			SignatureVersion: "v2",
			Properties:       MNSProperties{PlatformProperties: []string{}},
		},
		Delivery: Delivery{
			BatchSize:                 16,
			BatchBytes:                65536,
			Linger:                    5 * time.Millisecond,
			MaxInFlight:               8192,
			MaxInFlightBytes:          64 * MiB,
			MaxRequestsPerDestination: 96, // a whole group (64 conns × ~1,000 msgs/s) at 20 ms in batches of 16 needs 80
			MaxRequests:               128,
			Retry: Retry{
				InitialBackoff: 200 * time.Millisecond,
				MaxBackoff:     30 * time.Second,
				MaxAttempts:    0,
				MaxAge:         time.Hour,
			},
			Dedup: Dedup{
				Size:   100000,
				MaxAge: 10 * time.Minute,
				File:   "dedup-window.log",
			},
			DeadLetter: DeadLetter{File: "dead-letter.jsonl", MaxBytes: GiB},
		},
		Spool: Spool{
			// On by default where it is needed: Parse turns it off when
			// the file leaves spool.dir out and the source redelivers by
			// itself (STOMP client-individual, AMQP); see SpoolByDefault.
			Dir:            "spool",
			MaxBytes:       GiB,
			CommitInterval: 10 * time.Millisecond,
		},
		Envelope: "raw",
		HTTP:     HTTP{Listen: "127.0.0.1:9477"},
		Log: Log{
			Level:           "info",
			Format:          "text",
			SummaryInterval: time.Minute,
		},
		// Automatic: one thread runs Go code while the bridge needs less
		// than most of a core (with two its goroutines wake each other
		// across threads), more when it needs more (bench/README).
		Runtime:         Runtime{MaxProcs: 0},
		ShutdownTimeout: 20 * time.Second,
	}
}
