package mns

import (
	"fmt"
	"net/url"
	"strconv"
)

// endpointForm is the documented form of an MNS endpoint.
const endpointForm = "http(s)://ACCOUNT_ID.mns.REGION.aliyuncs.com"

// ParseEndpoint checks an MNS endpoint and returns it as scheme://host[:port]:
// http or https, a host, an optional port, nothing after the host. It is
// the one check of the endpoint: the client and the config validation use
// it. The error is the reason only; callers name the field.
func ParseEndpoint(ep string) (string, error) {
	if ep == "" {
		return "", fmt.Errorf("required: %s", endpointForm)
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return "", fmt.Errorf("%q must be http(s)://host[:port] (a scheme and a host), like %s", ep, endpointForm)
	}
	if u.User != nil {
		return "", fmt.Errorf("%q must not carry user info: the AccessKey goes in the credentials", ep)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q must have no path or query: drop everything after the host", ep)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q has port %q: use 1 to 65535", ep, p)
		}
	}
	return u.Scheme + "://" + u.Host, nil
}

// ValidRegion reports whether s looks like a region id (cn-hangzhou,
// eu-west-1, ...): lower-case letters, digits and '-', not at either end.
func ValidRegion(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
