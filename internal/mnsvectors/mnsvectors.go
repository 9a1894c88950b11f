// Package mnsvectors holds the published MNS V4 (MNS4-HMAC-SHA256) signature
// test vectors, once, for the tests of both sides: the client that signs
// (sinks/mns) and the emulator that verifies (mnsemu). Each side computes
// the signatures with its own code; what they share is only the expected
// values, which come from the official SDK tests (see the file's "source").
package mnsvectors

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

//go:embed v4-vectors.json
var v4JSON []byte

// V4 is one signed request and its expected signature.
type V4 struct {
	Name         string      `json:"name"`
	Apsara       bool        `json:"apsara"` // the Apsara Stack variant of the algorithm
	AK           string      `json:"ak"`
	SK           string      `json:"sk"`
	Region       string      `json:"region"`
	Time         string      `json:"time"` // RFC 3339
	Method       string      `json:"method"`
	Path         string      `json:"path"` // may carry a query
	Params       [][2]string `json:"params"`
	Headers      [][2]string `json:"headers"` // as given, not canonicalised
	Signature    string      `json:"signature"`
	SelfComputed bool        `json:"self_computed"` // not official: computed from the documented algorithm
}

// When is the request's time.
func (v V4) When() (time.Time, error) { return time.Parse(time.RFC3339Nano, v.Time) }

// Header is the request's headers as given (keys not canonicalised).
func (v V4) Header() http.Header {
	h := http.Header{}
	for _, kv := range v.Headers {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
	return h
}

// V4Set is the whole file: the vectors, one raw HMAC example and one
// signing key.
type V4Set struct {
	Vectors []V4 `json:"vectors"`
	Raw     struct {
		KeyBase64    string `json:"key_base64"`
		StringToSign string `json:"string_to_sign"`
		Signature    string `json:"signature"`
	} `json:"raw"`
	Key struct {
		SK, Day, Region, Hex string
	} `json:"key"`
}

// LoadV4 returns the vectors; it fails if the file has fewer than the 8
// official ones.
func LoadV4() (V4Set, error) {
	var vs V4Set
	if err := json.Unmarshal(v4JSON, &vs); err != nil {
		return vs, fmt.Errorf("mnsvectors: %w", err)
	}
	if len(vs.Vectors) < 8 {
		return vs, fmt.Errorf("mnsvectors: %d vectors, want the 8 official ones at least", len(vs.Vectors))
	}
	return vs, nil
}
