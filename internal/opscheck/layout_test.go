package opscheck

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
)

// layout is a bridge config in the documented deployment layout (the
// image's /etc/iot-mns-bridge and the systemd unit's), pointed at loopback
// peers: the AccessKey id from the environment, the secret from the file
// access_key_secret beside the config, STOMP with ack auto, a spool and the
// HTTP endpoints on 127.0.0.1:Port.
type layout struct {
	Comment     string   // the file's first line, without "# "
	ClientID    string   // source.client_id
	SimAddr     string   // source.endpoint: the IoT simulator (or a proxy in front of it)
	CAFile      string   // source.tls.ca_file
	SourceExtra []string // more source keys, as "key: value"
	EmuAddr     string   // the MNS emulator's host:port
	Port        int      // http.listen's port
	Protocol    string   // source.protocol: "" is stomp (ack auto, as documented), or amqp
	NoSpool     bool     // no spool section (AMQP: the platform redelivers)
}

// yaml renders the layout's config file.
func (l layout) yaml() string {
	var extra strings.Builder
	for _, kv := range l.SourceExtra {
		extra.WriteString("  " + kv + "\n")
	}
	protocol, ack := "stomp", "  stomp:\n    ack: auto\n"
	if l.Protocol != "" && l.Protocol != "stomp" {
		protocol, ack = l.Protocol, ""
	}
	spool := "spool:\n  dir: spool\n"
	if l.NoSpool {
		spool = ""
	}
	return fmt.Sprintf(`# %s
source:
  protocol: %s
  endpoint: %s
  client_id: %s
  consumer_group_id: g1
  credentials:
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret_file: access_key_secret
  tls:
    ca_file: %s
    server_name: localhost
%s%smns:
  endpoint: http://%s
routes:
  - match: /{productKey}/{deviceName}/user/#
    queue: telemetry-{productKey}
default_route:
  queue: unrouted
%shttp:
  listen: 127.0.0.1:%d
log:
  level: info
  summary_interval: 0s
shutdown_timeout: 10s
`, l.Comment, protocol, l.SimAddr, l.ClientID, l.CAFile, ack, extra.String(), l.EmuAddr, spool, l.Port)
}

// publishBurst publishes n messages with the bodies prefix-0 ..
// prefix-(n-1) on /pk1/dev0..9/user/x (routed to telemetry-pk1).
func publishBurst(sim *iotsim.Server, prefix string, n int) {
	for i := 0; i < n; i++ {
		sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/x", i%10), Body: []byte(prefix + "-" + strconv.Itoa(i))})
	}
}

// lost returns the bodies prefix-0 .. prefix-(n-1) that are not in got.
func lost(got map[string]int, prefix string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		if body := prefix + "-" + strconv.Itoa(i); got[body] == 0 {
			out = append(out, body)
		}
	}
	return out
}
