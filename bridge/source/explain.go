package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certclock"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/rawio"
)

// DialTLS connects TCP to addr and completes the TLS handshake with tc,
// within ctx. The TCP connection's reads and writes are raw system calls
// (internal/rawio: at a moderate message rate, a read through the
// scheduler wakes its monitor thread for every message). On failure
// nothing stays open; the error is the raw one (see ExplainDial).
func DialTLS(ctx context.Context, addr string, tc *tls.Config) (*tls.Conn, error) {
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(rawio.Wrap(tcp), tc)
	if err := Handshake(ctx, c); err != nil {
		tcp.Close()
		return nil, err
	}
	return c, nil
}

// Handshake completes c's TLS handshake. Its error is the raw one, marked
// as the handshake's: a server that hangs up there is told apart from one
// that hangs up on the login (ExplainDial).
func Handshake(ctx context.Context, c *tls.Conn) error {
	if err := c.HandshakeContext(ctx); err != nil {
		return &handshakeError{err}
	}
	return nil
}

// handshakeError is a failed TLS handshake (Handshake); its text is the
// failure's.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// ExplainDial turns a failure of the TCP connect or the TLS handshake (or a
// timeout of the login after them, or a server that hung up on the login)
// into an error that tells the operator what to check, naming the settings with n. op names the attempt ("stomp
// connect h:61614"); timeout is the dial timeout that bounded it. err is
// wrapped; a timeout's text leaves err's out (the step it cut differs from
// one attempt to the next).
func ExplainDial(n Names, op string, timeout time.Duration, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError // crypto/x509 returns these as values
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		recordHdr tls.RecordHeaderError
		alert     tls.AlertError
		opErr     *net.OpError
		handshake *handshakeError
	)
	var why string
	dates, outsideDates := certclock.Explain("the server's TLS certificate", err, time.Now())
	switch { // a verification error wraps the specific one: test those first
	case errors.As(err, &hostname):
		why = "TLS certificate does not match the name; set " + n.Of(FieldServerName) + " to a name it holds, or check " + n.Of(FieldEndpoint)
	case errors.As(err, &unknownCA):
		// Naming the issuer tells a CA file that holds another CA (a
		// bundle of the wrong environment) from a missing one.
		issuer := ""
		if unknownCA.Cert != nil {
			issuer = fmt.Sprintf(" %q", unknownCA.Cert.Issuer.String())
		}
		why = "TLS certificate not trusted: signed by an unknown authority" + issuer + "; add that CA with " + n.Of(FieldCAFile) +
			" (when it is set, the file it names does not hold that CA)"
	case outsideDates:
		why = dates
	case errors.As(err, &invalid):
		why = "TLS certificate not valid (not usable for a server, or its CA may not sign it: the reason follows); check " + n.Of(FieldEndpoint)
	case errors.As(err, &verify):
		why = "TLS certificate not trusted; check " + n.Of(FieldCAFile) + " (it must hold the CA that signed the endpoint's certificate)"
	case errors.As(err, &recordHdr):
		why = "the endpoint does not speak TLS; check the port of " + n.Of(FieldEndpoint) + " (the platform's TLS ports are " + STOMPPort + " for STOMP, " + AMQPPort + " for AMQP)"
	case errors.As(err, &alert):
		why = "TLS handshake refused by the server"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		// The raw text names the step the limit cut (the TCP connect, the
		// TLS handshake, a step of the login: "awaiting sasl-outcome") and
		// how it fired (the context's timer or the socket's deadline, the
		// same instant): against a slow server it differs from one attempt
		// to the next, so the text leaves it out, and a slow server is one
		// failure to the supervisor's log.
		why = fmt.Sprintf("timed out after %s (%s); check %s, the network and any firewall", timeout, n.Of(FieldDialTimeout), n.Of(FieldEndpoint))
		return &explained{text: op + ": " + why, err: err}
	case errors.Is(err, syscall.ECONNRESET):
		// In the connect or in the TLS handshake's first write, by chance:
		// one text for both (the raw errors differ in more than numbers),
		// so that an outage is one failure to the supervisor's log.
		why = "the server reset the connection before the login: nothing serves that port now (a server down behind a proxy or load balancer), " +
			"or a firewall rejects the connection; check " + n.Of(FieldEndpoint) + " and the network"
		return fmt.Errorf("%s: %s: %w", op, why, resetCause{err})
	case errors.As(err, &opErr) && opErr.Op == "dial":
		why = "cannot reach the server; check " + n.Of(FieldEndpoint) + " and the network"
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && errors.As(err, &handshake):
		// No login was sent: not a server of the other protocol (the
		// platform's ports share a certificate), but what stands in front,
		// or a server without TLS that hangs up on the ClientHello (Qpid
		// Proton's AMQP listener does; one that answers in its own protocol
		// is a record header error, above).
		why = "the server closed the connection during the TLS handshake; check " + n.Of(FieldEndpoint) +
			" (host and port): a server without TLS on that port (AMQP's plain 5672) hangs up so, and so does a firewall or proxy on the way that filters TLS"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// What a server of the other protocol does (the platform's STOMP
		// and AMQP ports share a host and a certificate): it reads a login
		// it does not understand and hangs up.
		why = "the server closed the connection without answering the login; check the port of " + n.Of(FieldEndpoint) +
			": is it the one of the protocol the bridge speaks? (the platform serves STOMP on " + STOMPPort + ", AMQP on " + AMQPPort + ")"
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %s: %w", op, why, err)
}

// resetCause is a connection reset, its text without the addresses and the
// system call that met it.
type resetCause struct{ err error }

func (r resetCause) Error() string { return syscall.ECONNRESET.Error() }
func (r resetCause) Unwrap() error { return r.err }

// explained is an error whose text is its explanation alone, without its
// cause's; it wraps the cause.
type explained struct {
	text string
	err  error
}

func (e *explained) Error() string { return e.text }
func (e *explained) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// LoginRefused is the error for a login the server refused: it wraps
// bridge.ErrLoginRefused and err (when not nil: it must hold no secret),
// quotes the server's reason (detail, with
// every secret in hide replaced by "***"; "" for none) and tells what to
// check, naming the settings with n.
func LoginRefused(n Names, op, detail string, err error, hide ...string) error {
	for _, s := range hide {
		if s != "" {
			detail = strings.ReplaceAll(detail, s, "***")
		}
	}
	if detail != "" {
		detail = fmt.Sprintf(": %q", detail)
	}
	reason := detail
	if err != nil {
		reason += " " + err.Error()
	}
	check := "; " + refusalAdvice(n, reason)
	r := &loginRefusal{otherCause: NamesOtherCause(reason)}
	if err == nil {
		r.err = fmt.Errorf("%s: %w%s%s", op, bridge.ErrLoginRefused, detail, check)
	} else {
		r.err = fmt.Errorf("%s: %w%s%s: %w", op, bridge.ErrLoginRefused, detail, check, err)
	}
	return r
}

// refusalAdvice is what a refused login tells the operator to do, by the
// words of the server's reason: a throttled consumer group, a consumer
// group that has its 64 clients online (9600), a consumer
// group or an instance the server does not know each name their one
// setting, and a refused timestamp names this machine's clock (before,
// every refusal listed the credentials, the group, the
// instance, the sign method and the clock: a throttled check -connect
// pointed at the credentials); any other reason, or none (RabbitMQ's, and
// the platform's texts are not documented), lists them all. The words are
// the simulator's (iotsim), as in otherCauses.
func refusalAdvice(n Names, reason string) string {
	r := strings.ToLower(reason)
	switch {
	case strings.Contains(r, "throttl"):
		return ThrottledAdvice(n)
	case strings.Contains(r, "9600"), strings.Contains(r, "too many connections"), strings.Contains(r, "too many clients"):
		return fmt.Sprintf("the consumer group has the %d clients online that the platform allows (error 9600): each of %s "+
			"is one, and so is every other bridge or client of the group; lower %s here or on the others, or give this bridge "+
			"a consumer group of its own (the bridge retries with back-off: a client that leaves makes room)",
			MaxConnections, n.Of(FieldConnections), n.Of(FieldConnections))
	case strings.Contains(r, "consumer group does not exist"), strings.Contains(r, "check consumergroupid"):
		return "check " + n.Of(FieldConsumerGroupID) + ": the consumer group must exist in the instance (the console lists its consumer groups)"
	case strings.Contains(r, "wrong instance"), strings.Contains(r, "check iotinstanceid"):
		return "check " + n.Of(FieldIotInstanceID) + ": the ID on the console's instance overview (empty only for a public instance opened before 2021-07-30)"
	case strings.Contains(r, "iot:sub"):
		return "the key was accepted, but its RAM user (for an STS token: the role) may not subscribe: grant it the action iot:sub " +
			"(the system policy AliyunIOTFullAccess has it), or give " + n.Of(FieldParams) + " the key of a user that has it; " +
			"new credentials of the same user will not help"
	case !strings.Contains(r, "signature") &&
		(strings.Contains(r, "clock") || strings.Contains(strings.ReplaceAll(r, "timestamp=", ""), "timestamp")):
		// The login's timestamp; not the username's timestamp= parameter,
		// which a refusal may quote, nor a signature mismatch, whose
		// reason may name the timestamp the signature covers (a wrong
		// secret: the list below).
		return "the server refused the login's timestamp, which is this machine's clock: is the clock off? sync it (NTP); " +
			"the bridge signs each attempt with the time it has then, and logs in once the clock is right"
	}
	return fmt.Sprintf("check %s (AccessKey ID and secret, STS token), %s, %s and %s, and that the system clock is right",
		n.Of(FieldParams), n.Of(FieldConsumerGroupID), n.Of(FieldIotInstanceID), n.Of(FieldSignMethod))
}

// ThrottledAdvice is what to do about a login the platform refused because
// the consumer group made more than MaxAttemptsPerMinute connection
// attempts in a minute, whichever protocol was refused.
func ThrottledAdvice(n Names) string {
	return fmt.Sprintf("the consumer group made too many connection attempts (the platform allows %d a minute per group, "+
		"across every client): wait a minute before trying again (the bridge retries with back-off); if it repeats, lower %s "+
		"so that the bridges of the group share that budget", MaxAttemptsPerMinute, n.Of(FieldLimiter))
}

// loginRefusal is LoginRefused's error. otherCause says the server's
// reason names a cause that new credentials cannot fix (see
// NamesOtherCause): Settings.Refusal then does not report it.
type loginRefusal struct {
	err        error
	otherCause bool
}

func (e *loginRefusal) Error() string { return e.err.Error() }
func (e *loginRefusal) Unwrap() error { return e.err }

// otherCauses are words of a server's refusal that name a cause other than
// the key triple: a throttled consumer group, a wrong consumer group or
// instance, a RAM user without the iot:sub permission, a malformed username, a SASL mechanism, a vhost (RabbitMQ), the
// server stopping. The texts are the simulator's (iotsim), which follows
// the platform's rules; the platform's own texts are not documented, and
// RabbitMQ's name no cause ("Bad CONNECT", "Access refused for user
// '<username>'", SASL auth code 1). None of the words may match a username
// (its consumerGroupId= and iotInstanceId= parameters), which a refusal may
// quote.
var otherCauses = []string{"throttl", "too many", "consumer group", "check consumergroupid", "wrong instance",
	"check iotinstanceid", "iot:sub", "username:", "are required", "mechanism", "virtual host", "vhost", "shutting down"}

// NamesOtherCause reports whether a login refusal's text names a cause
// other than the key triple (amqpsrc then drops AMQP's "the server refused
// the credentials" from a SASL auth refusal's text). A refusal that names the key, the STS token or
// the signature's timestamp, or no cause at all, may be the servers
// refusing a triple that expired there early (their clocks ahead of this
// machine's).
func NamesOtherCause(reason string) bool {
	reason = strings.ToLower(reason)
	for _, w := range otherCauses {
		if strings.Contains(reason, w) {
			return true
		}
	}
	return false
}

// KeyMayBeRefused reports whether err is a refused login (wrapping
// bridge.ErrLoginRefused) whose reason may be the key triple: built by
// LoginRefused from a reason that names no other cause. A refusal the
// protocol explains otherwise (a throttled consumer group, the server's
// own fault) is not: fetching new credentials would not help.
func KeyMayBeRefused(err error) bool {
	var r *loginRefusal
	return errors.Is(err, bridge.ErrLoginRefused) && errors.As(err, &r) && !r.otherCause
}
