package mns

import (
	"net/http"
	"strings"
	"testing"
)

// The V2 vectors a to h of mns-http-api.md §1.2 (JavaSDK, NodeSDK, docs and
// a captured GoSDK request).
func TestSignatureVectors(t *testing.T) {
	tests := []struct {
		name, secret                       string
		method, md5, ctype, date, resource string
		headers                            http.Header
		want                               string
	}{
		{"a docs", "TestAccessSecret", "GET", "", "", "Thu, 09 Jul 2015 03:01:34 GMT", "/MyQueue",
			http.Header{"X-Mns-Version": {"2015-06-06"}}, "uwx3yeWoILzgmvesW0BQSgfM7b8="},
		{"b java header case", "sk1", "POST", "", "", "Tue, 03 Jun 2025 11:23:48 GMT", "/queues/TestQueue",
			http.Header{"x-mns-abcDEF": {"abcDEF"}, "x-kkk-def": {"ignored"}}, "cAThPWnbphg3hDe3ZHDADTgkgyE="},
		{"c java", "sk-kkkkkk1111111111", "GET", "", "", "Wed, 03 Dec 2025 11:23:48 GMT", "/queues/TestQueue123456",
			http.Header{"X-Mns-Abcdef": {"KKKkkk"}}, "lPxnfNA+Qo/aj18MYJUnRMqa84I="},
		{"d no mns headers", "testSk", "GET", "", "", "Tue, 03 Jun 2025 11:23:48 GMT", "/queues/TestQueue",
			http.Header{}, "uDJQXbk2xOhH95MDXmgbAGdtyE4="},
		{"e unescaped path", "testSk", "POST", "", "application/json", "Tue, 03 Jun 2025 11:23:48 GMT", "/queues/Test Queue@123",
			http.Header{}, "GZ/I9UgZsqvbzfzjd0GmA6VHOx4="},
		{"f java service", "accessKeySecret111", "PUT", "", "text/xml;charset=UTF-8", "Tue, 03 Jun 2025 11:23:48 GMT", "/queues/TestQueue",
			http.Header{"X-Mns-Version": {"2015-06-06"}}, "HCSlBi5KuXGNf06tZKFiQlNDt4c="},
		{"g node", "ACCESS_KEY_SECRET", "PUT", "574683b3684e3cff610afa155cc2506d", "text/xml", "Tue, 11 Apr 2017 10:09:19 GMT", "/",
			http.Header{"X-Mns-Version": {"2015-06-06"}}, "A9zehggaYHHujmuRMxGIDrhWwx8="},
		{"h go sdk probe", "sk", "POST", "NmU4ZmE1YWJhZDE2Zjk2M2Q0NWFhYjUxM2FlMDI0YTk=", "application/xml", "Mon, 23 Nov 2026 00:09:46 GMT", "/queues/q1/messages",
			http.Header{"X-Mns-Version": {"2015-06-06"}}, "OK3PjOOL35R9jO47ZqW8eDWD1kA="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sts := appendStringToSign(nil, tt.method, tt.md5, tt.ctype, tt.date, canonicalMNSHeaders(tt.headers), tt.resource)
			if got := signature(tt.secret, sts); got != tt.want {
				t.Errorf("signature = %s, want %s\nstring to sign:\n%s", got, tt.want, strings.ReplaceAll(string(sts), "\n", "⏎"))
			}
		})
	}
	if got := authorization("ak1", "sk1", appendStringToSign(nil, "POST", "", "", "Tue, 03 Jun 2025 11:23:48 GMT",
		"x-mns-abcdef:abcDEF\n", "/queues/TestQueue")); got != "MNS ak1:cAThPWnbphg3hDe3ZHDADTgkgyE=" {
		t.Errorf("authorization = %s", got)
	}
}

// The client's fixed canonical header must be what canonicalMNSHeaders
// gives for the one x-mns header it sends.
func TestCanonVersionMatches(t *testing.T) {
	if got := canonicalMNSHeaders(http.Header{"X-Mns-Version": {APIVersion}, "Date": {"x"}}); got != canonVersion {
		t.Errorf("canonical headers = %q, want %q", got, canonVersion)
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"q1", true}, {"1queue", true}, {"telemetry-a1b2", true}, {strings.Repeat("a", 120), true},
		{"", false}, {strings.Repeat("a", 121), false}, {"-q", false}, {"q_1", false}, {"q.1", false},
		{"q 1", false}, {"队列", false}, {"q/1", false},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// A request's V2 Authorization header is one allocation: its text. The
// HMAC state keyed with the secret is kept between requests (hmac.New made
// five objects a request), and a rotated secret signs with its own key.
func TestAuthorizationAllocatesOnce(t *testing.T) {
	sts := appendStringToSign(nil, "POST", "", contentType, "Tue, 03 Jun 2025 11:23:48 GMT", canonUserRequestID+"0123456789abcdef\n"+canonVersion, "/queues/q/messages")
	want := authorization("ak1", "sk1", sts)
	if raceEnabled {
		t.Log("not counting allocations under the race detector (sync.Pool drops items there)")
	} else if n := testing.AllocsPerRun(100, func() {
		if got := authorization("ak1", "sk1", sts); got != want {
			t.Fatalf("authorization = %s, want %s", got, want)
		}
	}); n > 1 {
		t.Errorf("authorization allocates %.1f objects, want 1", n)
	}
	// Another secret, then the first again: each signs with its own key.
	other := authorization("ak1", "sk2", sts)
	if other == want {
		t.Fatalf("secrets sk1 and sk2 gave the same signature %s", want)
	}
	if got := authorization("ak1", "sk1", sts); got != want {
		t.Errorf("after sk2, sk1 signs %s, want %s", got, want)
	}
}
