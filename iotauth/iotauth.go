// Package iotauth builds and checks the username and password with which an
// AMQP or STOMP client logs in to an Alibaba Cloud IoT Platform server-side
// subscription.
//
// The username is
//
//	clientId|authMode=..,signMethod=..,timestamp=..,authId=..,iotInstanceId=..,consumerGroupId=..[,securityToken=..][,encode=base64]|
//
// and the password is base64(HMAC-<signMethod>(AccessKeySecret, stringToSign)),
// where stringToSign is "authId=..&timestamp=.." for authMode aksign and
// "authId=..&securityToken=..&timestamp=.." for ststoken.
//
// The package knows nothing of networks or config files. Its functions are
// safe for concurrent use.
package iotauth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Auth modes.
const (
	ModeAKSign   = "aksign"
	ModeSTSToken = "ststoken"
)

// Sign methods.
const (
	HMACMD5    = "hmacmd5"
	HMACSHA1   = "hmacsha1"
	HMACSHA256 = "hmacsha256"
)

// MaxClientIDLen is the platform's limit on a client id.
const MaxClientIDLen = 64

// Params are the inputs of a signing. Field names follow the platform's
// username keys.
type Params struct {
	ClientID        string
	AccessKeyID     string // authId
	AccessKeySecret string // the HMAC key; never part of the username
	SecurityToken   string // non-empty selects authMode=ststoken
	ConsumerGroupID string
	IotInstanceID   string // may be empty (public instances opened before 2021-07-30)
	SignMethod      string // hmacmd5 | hmacsha1 | hmacsha256, any case
	EncodeBase64    bool   // STOMP only: ask the server to base64 every body
}

// AuthMode returns ststoken when a security token is set, else aksign.
func (p Params) AuthMode() string {
	if p.SecurityToken != "" {
		return ModeSTSToken
	}
	return ModeAKSign
}

// FieldError is a problem with one parameter; Field is the platform's key
// name (clientId, authId, ...).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate reports every problem with p at once, each naming its field. It
// never quotes a secret.
func (p Params) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if n := len([]rune(p.ClientID)); n < 1 || n > MaxClientIDLen {
		bad("clientId", "must be 1 to %d characters, got %d", MaxClientIDLen, n)
	}
	if p.AccessKeyID == "" {
		bad("authId", "the AccessKey ID is required")
	}
	if p.AccessKeySecret == "" {
		bad("accessKeySecret", "the AccessKey secret is required")
	}
	if p.ConsumerGroupID == "" {
		bad("consumerGroupId", "is required (the platform's default group is DEFAULT_GROUP)")
	}
	if _, err := NormalizeSignMethod(p.SignMethod); err != nil {
		bad("signMethod", "%v", err)
	}
	for _, f := range []struct{ name, value string }{
		{"clientId", p.ClientID},
		{"authId", p.AccessKeyID},
		{"consumerGroupId", p.ConsumerGroupID},
		{"iotInstanceId", p.IotInstanceID},
	} {
		if c := ForbiddenSeparator(f.value, false); c != "" {
			bad(f.name, "%q must not contain %q: the username uses '|', ',' and '=' as separators", f.value, c)
		}
	}
	if ForbiddenSeparator(p.SecurityToken, true) != "" {
		bad("securityToken", "must not contain '|' or ','")
	}
	return errors.Join(errs...)
}

// ForbiddenSeparator returns the first character of value that the username
// cannot carry, or "" when there is none: '|', ',' and '=' in a plain value;
// only '|' and ',' in a security token, which is base64 and may end in '='
// padding (the server cuts each parameter at its first '=').
func ForbiddenSeparator(value string, securityToken bool) string {
	seps := "|,="
	if securityToken {
		seps = "|,"
	}
	if i := strings.IndexAny(value, seps); i >= 0 {
		return value[i : i+1]
	}
	return ""
}

// NormalizeSignMethod returns the canonical lower-case name of a sign method
// ("HmacSHA1" → "hmacsha1"), or an error for an unknown one.
func NormalizeSignMethod(m string) (string, error) {
	switch l := strings.ToLower(m); l {
	case HMACMD5, HMACSHA1, HMACSHA256:
		return l, nil
	case "":
		return "", errors.New("is required: one of hmacmd5, hmacsha1, hmacsha256")
	}
	return "", fmt.Errorf("%q is not supported: use hmacmd5, hmacsha1 or hmacsha256", m)
}

// Credentials are a signed username and password. The String method hides the
// password and the security token, so a Credentials value is safe to log.
type Credentials struct {
	Username  string
	Password  string
	Timestamp int64 // epoch milliseconds used in the signature
}

// String returns the username with any security token masked, and no password.
func (c Credentials) String() string { return RedactUsername(c.Username) }

// GoString keeps the password out of %#v too.
func (c Credentials) GoString() string { return "iotauth.Credentials{" + c.String() + "}" }

// Sign builds the username and password for p at time now. It signs afresh:
// the timestamp is now in epoch milliseconds.
func Sign(p Params, now time.Time) (Credentials, error) {
	if err := p.Validate(); err != nil {
		return Credentials{}, err
	}
	method, _ := NormalizeSignMethod(p.SignMethod)
	ts := now.UnixMilli()
	tsText := strconv.FormatInt(ts, 10)

	// clientId|k=v,k=v,...| with the optional parameters only when set.
	params := make([][2]string, 0, 8)
	params = append(params, [][2]string{{"authMode", p.AuthMode()}, {"signMethod", method}, {"timestamp", tsText},
		{"authId", p.AccessKeyID}, {"iotInstanceId", p.IotInstanceID}, {"consumerGroupId", p.ConsumerGroupID}}...)
	if p.SecurityToken != "" {
		params = append(params, [2]string{"securityToken", p.SecurityToken})
	}
	if p.EncodeBase64 {
		params = append(params, [2]string{"encode", "base64"})
	}
	var u strings.Builder
	u.Grow(160 + len(p.SecurityToken))
	u.WriteString(p.ClientID)
	sep := byte('|')
	for _, kv := range params {
		u.WriteByte(sep)
		u.WriteString(kv[0])
		u.WriteByte('=')
		u.WriteString(kv[1])
		sep = ','
	}
	u.WriteByte('|')

	pw, err := Password(method, p.AccessKeySecret, StringToSign(p.AccessKeyID, p.SecurityToken, tsText))
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Username: u.String(), Password: pw, Timestamp: ts}, nil
}

// Signer signs Params with a clock, freshly on every call. The zero Clock is
// time.Now. Safe for concurrent use as long as Params is not changed.
type Signer struct {
	Params Params
	Clock  func() time.Time
}

// Sign returns credentials with the clock's current time.
func (s Signer) Sign() (Credentials, error) {
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	return Sign(s.Params, now())
}

// StringToSign returns the text the password signs: the signed keys sorted
// and joined k=v&k=v. A non-empty securityToken means ststoken.
func StringToSign(authID, securityToken, timestamp string) string {
	if securityToken == "" {
		return "authId=" + authID + "&timestamp=" + timestamp
	}
	return "authId=" + authID + "&securityToken=" + securityToken + "&timestamp=" + timestamp
}

// Password returns base64(HMAC-method(secret, stringToSign)).
func Password(method, secret, stringToSign string) (string, error) {
	m, err := NormalizeSignMethod(method)
	if err != nil {
		return "", &FieldError{Field: "signMethod", Reason: err.Error()}
	}
	var h func() hash.Hash
	switch m {
	case HMACMD5:
		h = md5.New
	case HMACSHA1:
		h = sha1.New
	default:
		h = sha256.New
	}
	mac := hmac.New(h, []byte(secret))
	mac.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// RedactUsername masks the securityToken value in a username, which is the
// only secret a username can hold. Anything that is not a username is
// returned unchanged.
func RedactUsername(username string) string {
	const key = "securityToken="
	i := strings.Index(username, key)
	if i < 0 {
		return username
	}
	start := i + len(key)
	end := strings.IndexAny(username[start:], ",|")
	if end < 0 {
		return username[:start] + "***"
	}
	return username[:start] + "***" + username[start+end:]
}
