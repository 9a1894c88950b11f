package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// issue is the JSON a credentials URI and the ECS metadata service answer.
type issue struct {
	Code            *string `json:"Code"`
	AccessKeyID     string  `json:"AccessKeyId"`
	AccessKeySecret string  `json:"AccessKeySecret"`
	SecurityToken   string  `json:"SecurityToken"`
	Expiration      string  `json:"Expiration"`
}

// parseIssue's errors for a document that is empty, or that ends before its
// JSON does: what a reader of a file that is being written in place sees.
var (
	errEmpty    = errors.New("empty")
	errCutShort = errors.New("not valid JSON: it ends before the JSON does")
)

// parseIssue decodes the credentials JSON. needCode requires "Code":
// "Success" and a token and expiry (the remote forms); errors never quote
// the document.
func parseIssue(data []byte, remote bool) (Credentials, error) {
	var is issue
	if err := json.Unmarshal(data, &is); err != nil {
		var se *json.SyntaxError
		switch {
		case len(strings.TrimSpace(string(data))) == 0:
			return Credentials{}, errEmpty
		case errors.As(err, &se) && strings.Contains(se.Error(), "unexpected end"):
			return Credentials{}, fmt.Errorf("%w at byte %d", errCutShort, len(data))
		case errors.As(err, &se):
			return Credentials{}, fmt.Errorf("not valid JSON (error at byte %d of %d)", se.Offset, len(data))
		}
		return Credentials{}, fmt.Errorf("not the credentials JSON object (%d bytes)", len(data))
	}
	if is.Code != nil && *is.Code != "Success" || remote && is.Code == nil {
		code := "none"
		if is.Code != nil {
			code = printable(*is.Code)
		}
		return Credentials{}, fmt.Errorf("Code is %s, not Success", code)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"AccessKeyId", is.AccessKeyID}, {"AccessKeySecret", is.AccessKeySecret},
		{"SecurityToken", is.SecurityToken}, {"Expiration", is.Expiration},
	} {
		if f.v == "" && (remote || f.name == "AccessKeyId" || f.name == "AccessKeySecret") {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Credentials{}, fmt.Errorf("%s missing", strings.Join(missing, ", "))
	}
	c := Credentials{AccessKeyID: is.AccessKeyID, AccessKeySecret: is.AccessKeySecret, SecurityToken: is.SecurityToken}
	if is.Expiration != "" {
		t, err := time.Parse(time.RFC3339, is.Expiration)
		if err != nil {
			return Credentials{}, fmt.Errorf("Expiration %s is not an RFC 3339 time like 2026-11-30T03:46:38Z", printable(is.Expiration))
		}
		c.Expiration = t
	}
	return c, nil
}

// printable quotes a short server-side value (a code, a time) for an error,
// or says how long it is when it could be anything.
func printable(s string) string {
	if len(s) > 40 || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) {
		return fmt.Sprintf("a %d-byte value", len(s))
	}
	return fmt.Sprintf("%q", s)
}
