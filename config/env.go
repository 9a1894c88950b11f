package config

import (
	"fmt"
	"strings"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/ident"
)

// expand replaces ${VAR} and ${VAR:-default} in s with values from env.
// ${VAR:-default} uses default when VAR is unset or empty; "$$" is a literal
// "$"; any other "$" is kept as it is. A ${VAR} whose variable is unset is an
// error naming it. Errors name variables but never quote the text around
// them or a variable's value, which may be secret.
func expand(s string, env func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated \"${\": close it with '}' or write $$ for a literal '$'")
		}
		expr := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !ident.Valid(name) {
			return "", fmt.Errorf("\"${...}\" does not hold a variable name: use letters, digits and '_' (write $$ for a literal '$')")
		}
		v, ok := env(name)
		switch {
		case hasDef && v == "":
			v = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set: set it, or give a default with ${%s:-default}", name, name)
		}
		b.WriteString(v)
		i += 2 + end
	}
	return b.String(), nil
}
