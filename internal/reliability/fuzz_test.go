package reliability

import (
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// FuzzSignVerify: any Params that Validate accepts sign to a username that
// parses back to the same fields and verifies with the same secret, fails
// with another secret, and never contains the secret. (iotauth has a fuzz
// of ParseUsername; this one covers signing.)
func FuzzSignVerify(f *testing.F) {
	f.Add("client-1", "LTAIkey", "secret", "", "DEFAULT_GROUP", "", "hmacsha1", false, int64(1700000000000))
	f.Add("c", "ak", "s3cr3t", "STS.token/+=", "g1", "iot-06z00", "hmacsha256", true, int64(1))
	f.Add("edge-gw-01", "LTAI5t", "x", "", "grp", "inst", "HMACMD5", false, int64(253402300799999))
	f.Fuzz(func(t *testing.T, clientID, ak, secret, token, group, instance, method string, b64 bool, ms int64) {
		p := iotauth.Params{ClientID: clientID, AccessKeyID: ak, AccessKeySecret: secret, SecurityToken: token,
			ConsumerGroupID: group, IotInstanceID: instance, SignMethod: method, EncodeBase64: b64}
		if p.Validate() != nil || ms <= 0 {
			return
		}
		now := time.UnixMilli(ms)
		cred, err := iotauth.Sign(p, now)
		if err != nil {
			t.Fatalf("Sign of valid params %+v: %v", p, err)
		}
		// The username must not depend on the secret at all; it may still
		// hold the secret's text by coincidence (secret "0000" in the
		// timestamp 1700000000000), which signing with another secret shows.
		other := p
		other.AccessKeySecret = secret + "x"
		if other.Validate() == nil {
			cred2, err := iotauth.Sign(other, now)
			if err != nil {
				t.Fatalf("Sign of valid params %+v: %v", other, err)
			}
			if cred2.Username != cred.Username {
				t.Fatalf("the username depends on the secret: %q with it, %q with another", cred.Username, cred2.Username)
			}
			if len(secret) >= 4 && strings.Contains(cred.Username, secret) && !strings.Contains(cred2.Username, secret) {
				t.Fatalf("the username %q contains the secret", cred.Username)
			}
		} else if len(secret) >= 4 && strings.Contains(cred.Username, secret) {
			t.Fatalf("the username %q contains the secret", cred.Username)
		}
		u, err := iotauth.Verify(cred.Username, cred.Password, func(id string) (string, bool) { return secret, id == ak }, now, 0)
		if err != nil {
			t.Fatalf("Verify of a fresh signing: %v (username %q)", err, cred.Username)
		}
		if u.ClientID != clientID || u.AuthID != ak || u.ConsumerGroupID != group || u.IotInstanceID != instance ||
			u.SecurityToken != token || u.EncodeBase64 != b64 || u.Timestamp != ms {
			t.Fatalf("round trip: %+v from %+v", u, p)
		}
		if _, err := iotauth.Verify(cred.Username, cred.Password, func(string) (string, bool) { return secret + "x", true }, now, 0); err == nil {
			t.Fatal("Verify accepted another secret")
		}
	})
}
