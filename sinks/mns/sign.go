package mns

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"sort"
	"strings"
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
	dst = append(dst, method...)
	dst = append(dst, '\n')
	dst = append(dst, contentMD5...)
	dst = append(dst, '\n')
	dst = append(dst, contentType...)
	dst = append(dst, '\n')
	dst = append(dst, date...)
	dst = append(dst, '\n')
	dst = append(dst, canonHeaders...)
	dst = append(dst, resource...)
	return dst
}

// signature returns base64(HMAC-SHA1(secret, stringToSign)).
func signature(secret string, stringToSign []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(stringToSign)
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(m.Sum(sum[:0]))
}

// authorization returns the Authorization header value "MNS id:signature".
func authorization(id, secret string, stringToSign []byte) string {
	return "MNS " + id + ":" + signature(secret, stringToSign)
}
