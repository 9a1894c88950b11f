package iotauth

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
)

type vector struct {
	method, secret, ak, token, stringToSign, password string
	ts                                                int64
}

// loadVectors reads testdata/vectors.tsv, whose passwords were computed with
// openssl (see the file's header), not with this package.
func loadVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) != 7 {
			t.Fatalf("bad vector line %q", line)
		}
		ts, err := strconv.ParseInt(c[4], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		tok := c[3]
		if tok == "-" {
			tok = ""
		}
		vs = append(vs, vector{method: c[0], secret: c[1], ak: c[2], token: tok, ts: ts, stringToSign: c[5], password: c[6]})
	}
	if len(vs) != 12 {
		t.Fatalf("want 12 vectors (3 methods x 2 modes x 2 keys), got %d", len(vs))
	}
	return vs
}

func TestSignMatchesOpenSSLVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		name := fmt.Sprintf("%s/%s/%d", v.method, Params{SecurityToken: v.token}.AuthMode(), v.ts)
		t.Run(name, func(t *testing.T) {
			p := Params{
				ClientID: "edge-gw-01", AccessKeyID: v.ak, AccessKeySecret: v.secret, SecurityToken: v.token,
				ConsumerGroupID: "DEFAULT_GROUP", IotInstanceID: "iot-06z00abc", SignMethod: v.method,
			}
			c, err := Sign(p, time.UnixMilli(v.ts))
			if err != nil {
				t.Fatal(err)
			}
			if c.Password != v.password {
				t.Errorf("password = %s, openssl says %s", c.Password, v.password)
			}
			if got := StringToSign(v.ak, v.token, strconv.FormatInt(v.ts, 10)); got != v.stringToSign {
				t.Errorf("stringToSign = %q, want %q", got, v.stringToSign)
			}
			want := "edge-gw-01|authMode=" + p.AuthMode() + ",signMethod=" + v.method + ",timestamp=" +
				strconv.FormatInt(v.ts, 10) + ",authId=" + v.ak + ",iotInstanceId=iot-06z00abc,consumerGroupId=DEFAULT_GROUP"
			if v.token != "" {
				want += ",securityToken=" + v.token
			}
			want += "|"
			if c.Username != want {
				t.Errorf("username =\n %s\nwant\n %s", c.Username, want)
			}
			// The server side agrees.
			u, err := Verify(c.Username, c.Password, func(id string) (string, bool) { return v.secret, id == v.ak }, time.UnixMilli(v.ts), time.Minute)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if u.Timestamp != v.ts || u.AuthID != v.ak || u.SecurityToken != v.token {
				t.Errorf("parsed %+v", u)
			}
		})
	}
}

func TestSignIsFreshEpochMillis(t *testing.T) {
	p := Params{ClientID: "c", AccessKeyID: "ak", AccessKeySecret: "sk", ConsumerGroupID: "g", SignMethod: "HmacSHA1"}
	now := time.Date(2026, 11, 23, 1, 2, 3, 456_000_000, time.UTC)
	s := Signer{Params: p, Clock: func() time.Time { now = now.Add(1500 * time.Millisecond); return now }}
	a, err := s.Sign()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Sign()
	if a.Timestamp != 1795395724956 { // 2026-11-23T01:02:04.956Z in epoch ms, not Nanosecond()/1e6
		t.Errorf("timestamp = %d", a.Timestamp)
	}
	if b.Timestamp-a.Timestamp != 1500 || a.Password == b.Password {
		t.Errorf("second signing not fresh: %d then %d", a.Timestamp, b.Timestamp)
	}
	if !strings.Contains(a.Username, "signMethod=hmacsha1,") {
		t.Errorf("sign method not normalised: %s", a.Username)
	}
}

func TestEncodeBase64AndEmptyInstance(t *testing.T) {
	p := Params{ClientID: "c", AccessKeyID: "ak", AccessKeySecret: "sk", ConsumerGroupID: "g", SignMethod: "hmacmd5", EncodeBase64: true}
	c, err := Sign(p, time.UnixMilli(1))
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "c|authMode=aksign,signMethod=hmacmd5,timestamp=1,authId=ak,iotInstanceId=,consumerGroupId=g,encode=base64|" {
		t.Errorf("username = %s", c.Username)
	}
	u, err := ParseUsername(c.Username)
	if err != nil || !u.EncodeBase64 || u.IotInstanceID != "" {
		t.Errorf("parse: %+v, %v", u, err)
	}
}

func TestValidateNamesEveryField(t *testing.T) {
	cases := []struct {
		name string
		p    Params
		want []string
	}{
		{"empty", Params{}, []string{"clientId: must be 1 to 64", "authId: the AccessKey ID is required",
			"accessKeySecret: the AccessKey secret is required", "consumerGroupId: is required", "signMethod: is required"}},
		{"long client id", Params{ClientID: strings.Repeat("x", 65), AccessKeyID: "a", AccessKeySecret: "s", ConsumerGroupID: "g", SignMethod: "hmacsha1"},
			[]string{"clientId: must be 1 to 64 characters, got 65"}},
		{"separators", Params{ClientID: "a|b", AccessKeyID: "a,b", AccessKeySecret: "s", ConsumerGroupID: "g=1", IotInstanceID: "i|", SignMethod: "hmacsha1"},
			[]string{`clientId: "a|b" must not contain "|"`, `authId: "a,b" must not contain ","`, `consumerGroupId: "g=1" must not contain "="`, `iotInstanceId: "i|" must not contain "|"`}},
		{"bad method", Params{ClientID: "c", AccessKeyID: "a", AccessKeySecret: "s", ConsumerGroupID: "g", SignMethod: "sha512"},
			[]string{`signMethod: "sha512" is not supported`}},
		{"token with separator", Params{ClientID: "c", AccessKeyID: "a", AccessKeySecret: "s", ConsumerGroupID: "g", SignMethod: "hmacsha1", SecurityToken: "SECRET,TOKEN"},
			[]string{"securityToken: must not contain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			errtext.Want(t, "Validate", err, tc.want, "SECRET") // the security token
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("not a FieldError: %T", err)
			}
		})
	}
}

func TestCredentialsNeverPrintSecrets(t *testing.T) {
	p := Params{ClientID: "c", AccessKeyID: "ak", AccessKeySecret: "sk", ConsumerGroupID: "g", SignMethod: "hmacsha1", SecurityToken: "TOKENVALUE"}
	c, err := Sign(p, time.UnixMilli(1700000000000))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, c.Password) || strings.Contains(s, "TOKENVALUE") {
			t.Errorf("printed credentials leak a secret: %s", s)
		}
	}
	if got := RedactUsername(c.Username); !strings.Contains(got, "securityToken=***|") {
		t.Errorf("redacted = %s", got)
	}
}

func TestParseUsernameErrors(t *testing.T) {
	cases := map[string]string{
		"no bars":              "must end with '|'",
		"c|authMode=aksign|x|": "more than two",
		"|authMode=aksign|":    "clientId must be 1 to 64",
		"c|authMode|":          `parameter "authMode" is not key=value`,
		"c|authMode=aksign|":   "signMethod is required",
		"c|authMode=x,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g|":                 `authMode "x" is not aksign or ststoken`,
		"c|authMode=ststoken,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g|":          "securityToken is required",
		"c|authMode=aksign,signMethod=hmacsha1,timestamp=soon,authId=a,consumerGroupId=g|":         "is not epoch milliseconds",
		"c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a,authId=b,consumerGroupId=g|":   "appears twice",
		"c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g,encode=hex|": `encode "hex"`,
	}
	for in, want := range cases {
		_, err := ParseUsername(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUsername(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestVerifyRefusals(t *testing.T) {
	p := Params{ClientID: "c", AccessKeyID: "ak", AccessKeySecret: "sk", ConsumerGroupID: "g", SignMethod: "hmacsha256"}
	now := time.UnixMilli(1700000000000)
	c, _ := Sign(p, now)
	secrets := func(id string) (string, bool) { return "sk", id == "ak" }
	if _, err := Verify(c.Username, c.Password+"x", secrets, now, 0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("bad password: %v", err)
	}
	if _, err := Verify(c.Username, c.Password, func(string) (string, bool) { return "", false }, now, 0); err == nil || !strings.Contains(err.Error(), "unknown authId") {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := Verify(c.Username, c.Password, secrets, now.Add(20*time.Minute), 15*time.Minute); err == nil || !strings.Contains(err.Error(), "away from the server clock") {
		t.Errorf("skew: %v", err)
	}
}

// A real STS token is base64 text that may end in '=' padding (and holds '+'
// and '/'): it must sign, parse back whole and verify.
func TestSecurityTokenWithBase64Padding(t *testing.T) {
	const token = "CAIS+Ab/cd12EF==" // the shape of an STS SecurityToken
	p := Params{ClientID: "c", AccessKeyID: "STS.ak", AccessKeySecret: "sk", ConsumerGroupID: "g", SignMethod: "hmacsha1", SecurityToken: token}
	if err := p.Validate(); err != nil {
		t.Fatalf("a padded token is refused: %v", err)
	}
	c, err := Sign(p, time.UnixMilli(1700000000000))
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUsername(c.Username)
	if err != nil {
		t.Fatal(err)
	}
	if u.SecurityToken != token || u.AuthMode != "ststoken" {
		t.Fatalf("parsed token %q, auth mode %q", u.SecurityToken, u.AuthMode)
	}
	if _, err := Verify(c.Username, c.Password, func(string) (string, bool) { return "sk", true }, time.Time{}, 0); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got := RedactUsername(c.Username); strings.Contains(got, "CAIS") {
		t.Fatalf("redacted username still shows the token: %s", got)
	}
}

func FuzzParseUsername(f *testing.F) {
	f.Add("c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a,iotInstanceId=,consumerGroupId=g|")
	f.Add("c|authMode=ststoken,signMethod=hmacsha256,timestamp=1,authId=a,consumerGroupId=g,securityToken=t,encode=base64|")
	f.Add("||")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err != nil {
			return
		}
		// A username that parses can be signed and verified.
		p := Params{ClientID: u.ClientID, AccessKeyID: u.AuthID, AccessKeySecret: "k", SecurityToken: u.SecurityToken,
			ConsumerGroupID: u.ConsumerGroupID, IotInstanceID: u.IotInstanceID, SignMethod: u.SignMethod}
		if p.Validate() != nil {
			return
		}
		c, err := Sign(p, time.UnixMilli(u.Timestamp))
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		if _, err := Verify(c.Username, c.Password, func(string) (string, bool) { return "k", true }, time.Time{}, 0); err != nil {
			t.Fatalf("verify own signature of %q: %v", c.Username, err)
		}
	})
}
