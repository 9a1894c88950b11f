package mnsemu

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

const (
	apiVersion = "2015-06-06"
	// maxSkew is how far a request's Date may be from the server's clock.
	maxSkew = 15 * time.Minute
)

// authenticate checks the version header, the Date window, Content-MD5,
// Content-Type and the V2 or V4 signature, in that order.
func (e *Emulator) authenticate(r *http.Request, body []byte) *apiError {
	switch v := r.Header.Get("X-Mns-Version"); {
	case v == "":
		return errf(400, "MissingVersionHeader", "The x-mns-version header is required.")
	case v != apiVersion:
		return errf(400, "InvalidVersionHeader", "The x-mns-version "+v+" is not supported; use "+apiVersion+".")
	}
	date, xdate := r.Header.Get("Date"), r.Header.Get("X-Mns-Date")
	d := date
	if d == "" {
		d = xdate
	}
	if d == "" {
		return errf(400, "MissingDateHeader", "The Date header is required.")
	}
	t, err := http.ParseTime(d)
	if err != nil {
		return errf(400, "InvalidDateHeader", "The Date header is not in RFC 1123 GMT format.")
	}
	if skew := e.now().Sub(t); skew > maxSkew || skew < -maxSkew {
		return errf(408, "TimeExpired", "The http request you sent is expired.")
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return errf(400, "MissingAuthorizationHeader", "The Authorization header is required.")
	}
	v4c, isV4, aerr := parseV4Authorization(auth)
	if aerr != nil {
		return aerr
	}
	rest, ok := strings.CutPrefix(auth, "MNS ")
	id, sig, ok2 := strings.Cut(rest, ":")
	if !isV4 && (!ok || !ok2 || id == "" || sig == "") {
		return errf(400, "InvalidAuthorizationHeader", "The Authorization header is not \"MNS AccessKeyId:Signature\" (V2) or \"MNS4-HMAC-SHA256 Credential=...,Signature=...\" (V4).")
	}
	if isV4 {
		id = v4c.id
	}
	secret, known := e.secretOf(id)
	if auth := e.cfg.Authorize; auth != nil && known {
		if _, token, _ := auth(id); r.Header.Get("Security-Token") != token {
			return errf(403, "InvalidSecurityToken", "The security token you provided is not the one issued with this access Id.")
		}
	}
	if !known {
		return errf(403, "InvalidAccessKeyId", "The access Id you provided is not exist.")
	}
	md5h := r.Header.Get("Content-Md5")
	if md5h != "" && !validContentMD5(md5h, body) {
		return errf(400, "InvalidDegist", "The Content-MD5 you specified is invalid.")
	}
	ct := r.Header.Get("Content-Type")
	if len(body) > 0 {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "text/xml" && mt != "application/xml") {
			return errf(400, "InvalidContentType", "The Content-Type must be text/xml or application/xml.")
		}
	}
	if isV4 {
		return e.verifyV4(r, v4c, t)
	}
	canon := canonicalHeaders(r.Header)
	dates := []string{date}
	if date == "" {
		dates = []string{xdate}
	}
	for _, res := range resources(r) {
		for _, d := range dates {
			if hmac.Equal([]byte(sig), []byte(sign(secret, r.Method, md5h, ct, d, canon, res))) {
				return nil
			}
		}
	}
	return errf(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
}

// validContentMD5 accepts the SDKs' base64(hex(md5(body))), in either case,
// and the RFC 1864 base64(md5(body)).
func validContentMD5(h string, body []byte) bool {
	sum := md5.Sum(body)
	lower := hex.EncodeToString(sum[:])
	dec, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return false
	}
	return string(dec) == lower || strings.EqualFold(string(dec), lower) || hmac.Equal(dec, sum[:])
}

// canonicalHeaders is the CanonicalizedMNSHeaders of h.
func canonicalHeaders(h http.Header) string {
	var names []string
	for k := range h {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-mns-") {
			names = append(names, k)
		}
	}
	if len(names) == 1 && names[0] == "X-Mns-Version" {
		return "x-mns-version:" + strings.TrimSpace(h["X-Mns-Version"][0]) + "\n"
	}
	sort.Slice(names, func(i, j int) bool { return strings.ToLower(names[i]) < strings.ToLower(names[j]) })
	var b strings.Builder
	for _, k := range names {
		vals := make([]string, len(h[k]))
		for i, v := range h[k] {
			vals[i] = strings.TrimSpace(v)
		}
		b.WriteString(strings.ToLower(k))
		b.WriteByte(':')
		b.WriteString(strings.Join(vals, ","))
		b.WriteByte('\n')
	}
	return b.String()
}

// resources returns the CanonicalizedResource candidates: the path and
// query exactly as sent, and the same with the path unescaped (JavaSDK
// signs the unescaped path).
func resources(r *http.Request) []string {
	uri := r.RequestURI
	if u, err := url.ParseRequestURI(uri); err == nil && u.Host != "" {
		uri = u.RequestURI() // absolute-form request line
	}
	out := []string{uri}
	p, q, hasQ := strings.Cut(uri, "?")
	if up, err := url.PathUnescape(p); err == nil && up != p {
		if hasQ {
			up += "?" + q
		}
		out = append(out, up)
	}
	return out
}

func sign(secret, method, contentMD5, contentType, date, canon, resource string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(method + "\n" + contentMD5 + "\n" + contentType + "\n" + date + "\n" + canon + resource))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// secretOf returns the secret of an AccessKeyId, from Config.Authorize when
// it is set, else from Config.AccessKeys.
func (e *Emulator) secretOf(id string) (string, bool) {
	if auth := e.cfg.Authorize; auth != nil {
		s, _, ok := auth(id)
		return s, ok
	}
	s, ok := e.keys[id]
	return s, ok
}
