package mns

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// APIVersion is the x-mns-version header every request carries.
const APIVersion = "2015-06-06"

// canonicalMNSHeaders returns the CanonicalizedMNSHeaders part of the V2
// string to sign: every header whose lower-cased name starts with "x-mns-",
// as "name:value\n", sorted by name, values trimmed. Several values of one
// header are joined with ",".
func canonicalMNSHeaders(h http.Header) string {
	var names []string
	vals := make(map[string]string)
	for k, v := range h {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "x-mns-") {
			continue
		}
		trimmed := make([]string, len(v))
		for i := range v {
			trimmed[i] = strings.TrimSpace(v[i])
		}
		if _, dup := vals[lk]; !dup {
			names = append(names, lk)
			vals[lk] = strings.Join(trimmed, ",")
		} else {
			vals[lk] += "," + strings.Join(trimmed, ",")
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(':')
		b.WriteString(vals[n])
		b.WriteByte('\n')
	}
	return b.String()
}

// appendStringToSign appends the V2 string to sign to dst:
//
//	VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedMNSHeaders CanonicalizedResource
//
// canonHeaders is already in canonical form (see canonicalMNSHeaders);
// resource is the path plus the raw query exactly as sent.
func appendStringToSign(dst []byte, method, contentMD5, contentType, date, canonHeaders, resource string) []byte {
	dst = appendLines(dst, method, contentMD5, contentType, date)
	dst = append(dst, canonHeaders...)
	return append(dst, resource...)
}

// appendLines appends each of lines to dst, each followed by '\n'.
func appendLines(dst []byte, lines ...string) []byte {
	for _, l := range lines {
		dst = append(dst, l...)
		dst = append(dst, '\n')
	}
	return dst
}

// signature returns base64(HMAC-SHA1(secret, stringToSign)).
func signature(secret string, stringToSign []byte) string {
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(v2MACs.sum(secret, stringToSign, sum[:0]))
}

// authorization returns the Authorization header value "MNS id:signature",
// made in one allocation (TestAuthorizationAllocatesOnce).
func authorization(id, secret string, stringToSign []byte) string {
	var sum [sha1.Size]byte
	var enc [28]byte // base64 of a SHA-1 sum
	base64.StdEncoding.Encode(enc[:], v2MACs.sum(secret, stringToSign, sum[:0]))
	var b strings.Builder
	b.Grow(len("MNS ") + len(id) + 1 + len(enc))
	b.WriteString("MNS ")
	b.WriteString(id)
	b.WriteByte(':')
	b.Write(enc[:])
	return b.String()
}

// keyedMACs keeps HMAC states keyed once, to sign request after request
// with the same key: hmac.New allocates the state, two digests and both
// padded keys, and hashes the key's two blocks, every time (five
// allocations and about a third of a V2 signature's CPU). A state keyed
// with another key (a rotated secret, the next day's V4 key) is dropped.
type keyedMACs struct {
	hash func() hash.Hash
	pool sync.Pool // of *keyedMAC
}

type keyedMAC struct {
	key string
	mac hash.Hash
	sum [sha256.Size]byte // the sum, here: a slice handed to the interface's Sum escapes
}

var (
	v2MACs = keyedMACs{hash: sha1.New}
	v4MACs = keyedMACs{hash: sha256.New}
)

// sum appends HMAC(key, data) to dst.
func (p *keyedMACs) sum(key string, data, dst []byte) []byte {
	m, _ := p.pool.Get().(*keyedMAC)
	if m == nil || m.key != key {
		m = &keyedMAC{key: key, mac: hmac.New(p.hash, []byte(key))}
	} else {
		m.mac.Reset()
	}
	m.mac.Write(data)
	dst = append(dst, m.mac.Sum(m.sum[:0])...)
	p.pool.Put(m)
	return dst
}

// V4 ("MNS4-HMAC-SHA256") signing, as the Java SDK 2.0 signs and the
// newer gateway requires:
//
//	CanonicalRequest = METHOD\n URI\n Query\n (name:value\n)* \n
//	StringToSign     = MNS4-HMAC-SHA256\n yyyyMMddTHHmmssZ\n D/region/mns/aliyun_v4_request\n CanonicalRequest
//	key              = HMAC256(HMAC256(HMAC256(HMAC256("aliyun_v4"+secret, D), region), "mns"), "aliyun_v4_request")
//	Authorization    = MNS4-HMAC-SHA256 Credential=id/D/region/mns/aliyun_v4_request,Signature=hex(HMAC256(key, StringToSign))
//
// Only Content-Type, Content-MD5 and the x-mns-* headers are signed; the
// date-time never travels: the server rebuilds it from the Date header, so
// both come from one instant. There is no payload hash.

// v4Scheme holds the literal strings of a V4 variant: the public cloud's,
// or the Apsara ("IDPT") one, which only the official vectors use here.
type v4Scheme struct {
	algorithm, keyPrefix, terminator string
}

var (
	v4Aliyun = v4Scheme{"MNS4-HMAC-SHA256", "aliyun_v4", "aliyun_v4_request"}
	v4Apsara = v4Scheme{"APSARA-MNS4-HMAC-SHA256", "apsara_v4", "apsara_v4_request"}
)

// v4DateTime is the layout of the signed date-time (UTC).
const v4DateTime = "20060102T150405Z"

// v4Param is one query parameter, decoded.
type v4Param struct{ key, value string }

// v4Encode percent-encodes s (its UTF-8 bytes, upper-case hex), keeping
// A-Z a-z 0-9 - _ . ~ and, when keepSlash, '/'.
func v4Encode(dst []byte, s string, keepSlash bool) []byte {
	const hexU = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && keepSlash) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexU[c>>4], hexU[c&15])
	}
	return dst
}

// v4Params splits the query of a resource ("path?a=b&c") into decoded
// parameters; a parameter without '=' has an empty value.
func v4Params(query string) []v4Param {
	var ps []v4Param
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		ps = append(ps, v4Param{k, v})
	}
	return ps
}

// appendV4CanonicalRequest appends the canonical request of a V4 signature.
// path is the request path (unescaped; its query, if any, joins params);
// params are decoded; h holds the headers to consider.
func appendV4CanonicalRequest(dst []byte, method, path string, params []v4Param, h http.Header) []byte {
	if p, q, ok := strings.Cut(path, "?"); ok {
		path = p
		params = append(v4Params(q), params...)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	dst = append(dst, method...)
	dst = append(dst, '\n')
	dst = v4Encode(dst, path, true)
	dst = append(dst, '\n')
	if len(params) > 0 {
		enc := make([][2]string, len(params))
		for i, p := range params {
			enc[i] = [2]string{
				string(v4Encode(nil, strings.ToLower(strings.TrimSpace(p.key)), false)),
				string(v4Encode(nil, strings.TrimSpace(p.value), false)),
			}
		}
		sort.SliceStable(enc, func(i, j int) bool { return enc[i][0] < enc[j][0] })
		for i, kv := range enc {
			if i > 0 {
				dst = append(dst, '&')
			}
			dst = append(dst, kv[0]...)
			if kv[1] != "" {
				dst = append(dst, '=')
				dst = append(dst, kv[1]...)
			}
		}
	}
	dst = append(dst, '\n')
	type hv struct{ name, value string }
	var hs []hv
	for k, vs := range h {
		lk := strings.ToLower(k)
		if lk != "content-type" && lk != "content-md5" && !strings.HasPrefix(lk, "x-mns-") {
			continue
		}
		trimmed := make([]string, len(vs))
		for i, v := range vs {
			trimmed[i] = strings.TrimSpace(v)
		}
		hs = append(hs, hv{lk, strings.Join(trimmed, ",")})
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	for _, x := range hs {
		dst = append(dst, x.name...)
		dst = append(dst, ':')
		dst = append(dst, x.value...)
		dst = append(dst, '\n')
	}
	return append(dst, '\n')
}

func hmac256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// v4SigningKey derives the signing key for secret, day (yyyyMMdd) and
// region.
func (s v4Scheme) signingKey(secret, day, region string) []byte {
	k := hmac256([]byte(s.keyPrefix+secret), day)
	k = hmac256(k, region)
	k = hmac256(k, "mns")
	return hmac256(k, s.terminator)
}

// stringToSign returns the V4 string to sign for the canonical request
// canon signed at dateTime (v4DateTime layout).
func (s v4Scheme) stringToSign(dateTime, region string, canon []byte) []byte {
	day := dateTime[:8]
	b := make([]byte, 0, len(s.algorithm)+len(canon)+80)
	b = appendLines(b, s.algorithm, dateTime)
	b = append(b, day...)
	b = append(b, '/')
	b = append(b, region...)
	b = append(b, "/mns/"...)
	b = append(b, s.terminator...)
	b = append(b, '\n')
	return append(b, canon...)
}

// authorization returns the Authorization header value for a request whose
// canonical request is canon, signed with key (see signingKey).
func (s v4Scheme) authorization(id, dateTime, region, key string, canon []byte) string {
	var sum [sha256.Size]byte
	var enc [2 * sha256.Size]byte
	hex.Encode(enc[:], v4MACs.sum(key, s.stringToSign(dateTime, region, canon), sum[:0]))
	return s.algorithm + " Credential=" + id + "/" + dateTime[:8] + "/" + region + "/mns/" + s.terminator +
		",Signature=" + string(enc[:])
}

// v4KeyCache keeps the last derived signing key: it changes once a day, or
// when the secret is rotated.
type v4KeyCache struct {
	mu                  sync.Mutex
	secret, day, region string
	key                 string
}

func (c *v4KeyCache) get(secret, day, region string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == "" || c.secret != secret || c.day != day || c.region != region {
		c.secret, c.day, c.region = secret, day, region
		c.key = string(v4Aliyun.signingKey(secret, day, region))
	}
	return c.key
}

// RegionFromEndpoint returns the region of an endpoint of the documented
// form http(s)://ACCOUNT_ID.mns.REGION[-internal|-internal-vpc|-control].aliyuncs.com,
// and false for any other (a loopback emulator, a proxy): V4 then needs
// Config.Region.
func RegionFromEndpoint(endpoint string) (string, bool) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false
	}
	return regionOfHost(u.Hostname())
}

// IsEndpointHost reports whether host has the documented form of an MNS
// endpoint's host, ACCOUNT_ID.mns.REGION[-internal|...].aliyuncs.com.
func IsEndpointHost(host string) bool {
	_, ok := regionOfHost(host)
	return ok
}

// regionOfHost is RegionFromEndpoint of a host name, compared as the
// config's host rules compare one: in lower case, without the trailing dot
// of a fully qualified name.
func regionOfHost(host string) (string, bool) {
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(host, ".")), ".")
	if len(labels) != 5 || labels[1] != "mns" || labels[3] != "aliyuncs" || labels[4] != "com" || labels[0] == "" {
		return "", false
	}
	r := labels[2]
	for _, cut := range []string{"-internal", "-control"} {
		if i := strings.Index(r, cut); i > 0 {
			r = r[:i]
		}
	}
	if r == "" {
		return "", false
	}
	return r, true
}

// EndpointWarnings returns what is doubtful about an endpoint that is
// otherwise usable, each about the endpoint (the caller names its setting):
// today an https internal endpoint, as the regions table lists internal
// endpoints with http only.
func EndpointWarnings(endpoint string) []string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" {
		return nil
	}
	labels := strings.Split(strings.ToLower(u.Hostname()), ".")
	if len(labels) == 5 && labels[1] == "mns" && strings.Contains(labels[2], "-internal") && labels[3] == "aliyuncs" && labels[4] == "com" {
		return []string{endpoint + " is an internal endpoint with https, which the MNS regions table does not list " +
			"(internal endpoints are http only: http://" + u.Host + "); if requests fail with TLS errors, use that form"}
	}
	return nil
}
