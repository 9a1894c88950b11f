// Package loopback starts the two services the bridge runs between in the
// benchmark harness (bench) and the soak (bench/soak), in the calling
// process on 127.0.0.1: the IoT platform simulator (iotsim) and the MNS
// emulator (mnsemu), which share one throwaway AccessKey with the bridge.
//
// Not part of the product.
package loopback

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// Config is what differs between the harness and the soak.
type Config struct {
	AccessKeyID, AccessKeySecret string
	// Queue is the MNS queue created at start; others are created as the
	// bridge first sends to them.
	Queue string
	// StoreLimit is how many stored messages the emulator keeps
	// (mnsemu.Config.StoreLimit; 0: all).
	StoreLimit int
	// AMQP opens the simulator's AMQP 1.0 listener beside its STOMP one.
	AMQP bool
}

// Peers are the running simulator and emulator.
type Peers struct {
	Sim    *iotsim.Server
	Emu    *mnsemu.Emulator
	MNSURL string // the emulator's endpoint, for the bridge's mns.endpoint
	CAFile string // the simulator's CA, for the bridge's source.tls.ca_file
	mnsSrv *http.Server
	key    config.Credentials
}

// Start starts the emulator and the simulator and writes the simulator's
// CA certificate into dir. The simulator's group queues are deep: backlogs
// stay on the platform side, as the real platform keeps undelivered
// messages. Close stops both.
func Start(dir string, c Config) (*Peers, error) {
	p := &Peers{key: config.Credentials{AccessKeyID: c.AccessKeyID, AccessKeySecret: config.Secret(c.AccessKeySecret)}, Emu: mnsemu.New(mnsemu.Config{
		AccessKeys: map[string]string{c.AccessKeyID: c.AccessKeySecret},
		Queues:     []string{c.Queue}, AutoCreate: true,
		StoreLimit: c.StoreLimit,
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("MNS emulator: listen: %w", err)
	}
	p.mnsSrv = &http.Server{Handler: p.Emu, ReadHeaderTimeout: 5 * time.Second}
	go p.mnsSrv.Serve(ln)
	p.MNSURL = "http://" + ln.Addr().String()

	sc := iotsim.Config{Secrets: map[string]string{c.AccessKeyID: c.AccessKeySecret}, QueueSize: 2_000_000}
	if c.AMQP {
		sc.AMQPAddr = "127.0.0.1:0"
	}
	if p.Sim, err = iotsim.Start(sc); err != nil {
		p.mnsSrv.Close()
		return nil, fmt.Errorf("IoT platform simulator: %w", err)
	}
	p.CAFile = filepath.Join(dir, "simulator-ca.pem")
	if err := os.WriteFile(p.CAFile, p.Sim.CACertPEM(), 0o600); err != nil {
		p.Close()
		return nil, fmt.Errorf("write the simulator's CA: %w", err)
	}
	return p, nil
}

// BridgeConfig returns the config of a bridge between the peers:
// config.Default() with the source at the simulator's STOMP listener
// (trusting its CA) as clientID of consumer group group with the shared
// AccessKey, MNS at the emulator, every device topic routed to the queue
// telemetry-{productKey} and the rest dead-lettered to
// runDir/dead-letter.jsonl, http.listen at httpAddr and quiet logs (warn,
// no summaries).
func (p *Peers) BridgeConfig(runDir, httpAddr, clientID, group string) config.Config {
	c := config.Default()
	src := &c.Source
	src.Protocol, src.Endpoint = "stomp", p.Sim.Addr()
	src.ClientID, src.ConsumerGroupID, src.SignMethod = clientID, group, "hmacsha1"
	src.Credentials = p.key
	src.TLS = config.TLS{CAFile: p.CAFile, ServerName: "localhost"}
	c.MNS.Endpoint = p.MNSURL
	c.Routes = []config.Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	c.DefaultRoute = config.DefaultRoute{DeadLetter: true}
	c.Delivery.DeadLetter.File = filepath.Join(runDir, "dead-letter.jsonl")
	c.HTTP.Listen = httpAddr
	c.Log.Level, c.Log.SummaryInterval = "warn", 0
	return c
}

// Close stops the simulator and the emulator.
func (p *Peers) Close() {
	p.Sim.Close()
	p.mnsSrv.Close()
}
