package mnsemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// V4 ("MNS4-HMAC-SHA256") verification, written from the published
// algorithm (not shared with the client): the server rebuilds the signed
// date-time from the Date header, takes the region from the Credential and
// signs the method, the path, the query and the Content-Type, Content-MD5
// and x-mns-* headers.

// v4Names are the literal strings of a V4 variant.
type v4Names struct {
	algorithm, keyPrefix, request string
}

var (
	v4Public = v4Names{"MNS4-HMAC-SHA256", "aliyun_v4", "aliyun_v4_request"}
	// v4IDPT is the Apsara Stack variant; the emulator accepts it too.
	v4IDPT = v4Names{"APSARA-MNS4-HMAC-SHA256", "apsara_v4", "apsara_v4_request"}
)

// v4Credential is the parsed Authorization of a V4 request.
type v4Credential struct {
	names                   v4Names
	id, day, region, sigHex string
}

// parseV4Authorization parses "ALG Credential=id/D/region/mns/REQ,Signature=hex";
// ok is false when auth is not a V4 header at all.
func parseV4Authorization(auth string) (c v4Credential, ok bool, err *apiError) {
	alg, rest, _ := strings.Cut(auth, " ")
	switch alg {
	case v4Public.algorithm:
		c.names = v4Public
	case v4IDPT.algorithm:
		c.names = v4IDPT
	default:
		return c, false, nil
	}
	bad := errf(400, "InvalidAuthorizationHeader", "The Authorization header is not \""+alg+" Credential=AccessKeyId/yyyyMMdd/region/mns/"+c.names.request+",Signature=hex\".")
	cred, sig, found := strings.Cut(rest, ",")
	cred, ok1 := strings.CutPrefix(cred, "Credential=")
	sig, ok2 := strings.CutPrefix(sig, "Signature=")
	if !found || !ok1 || !ok2 || sig == "" {
		return c, true, bad
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[0] == "" || len(parts[1]) != 8 || parts[2] == "" || parts[3] != "mns" || parts[4] != c.names.request {
		return c, true, bad
	}
	c.id, c.day, c.region, c.sigHex = parts[0], parts[1], parts[2], sig
	return c, true, nil
}

// v4Escape percent-encodes every byte but the unreserved characters
// (and '/', when path is true), with upper-case hex.
func v4Escape(s string, path bool) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-_.~", c) >= 0:
			b.WriteByte(c)
		case c == '/' && path:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

// v4CanonicalRequest builds the canonical request from a decoded path, the
// decoded query (as net/url parses it: a key without '=' has value "") and
// the headers.
func v4CanonicalRequest(method, path string, query url.Values, h http.Header) string {
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	// Sorted by encoded key only ("k=..." would sort after "k-x" as a
	// string); a key's values keep the request's order.
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	type param struct{ key, pair string }
	var params []param
	for _, name := range keys {
		k := v4Escape(strings.ToLower(strings.TrimSpace(name)), false)
		for _, v := range query[name] {
			p := param{key: k, pair: k}
			if v = v4Escape(strings.TrimSpace(v), false); v != "" {
				p.pair += "=" + v
			}
			params = append(params, p)
		}
	}
	sort.SliceStable(params, func(i, j int) bool { return params[i].key < params[j].key })
	pairs := make([]string, len(params))
	for i, p := range params {
		pairs[i] = p.pair
	}
	signed := map[string][]string{}
	for k, vs := range h {
		lk := strings.ToLower(k)
		if lk == "content-type" || lk == "content-md5" || strings.HasPrefix(lk, "x-mns-") {
			for _, v := range vs {
				signed[lk] = append(signed[lk], strings.TrimSpace(v))
			}
		}
	}
	names := make([]string, 0, len(signed))
	for n := range signed {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(method + "\n" + v4Escape(path, true) + "\n" + strings.Join(pairs, "&") + "\n")
	for _, n := range names {
		b.WriteString(n + ":" + strings.Join(signed[n], ",") + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// v4Sign returns the hex signature of canon for secret at the date-time dt
// (yyyyMMddTHHmmssZ) in region.
func v4Sign(n v4Names, secret, dt, region, canon string) string {
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	day := dt[:8]
	key := mac(mac(mac(mac([]byte(n.keyPrefix+secret), day), region), "mns"), n.request)
	sts := n.algorithm + "\n" + dt + "\n" + day + "/" + region + "/mns/" + n.request + "\n" + canon
	return hex.EncodeToString(mac(key, sts))
}

// verifyV4 checks a V4 request signed at t (the Date header).
func (e *Emulator) verifyV4(r *http.Request, c v4Credential, t time.Time) *apiError {
	secret, known := e.secretOf(c.id)
	if !known {
		return errf(403, "InvalidAccessKeyId", "The access Id you provided is not exist.")
	}
	dt := t.UTC().Format("20060102T150405Z")
	if c.day != dt[:8] {
		return errf(403, "SignatureDoesNotMatch", "The date in the Credential ("+c.day+") is not the date of the Date header ("+dt[:8]+").")
	}
	if e.cfg.Region != "" && c.region != e.cfg.Region {
		return errf(403, "SignatureDoesNotMatch", "The region in the Credential ("+c.region+") is not this endpoint's region ("+e.cfg.Region+").")
	}
	canon := v4CanonicalRequest(r.Method, r.URL.Path, r.URL.Query(), r.Header)
	if !hmac.Equal([]byte(c.sigHex), []byte(v4Sign(c.names, secret, dt, c.region, canon))) {
		e.log.Debug("V4 signature mismatch", "canonical_request", canon)
		return errf(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
	}
	return nil
}
