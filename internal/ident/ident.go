// Package ident holds the one rule for the names of the config's small
// languages: an identifier is a letter or '_' followed by letters, digits
// and '_' (ASCII). It is the rule of a route's named segment
// ({productKey} in a pattern or template) and of an environment variable
// in ${NAME}.
package ident

// Valid reports whether s is an identifier.
func Valid(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
