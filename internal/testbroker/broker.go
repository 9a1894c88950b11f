// Package testbroker gives integration tests a real RabbitMQ 3.x broker that
// speaks STOMP 1.2 and AMQP 1.0 over TLS and checks IoT Platform style signed
// logins through the aksign-auth service (package aksignauth).
//
// The broker is started and stopped outside the tests by scripts/rabbitmq.sh
// (scripts/test.sh does it around `go test`). RabbitMQ(t) finds it through the
// RABBITMQ_* environment variables or the file <repo>/.tmp/rabbitmq/env, and
// skips the test when it is not running, or fails it when CI=true.
//
// One broker is shared by every test package, and packages run in parallel:
// use routing keys and queue names unique to the test (Broker.Unique), and
// filter what a wildcard subscription receives. Broker.Restart is coordinated
// across processes with file locks, so it never pulls the broker away from
// under a test of another package that is still running.
//
// What RabbitMQ 3.10 does with the platform's conventions (probed here):
//
//   - STOMP: the CONNECT host header is the vhost; "/", "localhost" and
//     "127.0.0.1" exist. "/topic/a.b" is amq.topic with routing key "a.b",
//     so "/topic/#" subscribes to everything published as /topic/... on
//     that vhost. Subscribe does not wait for the broker: call SyncSTOMP
//     before publishing.
//   - AMQP 1.0 receiver source addresses that attach: "/topic/#" (a private
//     queue bound to amq.topic), "/exchange/amq.topic/KEY", "/queue/NAME",
//     "/amq/queue/NAME", and a bare NAME, which declares the queue NAME.
//     So "default" attaches, but to a queue named "default" that every test
//     using that address shares: prefer "/queue/"+Unique(t). Rejected:
//     "" and "/queue-name" (unknown_destination), "/topic/a/b" (a '/' in
//     the routing key).
//   - Close AMQP links with a deadline (CloseLink): 3.x never answers a
//     closing detach.
package testbroker

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Broker describes the running test broker. Addresses are host:port on
// 127.0.0.1. The TLS listeners present a certificate for localhost and
// 127.0.0.1 signed by the CA in CAFile.
type Broker struct {
	Dir        string // $RMQ_DIR of scripts/rabbitmq.sh
	STOMPSAddr string // STOMP over TLS
	STOMPAddr  string // STOMP, plain TCP
	AMQPSAddr  string // AMQP 0-9-1 and 1.0 over TLS
	AMQPAddr   string // AMQP 0-9-1 and 1.0, plain TCP
	CAFile     string

	// AccessKeyID and AccessKeySecret are the test AccessKey that aksign-auth
	// accepts: usernames signed with it (iotauth.Sign) log in.
	AccessKeyID     string
	AccessKeySecret string

	// PublisherUser and PublisherPassword are an internal RabbitMQ user with
	// full rights on the vhosts "/", "localhost" and "127.0.0.1", for test
	// publishers.
	PublisherUser     string
	PublisherPassword string

	lock *brokerLock // this test's shared hold, taken by RabbitMQ
}

// envKeys maps each environment variable to the Broker field it fills.
var envKeys = []struct {
	name  string
	field func(*Broker) *string
}{
	{"RABBITMQ_DIR", func(b *Broker) *string { return &b.Dir }},
	{"RABBITMQ_STOMPS_ADDR", func(b *Broker) *string { return &b.STOMPSAddr }},
	{"RABBITMQ_STOMP_ADDR", func(b *Broker) *string { return &b.STOMPAddr }},
	{"RABBITMQ_AMQPS_ADDR", func(b *Broker) *string { return &b.AMQPSAddr }},
	{"RABBITMQ_AMQP_ADDR", func(b *Broker) *string { return &b.AMQPAddr }},
	{"RABBITMQ_CA_FILE", func(b *Broker) *string { return &b.CAFile }},
	{"RABBITMQ_AK_ID", func(b *Broker) *string { return &b.AccessKeyID }},
	{"RABBITMQ_AK_SECRET", func(b *Broker) *string { return &b.AccessKeySecret }},
	{"RABBITMQ_PUBLISHER_USER", func(b *Broker) *string { return &b.PublisherUser }},
	{"RABBITMQ_PUBLISHER_PASSWORD", func(b *Broker) *string { return &b.PublisherPassword }},
}

const startHint = "start it with scripts/rabbitmq.sh start (as root on a fresh machine it installs rabbitmq-server), " +
	"then source .tmp/rabbitmq/env or just run the tests"

// RabbitMQ returns the running test broker. When it is not available the
// test is skipped, or fails if the environment variable CI is "true".
//
// It holds a shared lock on the broker until the test ends, so that a
// Restart in another test waits for this test to finish. Safe to call from
// parallel tests, but call it once per test: a Restart would wait (and fail
// after 5 minutes) for a second hold of the same test, for example one
// taken in a parent test and again in its subtest.
func RabbitMQ(t testing.TB) *Broker {
	t.Helper()
	b, err := find()
	var l *brokerLock
	var lockErr error
	if err == nil {
		// The shared hold first, then the probe: a test of another process
		// that restarts the broker holds the turnstile until its listeners
		// accept again, and a probe taken before that wait finds the broker
		// down ("connection refused") in the middle of the restart.
		l, lockErr = acquireShared(b.Dir)
		err = b.reachable()
	}
	if err != nil {
		if l != nil {
			l.release()
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("RabbitMQ test broker is required in CI but not available: %v; %s", err, startHint)
		}
		t.Skipf("RabbitMQ is not running: start it with scripts/rabbitmq.sh start (%v)", err)
	}
	if lockErr != nil {
		t.Fatalf("testbroker: %v", lockErr)
	}
	b.lock = l
	t.Cleanup(l.release)
	return b
}

// find reads the broker description from the environment or, when
// RABBITMQ_STOMPS_ADDR is not set, from <repo>/.tmp/rabbitmq/env.
func find() (*Broker, error) {
	vals := make(map[string]string)
	if os.Getenv("RABBITMQ_STOMPS_ADDR") != "" {
		for _, k := range envKeys {
			vals[k.name] = os.Getenv(k.name)
		}
	} else {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		path := filepath.Join(root, ".tmp", "rabbitmq", "env")
		vals, err = readEnvFile(path)
		if err != nil {
			return nil, err
		}
	}
	b := &Broker{}
	var missing []string
	for _, k := range envKeys {
		v := vals[k.name]
		if v == "" {
			missing = append(missing, k.name)
		}
		*k.field(b) = v
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("broker settings incomplete: %s not set", strings.Join(missing, ", "))
	}
	return b, nil
}

// repoRoot walks up from the working directory to the directory with go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repo root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// readEnvFile parses the `export NAME='value'` lines that scripts/rabbitmq.sh
// writes.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no RABBITMQ_* variables and no %s", path)
		}
		return nil, fmt.Errorf("read broker env: %w", err)
	}
	defer f.Close()
	vals := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vals[k] = strings.Trim(v, `'"`)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read broker env %s: %w", path, err)
	}
	return vals, nil
}

// reachable checks that the STOMP TLS listener accepts connections.
func (b *Broker) reachable() error {
	c, err := net.DialTimeout("tcp", b.STOMPSAddr, 2*time.Second)
	if err != nil {
		return fmt.Errorf("broker not reachable: %w", err)
	}
	return c.Close()
}

// TLSConfig returns a client TLS config that trusts the broker's CA and
// checks the name "localhost".
func (b *Broker) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(b.CAFile)
	if err != nil {
		t.Fatalf("testbroker: read CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("testbroker: %s holds no PEM certificate", b.CAFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Params returns signing parameters with the broker's AccessKey, the given
// client id, consumer group DEFAULT_GROUP and signMethod hmacsha1. Change
// fields as needed before iotauth.Sign.
func (b *Broker) Params(clientID string) iotauth.Params {
	return iotauth.Params{
		ClientID:        clientID,
		AccessKeyID:     b.AccessKeyID,
		AccessKeySecret: b.AccessKeySecret,
		ConsumerGroupID: "DEFAULT_GROUP",
		SignMethod:      iotauth.HMACSHA1,
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// Unique returns a short token made of the test name and random hex, safe
// in routing keys, queue names and STOMP destinations (no '.', '/' or '#').
func (b *Broker) Unique(t testing.TB) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("testbroker: random: %v", err)
	}
	return name + "-" + hex.EncodeToString(r[:])
}

// Restart stops and starts the broker (not the auth service) with
// scripts/rabbitmq.sh restart and returns when its listeners accept
// connections again. Every connection to the broker breaks. It first waits
// for tests of other processes that hold the broker (via RabbitMQ) to
// finish, and keeps them from starting until the broker is back.
//
// Call it only from the test that got b from RabbitMQ, and not concurrently
// with other uses of b.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testbroker: restart: %v", err)
	}
	if b.lock == nil {
		t.Fatalf("testbroker: restart: use a Broker returned by RabbitMQ")
	}
	waitStart := time.Now()
	shared, err := b.lock.exclusive()
	if err != nil {
		t.Fatalf("testbroker: restart: %v", err)
	}
	if d := time.Since(waitStart); d > time.Second {
		t.Logf("testbroker: waited %s for other tests to release the broker", d.Round(time.Millisecond))
	}
	defer func() {
		if err := shared(); err != nil {
			t.Errorf("testbroker: restart: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "rabbitmq.sh"), "restart")
	cmd.Env = append(os.Environ(), "RMQ_DIR="+b.Dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testbroker: scripts/rabbitmq.sh restart: %v\n%s", err, out)
	}
	t.Logf("testbroker: broker restarted in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
}

// DialSTOMP connects over TLS to the STOMP listener and logs in. vhost is
// sent as the STOMP host header, which RabbitMQ takes as the vhost ("/",
// "localhost" and "127.0.0.1" exist). The connection is disconnected when
// the test ends.
func (b *Broker) DialSTOMP(t testing.TB, username, password, vhost string, opts ...func(*stomp.Conn) error) (*stomp.Conn, error) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: b.TLSConfig(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", b.STOMPSAddr)
	if err != nil {
		return nil, fmt.Errorf("dial STOMP TLS %s: %w", b.STOMPSAddr, err)
	}
	all := append([]func(*stomp.Conn) error{
		stomp.ConnOpt.Logger(quietLogger{}),
		stomp.ConnOpt.Login(username, password),
		stomp.ConnOpt.Host(vhost),
	}, opts...)
	conn, err := stomp.ConnectWithContext(ctx, nc, all...)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("STOMP connect to %s: %w", b.STOMPSAddr, err)
	}
	t.Cleanup(func() { conn.MustDisconnect() })
	return conn, nil
}

// SyncSTOMP returns once the broker has processed every frame sent on conn
// so far. Call it after Subscribe: go-stomp does not wait for the broker, so
// a message published right after Subscribe returns may otherwise be routed
// before the subscription's queue is bound. It sends one message with a
// receipt to the amq.direct exchange under a routing key nothing is bound
// to, so the message is dropped.
func SyncSTOMP(t testing.TB, conn *stomp.Conn) {
	t.Helper()
	if err := conn.Send("/exchange/amq.direct/testbroker-sync-unrouted", "text/plain", nil, stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("testbroker: sync STOMP connection: %v", err)
	}
}

// PublishSTOMP sends one message as the publisher user on vhost "/" to
// destination (for example "/topic/a.b", which RabbitMQ routes through
// amq.topic with routing key "a.b") with the given extra headers. The header
// "content-type", if present, is sent as the content type. It returns once
// the broker has processed the frame (the DISCONNECT receipt).
func (b *Broker) PublishSTOMP(t testing.TB, destination string, headers map[string]string, body []byte) {
	t.Helper()
	b.PublishSTOMPTo(t, "/", destination, headers, body)
}

// PublishSTOMPTo is PublishSTOMP on the given vhost ("/", "localhost" or
// "127.0.0.1"): a subscriber only sees messages published on its own vhost.
func (b *Broker) PublishSTOMPTo(t testing.TB, vhost, destination string, headers map[string]string, body []byte) {
	t.Helper()
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.STOMPSAddr, b.TLSConfig(t))
	if err != nil {
		t.Fatalf("testbroker: publish: dial %s: %v", b.STOMPSAddr, err)
	}
	conn, err := stomp.Connect(nc,
		stomp.ConnOpt.Logger(quietLogger{}),
		stomp.ConnOpt.Login(b.PublisherUser, b.PublisherPassword),
		stomp.ConnOpt.Host(vhost))
	if err != nil {
		nc.Close()
		t.Fatalf("testbroker: publish: STOMP connect to vhost %q: %v", vhost, err)
	}
	contentType := headers["content-type"]
	sendOpts := make([]func(*frame.Frame) error, 0, len(headers))
	for k, v := range headers {
		if k == "content-type" {
			continue
		}
		sendOpts = append(sendOpts, stomp.SendOpt.Header(k, v))
	}
	if err := conn.Send(destination, contentType, body, sendOpts...); err != nil {
		conn.MustDisconnect()
		t.Fatalf("testbroker: publish to %s: %v", destination, err)
	}
	if err := conn.Disconnect(); err != nil {
		t.Fatalf("testbroker: publish to %s: disconnect: %v", destination, err)
	}
}

// quietLogger drops go-stomp's debug and info lines (such as a subscription
// ending when the test closes its connection) and keeps warnings and errors.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)            {}
func (quietLogger) Infof(string, ...any)             {}
func (quietLogger) Warningf(format string, v ...any) { log.Printf("stomp: warning: "+format, v...) }
func (quietLogger) Errorf(format string, v ...any)   { log.Printf("stomp: error: "+format, v...) }
func (quietLogger) Debug(string)                     {}
func (quietLogger) Info(string)                      {}
func (quietLogger) Warning(msg string)               { log.Print("stomp: warning: " + msg) }
func (quietLogger) Error(msg string)                 { log.Print("stomp: error: " + msg) }
