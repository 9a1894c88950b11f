package source

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Settings are what every protocol's source Config has: where and how to
// connect, as whom, over how many connections and how fast to retry.
// stompsrc.Config and amqpsrc.Config embed it; Check, TLSConfig and
// NewDriver are the one place these settings are checked and turned into a
// Driver. Every field but Clock and Logger is required and taken as it is:
// the defaults live in config.Default(), and the wiring fills every field
// from the config.
type Settings struct {
	// Endpoint is host:port.
	Endpoint string
	// TLS are the TLS settings; TLS is always on.
	TLS TLSOptions
	// Params returns the signing inputs. It is called on every dial, so that
	// every login is signed afresh and a rotated secret or STS token takes
	// effect; ClientID is the base client id (see Connections). It must be
	// safe for concurrent use.
	Params func() (iotauth.Params, error)
	// Clock is the time used for signing; nil means time.Now.
	Clock func() time.Time
	// Connections is the number of connections (slots), 1 to
	// MaxConnections. With
	// more than one, connection i uses client id "<ClientID>-<i>"
	// (ClientIDs).
	Connections int
	// DialTimeout bounds one connection attempt: TCP connect, TLS handshake
	// and the protocol's login together.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// the connection attempts of one slot (reset after a stable minute).
	MinBackoff, MaxBackoff time.Duration
	// Limiter bounds connection attempts; share one across every source of
	// one consumer group.
	Limiter *AttemptLimiter
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
	// Names are what the operator calls the fields (the wiring gives the
	// config keys); errors and log lines name fields with it. nil shows
	// "Config.<Field>".
	Names Names
	// Refused, when set, is called with the AccessKeyId a login was signed
	// with when the server refused the login for what may be the key triple
	// (KeyMayBeRefused; not for a throttled consumer group, a wrong group
	// or instance, a server's fault): the credentials cache may fetch a new
	// triple before its planned refresh (credentials.Cache.Refused).
	// Optional; safe for concurrent use.
	Refused func(id string)
}

// Refusal reports err to Refused when it is a refused login signed with p
// whose reason may be the key triple (KeyMayBeRefused), and returns err.
func (s Settings) Refusal(p iotauth.Params, err error) error {
	if s.Refused != nil && KeyMayBeRefused(err) {
		s.Refused(p.AccessKeyID)
	}
	return err
}

// Check returns s, with time.Now for a nil Clock and a discarding Logger for
// a nil one, and adds every problem of s to p (s.Names.Problems, to which
// the protocol adds the problems of its own fields). It does no I/O.
func (s Settings) Check(p *Problems) Settings {
	n := s.Names
	p.Add(CheckEndpoint(s.Endpoint, n))
	if s.Params == nil {
		p.Bad(FieldParams, "no signing parameters (Config.Params is nil)")
	}
	if err := CheckConnections(s.Connections); err != nil {
		p.Bad(FieldConnections, "%v", err)
	}
	if s.DialTimeout <= 0 {
		p.Bad(FieldDialTimeout, "must be positive, got %s", s.DialTimeout)
	}
	if s.MinBackoff <= 0 {
		p.Bad(FieldMinBackoff, "must be positive, got %s", s.MinBackoff)
	}
	if s.MaxBackoff <= 0 {
		p.Bad(FieldMaxBackoff, "must be positive, got %s", s.MaxBackoff)
	} else if s.MaxBackoff < s.MinBackoff {
		p.Bad(FieldMaxBackoff, "%s is less than %s %s", s.MaxBackoff, n.Of(FieldMinBackoff), s.MinBackoff)
	}
	if s.Limiter == nil {
		p.Bad(FieldLimiter, "no attempt limiter (Config.Limiter is nil)")
	}
	if s.Clock == nil {
		s.Clock = time.Now
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s
}

// Login reads the signing inputs afresh (Params), sets the client id,
// lets edit (when not nil) set what the protocol adds, and signs them at
// Clock, for the login of one dial or check as clientID. It is the one
// place the protocols sign, so that they fail alike: signing inputs that
// cannot be read now (a credentials file being rotated, an STS refresh) are
// a transient error the driver redials; inputs that cannot sign wrap
// ErrFatal, as they come from the config and redialling cannot fix them.
// op names the step in errors ("stomp connect"); errors hold no secret.
// s must have passed Check.
func (s Settings) Login(op, clientID string, edit func(*iotauth.Params)) (iotauth.Params, iotauth.Credentials, error) {
	p, err := s.Params()
	if err != nil {
		return p, iotauth.Credentials{}, fmt.Errorf("%s as %s: read the signing inputs: %w", op, clientID, err)
	}
	p.ClientID = clientID
	if edit != nil {
		edit(&p)
	}
	creds, err := iotauth.Sign(p, s.Clock())
	if err != nil {
		return p, creds, fmt.Errorf("%w: %s as %s: sign the login: %w", ErrFatal, op, clientID, err)
	}
	return p, creds, nil
}

// TLSConfig is the client TLS config for the endpoint's host (see
// TLSOptions.TLSConfig). It reads the CA file: a protocol calls it once, in
// its New, so that an unusable CA bundle is a config error found at start.
// s must have passed Check.
func (s Settings) TLSConfig() (*tls.Config, error) {
	host, _, err := net.SplitHostPort(s.Endpoint)
	if err != nil {
		return nil, s.Names.Bad(FieldEndpoint, "%w", err)
	}
	return s.TLS.TLSConfig(host, s.Names)
}

// Log is the logger of a source of protocol ("stomp", "amqp"): every
// line it writes names the protocol (source=) and the endpoint it dials
// (endpoint=), so that an operator running several bridges, or reading a
// line on its own, knows which platform endpoint it speaks of. The one
// place a source's logger is made. s must have passed Check.
func (s Settings) Log(protocol string) *slog.Logger {
	return s.Logger.With("source", protocol, "endpoint", s.Endpoint)
}

// NewDriver returns the Driver of these settings over dial, for protocol
// ("stomp", "amqp"), logging to log. It calls Params once for the base
// client id and checks the signing inputs of every slot's client id, so
// that inputs that can never sign are a config error found at start; it
// opens no connection. s must have passed Check.
func (s Settings) NewDriver(protocol string, log *slog.Logger, dial DialFunc) (*Driver, error) {
	p, err := s.Params()
	if err != nil {
		return nil, s.Names.Bad(FieldParams, "%w", err)
	}
	var errs []error
	for _, id := range ClientIDs(p.ClientID, s.Connections) {
		q := p
		q.ClientID = id
		if err := q.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("source: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return New(Config{
		Protocol: protocol, ClientID: p.ClientID, Connections: s.Connections,
		MinBackoff: s.MinBackoff, MaxBackoff: s.MaxBackoff, Limiter: s.Limiter, Logger: log,
	}, dial)
}
