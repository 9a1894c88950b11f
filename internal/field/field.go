// Package field lets a package speak of its own settings while the
// operator reads the config keys. A package names the fields of its Config
// by their Go path ("TLS.CAFile") in a string type of its own (F), reports
// problems as *Error[F] and gives advice through Names[F]; what the
// operator calls each field is not its to know: the wiring gives it the
// Names (the config keys). Package source (the sources' fields) and package
// mns (the MNS client's) use it.
package field

import (
	"errors"
	"fmt"
)

// Names maps the fields of one package's Config to what the operator calls
// them. A field it does not name is shown as "Config.<field>"; a nil Names
// shows every field that way.
type Names[F ~string] map[F]string

// Of is the operator's name of f.
func (n Names[F]) Of(f F) string {
	if s, ok := n[f]; ok && s != "" {
		return s
	}
	return "Config." + string(f)
}

// Bad is an *Error for f, named by n, with the reason format and args
// (%w wraps as in fmt.Errorf).
func (n Names[F]) Bad(f F, format string, args ...any) error {
	return &Error[F]{Field: f, Name: n.Of(f), Err: fmt.Errorf(format, args...)}
}

// Problems gathers the problems of one Config, each an *Error named by
// the Names it came from, so that a check reports every one at once and
// each check reads as a list of rules. The zero value is not usable: use
// Names.Problems.
type Problems[F ~string] struct {
	names Names[F]
	errs  []error
}

// Problems starts an empty list of the problems of a Config named by n.
func (n Names[F]) Problems() *Problems[F] { return &Problems[F]{names: n} }

// Bad adds the problem of field f: n.Bad(f, format, args...).
func (p *Problems[F]) Bad(f F, format string, args ...any) {
	p.errs = append(p.errs, p.names.Bad(f, format, args...))
}

// Add adds err, already an error naming its field; a nil err adds nothing.
func (p *Problems[F]) Add(err error) {
	if err != nil {
		p.errs = append(p.errs, err)
	}
}

// Err is every problem added, joined (errors.Join), or nil when there is
// none.
func (p *Problems[F]) Err() error { return errors.Join(p.errs...) }

// Error reports a Config field whose value cannot work. Field is the
// field, Name what the operator calls it (Names.Of(Field)) and Err the
// reason; Error() is "Name: reason". Find it with errors.As; Fields lists
// every one in an error.
type Error[F ~string] struct {
	Field F
	Name  string
	Err   error
}

func (e *Error[F]) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *Error[F]) Unwrap() error { return e.Err }

// Fields lists the Field of every *Error[F] in err's tree (through Unwrap
// and errors.Join), in order; nil when there is none.
func Fields[F ~string](err error) []F {
	var out []F
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*Error[F]); ok {
			out = append(out, fe.Field)
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// Has reports whether err holds an *Error[F] for f.
func Has[F ~string](err error, f F) bool {
	for _, g := range Fields[F](err) {
		if g == f {
			return true
		}
	}
	return false
}
