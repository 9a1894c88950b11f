package iotauth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Username is a parsed platform username, as a server (the platform
// simulator, the test auth service) sees it.
type Username struct {
	ClientID        string
	AuthMode        string
	SignMethod      string // canonical lower case
	Timestamp       int64
	AuthID          string
	IotInstanceID   string
	ConsumerGroupID string
	SecurityToken   string
	EncodeBase64    bool
	// Params holds every key=value pair as given, including unknown ones.
	Params map[string]string
}

// ParseUsername parses "clientId|k=v,k=v,...|". Parameter order is free.
// Required: authMode, signMethod, timestamp, authId, consumerGroupId, and
// securityToken for ststoken. Errors name the offending part and never quote
// a security token.
func ParseUsername(s string) (Username, error) {
	var u Username
	if !strings.HasSuffix(s, "|") {
		return u, errors.New("username: must end with '|'")
	}
	clientID, rest, ok := strings.Cut(s[:len(s)-1], "|")
	if !ok {
		return u, errors.New("username: must have the form clientId|k=v,...|")
	}
	if strings.Contains(rest, "|") {
		return u, errors.New("username: more than two '|' separators")
	}
	if n := len([]rune(clientID)); n < 1 || n > MaxClientIDLen {
		return u, fmt.Errorf("username: clientId must be 1 to %d characters, got %d", MaxClientIDLen, n)
	}
	u.ClientID = clientID
	u.Params = make(map[string]string)
	if rest != "" {
		for _, kv := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return u, fmt.Errorf("username: parameter %q is not key=value", redactParam(kv))
			}
			if _, dup := u.Params[k]; dup {
				return u, fmt.Errorf("username: parameter %s appears twice", k)
			}
			u.Params[k] = v
		}
	}
	var errs []error
	need := func(k string) string {
		v, ok := u.Params[k]
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf("username: %s is required", k))
		}
		return v
	}
	u.AuthMode = need("authMode")
	method := need("signMethod")
	ts := need("timestamp")
	u.AuthID = need("authId")
	u.ConsumerGroupID = need("consumerGroupId")
	u.IotInstanceID = u.Params["iotInstanceId"]
	u.SecurityToken = u.Params["securityToken"]
	if method != "" {
		m, err := NormalizeSignMethod(method)
		if err != nil {
			errs = append(errs, fmt.Errorf("username: signMethod %v", err))
		}
		u.SignMethod = m
	}
	if ts != "" {
		n, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("username: timestamp %q is not epoch milliseconds", ts))
		}
		u.Timestamp = n
	}
	switch u.AuthMode {
	case ModeAKSign, "":
	case ModeSTSToken:
		if u.SecurityToken == "" {
			errs = append(errs, errors.New("username: securityToken is required for authMode=ststoken"))
		}
	default:
		errs = append(errs, fmt.Errorf("username: authMode %q is not aksign or ststoken", u.AuthMode))
	}
	switch e := u.Params["encode"]; e {
	case "":
	case "base64":
		u.EncodeBase64 = true
	default:
		errs = append(errs, fmt.Errorf("username: encode %q is not supported (only base64)", e))
	}
	return u, errors.Join(errs...)
}

func redactParam(kv string) string {
	if strings.HasPrefix(kv, "securityToken") {
		return "securityToken=***"
	}
	return kv
}

// StringToSign returns the text that this username's password must sign.
func (u Username) StringToSign() string {
	tok := ""
	if u.AuthMode == ModeSTSToken {
		tok = u.SecurityToken
	}
	return StringToSign(u.AuthID, tok, strconv.FormatInt(u.Timestamp, 10))
}

// ErrBadSignature is returned by Verify when the password does not match.
var ErrBadSignature = errors.New("password does not match the signature of the username")

// Verify parses username and checks password against the secret that
// secretFor returns for its authId. With maxSkew > 0 it also refuses a
// timestamp further than maxSkew from now. It is what a server does; the
// bridge itself never calls it.
func Verify(username, password string, secretFor func(authID string) (string, bool), now time.Time, maxSkew time.Duration) (Username, error) {
	u, err := ParseUsername(username)
	if err != nil {
		return u, err
	}
	secret, ok := secretFor(u.AuthID)
	if !ok {
		return u, fmt.Errorf("unknown authId %q", u.AuthID)
	}
	want, err := Password(u.SignMethod, secret, u.StringToSign())
	if err != nil {
		return u, err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		return u, ErrBadSignature
	}
	if maxSkew > 0 {
		d := now.Sub(time.UnixMilli(u.Timestamp))
		if d > maxSkew || d < -maxSkew {
			return u, fmt.Errorf("timestamp %d is %s away from the server clock (limit %s)", u.Timestamp, d.Round(time.Second), maxSkew)
		}
	}
	return u, nil
}
