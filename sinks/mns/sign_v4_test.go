package mns

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/mnsvectors"
)

func loadV4Vectors(t *testing.T) mnsvectors.V4Set {
	t.Helper()
	vs, err := mnsvectors.LoadV4()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestV4SignatureVectors signs every official V4 vector (and the
// self-computed SendMessage example) and compares the whole Authorization
// header.
func TestV4SignatureVectors(t *testing.T) {
	vs := loadV4Vectors(t)
	for _, v := range vs.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			tm, err := v.When()
			if err != nil {
				t.Fatal(err)
			}
			h := v.Header() // as given: not canonicalised
			var ps []v4Param
			for _, kv := range v.Params {
				ps = append(ps, v4Param{kv[0], kv[1]})
			}
			s := v4Aliyun
			if v.Apsara {
				s = v4Apsara
			}
			dt := tm.UTC().Format(v4DateTime)
			canon := appendV4CanonicalRequest(nil, v.Method, v.Path, ps, h)
			got := s.authorization(v.AK, dt, v.Region, string(s.signingKey(v.SK, dt[:8], v.Region)), canon)
			want := s.algorithm + " Credential=" + v.AK + "/" + dt[:8] + "/" + v.Region + "/mns/" + s.terminator + ",Signature=" + v.Signature
			if got != want {
				t.Errorf("got  %s\nwant %s\ncanonical request:\n%s", got, want, canon)
			}
		})
	}
	t.Run("raw final HMAC", func(t *testing.T) {
		key, _ := base64.StdEncoding.DecodeString(vs.Raw.KeyBase64)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(vs.Raw.StringToSign))
		if got := hex.EncodeToString(m.Sum(nil)); got != vs.Raw.Signature {
			t.Errorf("got %s, want %s", got, vs.Raw.Signature)
		}
		// The same string to sign, rebuilt from its parts.
		h := http.Header{"Content-Type": {"text/xml;charset=UTF-8"}, "X-Mns-Version": {"2015-06-06"}}
		canon := appendV4CanonicalRequest(nil, "PUT", "/queues/queue-auto-25112417-l0PHHVTHYv", nil, h)
		if got := string(v4Aliyun.stringToSign("20251124T091359Z", "eu-west-1", canon)); got != vs.Raw.StringToSign {
			t.Errorf("string to sign\n%q\nwant\n%q", got, vs.Raw.StringToSign)
		}
	})
	t.Run("signing key", func(t *testing.T) {
		if got := hex.EncodeToString(v4Aliyun.signingKey(vs.Key.SK, vs.Key.Day, vs.Key.Region)); got != vs.Key.Hex {
			t.Errorf("got %s, want %s", got, vs.Key.Hex)
		}
	})
}

func TestRegionFromEndpoint(t *testing.T) {
	for ep, want := range map[string]string{
		"https://123.mns.cn-hangzhou.aliyuncs.com":             "cn-hangzhou",
		"http://123.mns.cn-hangzhou-internal.aliyuncs.com":     "cn-hangzhou",
		"http://123.mns.cn-hangzhou-internal-vpc.aliyuncs.com": "cn-hangzhou",
		"https://123.MNS.eu-west-1.aliyuncs.com:443":           "eu-west-1",
		"https://123.mns.eu-west-1.aliyuncs.com.:443":          "eu-west-1", // a fully qualified name
		"http://123.mns.ap-southeast-1-control.aliyuncs.com":   "ap-southeast-1",
		"http://127.0.0.1:8080":                                "",
		"https://mns.cn-hangzhou.aliyuncs.com":                 "",
		"https://123.mns.cn-hangzhou.aliyuncs.com.example.org": "",
		"https://proxy.example.org":                            "",
	} {
		got, ok := RegionFromEndpoint(ep)
		if got != want || ok != (want != "") {
			t.Errorf("RegionFromEndpoint(%q) = %q, %v; want %q", ep, got, ok, want)
		}
	}
}

func TestEndpointWarnings(t *testing.T) {
	for ep, warn := range map[string]bool{
		"https://123.mns.cn-hangzhou-internal.aliyuncs.com":     true,
		"https://123.mns.cn-hangzhou-internal-vpc.aliyuncs.com": true,
		"http://123.mns.cn-hangzhou-internal.aliyuncs.com":      false,
		"https://123.mns.cn-hangzhou.aliyuncs.com":              false,
		"https://127.0.0.1:8443":                                false,
	} {
		w := EndpointWarnings(ep)
		if (len(w) > 0) != warn {
			t.Errorf("%s: %q", ep, w)
		}
		if warn && !strings.HasPrefix(w[0], ep+" is an internal endpoint") || warn && !strings.Contains(w[0], "http://123.mns.") {
			t.Errorf("%s: warning %q does not name the endpoint and the http form", ep, w[0])
		}
	}
}
