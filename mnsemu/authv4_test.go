package mnsemu

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/mnsvectors"
)

// TestV4Vectors: the emulator's verifier computes every official V4
// signature (internal/mnsvectors, from the Java SDK 2.0 tests).
func TestV4Vectors(t *testing.T) {
	vs, err := mnsvectors.LoadV4()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			tm, err := v.When()
			if err != nil {
				t.Fatal(err)
			}
			h := v.Header()
			path, q, _ := strings.Cut(v.Path, "?")
			params, err := url.ParseQuery(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range v.Params {
				params.Add(p[0], p[1])
			}
			n := v4Public
			if v.Apsara {
				n = v4IDPT
			}
			canon := v4CanonicalRequest(v.Method, path, params, h)
			if got := v4Sign(n, v.SK, tm.UTC().Format("20060102T150405Z"), v.Region, canon); got != v.Signature {
				t.Errorf("got %s, want %s\ncanonical request:\n%s", got, v.Signature, canon)
			}
		})
	}
}

// TestV4WholeRequest: a SendMessage signed as the published example
// (testAk/testSk, cn-hangzhou, 2025-12-03 11:23:48 UTC, user request id
// req-1) is accepted with exactly that signature, and stored.
func TestV4WholeRequest(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"my-queue"}, AccessKeys: map[string]string{"testAk": "testSk"}, Region: "cn-hangzhou"})
	at := time.Date(2025, 12, 3, 11, 23, 48, 0, time.UTC)
	v.clk.Add(at.Sub(v.clk.Now()))
	const auth = "MNS4-HMAC-SHA256 Credential=testAk/20251203/cn-hangzhou/mns/aliyun_v4_request,Signature=fd8ca532e5bed08938ef146e934c5718e08d0d7e1c43681d10e0900e29abd0ee"
	st, _, b := v.do(req{method: "POST", path: "/queues/my-queue/messages", id: "testAk", secret: "testSk",
		body: `<Message><MessageBody>hi</MessageBody></Message>`, ctype: "text/xml;charset=UTF-8",
		extra: map[string]string{"x-mns-user-request-id": "req-1"}, token: "tok", auth: auth})
	if st != 201 {
		t.Fatalf("status %d: %s", st, b)
	}
	if m := v.e.Messages("my-queue"); len(m) != 1 || m[0].Body != "hi" {
		t.Fatalf("stored %+v", m)
	}
}

func TestV4Errors(t *testing.T) {
	body := `<Message><MessageBody>x</MessageBody></Message>`
	base := req{method: "POST", path: "/queues/q1/messages", body: body, ctype: "text/xml", v4region: "cn-hangzhou",
		extra: map[string]string{"x-mns-user-request-id": "r1"}}
	with := variant(base)
	wantRefused(t, Config{Queues: []string{"q1"}, Region: "cn-hangzhou"}, []refusal{
		{"wrong secret", with(func(r *req) { r.id, r.secret = "ak", "wrong" }), 403, "SignatureDoesNotMatch"},
		{"unknown key", with(func(r *req) { r.id, r.secret = "nobody", "sk" }), 403, "InvalidAccessKeyId"},
		{"other region", with(func(r *req) { r.v4region = "eu-west-1" }), 403, "SignatureDoesNotMatch"},
		{"credential of another day", with(func(r *req) {
			r.auth = "MNS4-HMAC-SHA256 Credential=ak/20261122/cn-hangzhou/mns/aliyun_v4_request,Signature=00"
		}), 403, "SignatureDoesNotMatch"},
		{"no signature", with(func(r *req) {
			r.auth = "MNS4-HMAC-SHA256 Credential=ak/20261123/cn-hangzhou/mns/aliyun_v4_request"
		}), 400, "InvalidAuthorizationHeader"},
		{"bad scope", with(func(r *req) {
			r.auth = "MNS4-HMAC-SHA256 Credential=ak/20261123/cn-hangzhou/oss/aliyun_v4_request,Signature=00"
		}), 400, "InvalidAuthorizationHeader"},
	})
	// Signed right, the same request is stored; so is a V2 one (both
	// versions are accepted side by side).
	v := newEnv(t, Config{Queues: []string{"q1"}, Region: "cn-hangzhou"})
	if st, _, b := v.do(base); st != 201 {
		t.Fatalf("V4: %d %s", st, b)
	}
	if st, _, b := v.do(with(func(r *req) { r.v4region = "" })); st != 201 {
		t.Fatalf("V2: %d %s", st, b)
	}
	if n := len(v.e.Messages("q1")); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
	if n, none := v.e.Depth("q1"), v.e.Depth("no-such-queue"); n != 2 || none != 0 {
		t.Fatalf("Depth: q1 %d (want 2), no-such-queue %d (want 0)", n, none)
	}
}
