package config

import (
	"strconv"
	"strings"
)

// FieldError is one problem with the config: where it is (File and Line
// when known) and which key it concerns (Path, e.g. "routes[2].queue").
// Reason never quotes a secret.
type FieldError struct {
	File   string // the config file, "" when built in code
	Line   int    // 1-based line of the key, 0 when unknown
	Path   string // dotted key path; "" for the file as a whole
	Reason string
}

// Error formats as "file:line: path: reason", leaving out what is unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}
