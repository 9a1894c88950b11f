package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads the config file at path, expanding variables from the process
// environment; see Parse.
func Load(path string) (*Config, error) {
	cfg, _, err := LoadData(path)
	return cfg, err
}

// LoadData is Load that also returns the file's contents as it read and
// parsed them (what a reload compares the file with), also when Parse
// fails.
func LoadData(path string) (*Config, []byte, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := Parse(data, path, os.LookupEnv)
	return cfg, data, err
}

func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return data, nil
}

// Parse decodes a config file's contents over Default, resolves relative
// paths, defaults mns.credentials to the source's and validates the result.
// path names the file in errors and is the base of relative paths ("" for
// the current directory); env looks up variables (os.LookupEnv; nil means an
// empty environment).
//
// It fails, with every problem it finds joined into one error, when a key
// is unknown, a ${VAR} has no value, a value has the wrong type or Validate
// rejects the result. Each problem is a *FieldError with the file, the line
// and the key's path, once, in the order of the lines. A value that does not
// decode (an unset ${VAR}, a bad duration, size, number, a list for a
// value) keeps its default and the rest is still decoded and validated,
// without the checks of that key or of the keys compared with it: no
// follow-on errors. A value reused through a YAML alias (*name) is checked
// at each key that uses it and reported at the alias' line, also when it
// failed at its anchor's key. Only the file's YAML syntax and its structure
// (a second document, no mapping, a key that is no name) stop at once.
// Secret values never appear in errors.
//
// Secret files (*_file keys) are read during validation and again whenever
// they change; see SourceSecrets.
func Parse(data []byte, path string, env func(string) (string, bool)) (*Config, error) {
	cfg, w, err := decode(data, path, env, nil)
	if err != nil {
		return nil, err
	}
	if _, set := w.lines["spool.dir"]; !set && !cfg.Source.SpoolByDefault() {
		// The source redelivers by itself: the default spool is not
		// needed (see Spool).
		cfg.Spool.Dir = ""
	}
	cfg.resolve(w.env) // env, or an empty environment for nil
	if err := report(append(w.errs, cfg.Validate())); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// report joins the problems of every phase (the walker's, validation's)
// into one error: each *FieldError once, in the order of their lines (those
// without a line last), so that an operator reads the file top to bottom.
func report(errs []error) error {
	var flat []error
	var add func(err error)
	add = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				add(e)
			}
			return
		}
		if err != nil && !slices.ContainsFunc(flat, func(e error) bool { return e.Error() == err.Error() }) {
			flat = append(flat, err)
		}
	}
	for _, err := range errs {
		add(err)
	}
	line := func(err error) int {
		var fe *FieldError
		if errors.As(err, &fe) && fe.Line > 0 {
			return fe.Line
		}
		return math.MaxInt
	}
	slices.SortStableFunc(flat, func(a, b error) int { return cmp.Compare(line(a), line(b)) })
	return errors.Join(flat...)
}

// decode decodes the one YAML document data over Default, after the
// walker's checks (unknown keys, types, ${VAR} expansion; the line of every
// key). With a keep function only the top-level keys it keeps are walked
// and decoded: the other sections are the file's YAML and nothing more.
//
// The error is the file's YAML syntax, a second document, a file that is no
// mapping, or a problem of the file's structure (a key that is no plain
// name, too many values, a value yaml.v3 still refuses). Unknown keys and
// values that do not fit their key (a bad duration, size, number or bool, a
// ${VAR} with no value, a list where a value belongs) are returned in
// w.errs with the rest decoded: such a value keeps its default and its key
// is in cfg's failed set, so that validation skips the checks that depend
// on it and the caller reports every problem of the file at once.
func decode(data []byte, path string, env func(string) (string, bool), keep func(key string) bool) (cfg Config, w *walker, err error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	cfg = Default()
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// KnownFields has no effect on a yaml.Node target: the walker below does
	// the strict key check itself, with the key's path and line.
	dec.KnownFields(true)
	// A syntax error leaves no tree to check: it is the only problem
	// reported, and says so.
	stopped := func(err error) error {
		fe := syntaxError(path, err)
		fe.Reason += " (the rest of the file is checked once it is valid YAML)"
		return fe
	}
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return cfg, nil, stopped(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return cfg, nil, stopped(err)
		}
		return cfg, nil, &FieldError{File: path, Line: extra.Line, Reason: "a second YAML document (---): the config is one document"}
	}

	w = &walker{file: path, env: env, lines: map[string]int{}, failed: map[string]bool{}, expanded: map[*yaml.Node]bool{},
		dropped: map[*yaml.Node]*yaml.Node{}}
	if len(root.Content) > 0 {
		top := root.Content[0]
		if top.Kind != yaml.MappingNode && !isNull(top) {
			return cfg, nil, &FieldError{File: path, Line: top.Line, Reason: "the file must be a mapping of keys (source:, mns:, routes:, ...)"}
		}
		doc := &root
		if keep != nil && top.Kind == yaml.MappingNode {
			kept := &yaml.Node{Kind: yaml.MappingNode}
			for i := 0; i+1 < len(top.Content); i += 2 {
				if k := top.Content[i]; k.Kind == yaml.ScalarNode && keep(k.Value) {
					kept.Content = append(kept.Content, k, top.Content[i+1])
				}
			}
			top, doc = kept, kept
		}
		w.walk(top, reflect.TypeOf(cfg), "")
		if w.fatal > 0 {
			return cfg, nil, errors.Join(w.errs...)
		}
		if err := doc.Decode(&cfg); err != nil {
			return cfg, nil, errors.Join(append(w.errs, decodeError(path, err))...)
		}
	}
	cfg.Path = path
	cfg.meta = &loadInfo{lines: w.lines, failed: w.failed, files: map[string]secretFile{}}
	return cfg, w, nil
}

// resolve makes relative paths absolute against the config file's directory
// (secret files: against $CREDENTIALS_DIRECTORY when set; spool.dir,
// delivery.dead_letter.file and delivery.dedup.file: against
// $STATE_DIRECTORY when set) and defaults
// mns.credentials to the source's.
func (c *Config) resolve(env func(string) (string, bool)) {
	base := ""
	if c.Path != "" {
		base = filepath.Dir(c.Path)
		if abs, err := filepath.Abs(base); err == nil {
			base = abs
		}
	}
	secretBase, stateBase := base, base
	if dir, ok := env("CREDENTIALS_DIRECTORY"); ok && dir != "" {
		secretBase = dir
	}
	// systemd's StateDirectory= (and the container image) set
	// $STATE_DIRECTORY: the spool and the dead-letter file belong there, not
	// next to a config in read-only /etc.
	if dir, ok := env("STATE_DIRECTORY"); ok && dir != "" {
		c.StateDir = strings.Split(dir, ":")[0] // systemd lists several as a:b
		stateBase = c.StateDir
	}
	rel := func(dir string, p *string) {
		if *p != "" && dir != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	rel(base, &c.Source.TLS.CAFile)
	rel(base, &c.HTTP.WebConfigFile)
	rel(stateBase, &c.Spool.Dir)
	rel(stateBase, &c.Delivery.DeadLetter.File)
	rel(stateBase, &c.Delivery.Dedup.File)
	for _, cr := range []*Credentials{&c.Source.Credentials, &c.MNS.Credentials} {
		rel(secretBase, &cr.AccessKeyIDFile)
		rel(secretBase, &cr.AccessKeySecretFile)
		rel(secretBase, &cr.SecurityTokenFile)
		rel(secretBase, &cr.CredentialsFile)
	}
	if c.MNS.Credentials == (Credentials{}) {
		c.MNS.Credentials = c.Source.Credentials
	}
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// syntaxError turns a yaml.v3 error ("yaml: line 3: ...") into a FieldError.
func syntaxError(path string, err error) *FieldError {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return &FieldError{File: path, Line: line, Reason: "not valid YAML: " + msg}
}

// decodeError converts what yaml.v3's decoder reports after the walker's
// checks; the walker catches the type errors it knows of first.
func decodeError(path string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return &FieldError{File: path, Reason: err.Error()}
	}
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		errs = append(errs, syntaxError(path, errors.New(e)))
	}
	return errors.Join(errs...)
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

// maxVisits bounds the walk over a file whose aliases multiply its nodes.
const maxVisits = 100000

// walker checks the node tree against the Config type before decoding:
// unknown keys, scalars of the wrong type, and the ${VAR} expansion of every
// scalar value (never of keys or comments). It records the line of every key.
type walker struct {
	file string
	env  func(string) (string, bool)
	errs []error
	// fatal counts the errors in errs that stop the decoding (see
	// stop). Unknown keys and values that do not fit (see fail) leave
	// the rest of the file to be decoded and validated, so every problem
	// is reported at once.
	fatal    int
	lines    map[string]int
	failed   map[string]bool // key paths whose value fail rejected
	expanded map[*yaml.Node]bool
	// dropped holds, for each node fail dropped, the value it had: an
	// alias of it (or of a parent) is checked at its own key.
	dropped map[*yaml.Node]*yaml.Node
	// aliasLine is the line of the alias being walked through (the
	// outermost), 0 when none: the nodes under it are the walker's own
	// copies, reported at that line.
	aliasLine int
	visits    int
}

// fail reports the value n of the key at path and drops it from the tree
// (a null, which keeps the key's default): the rest of the file is still
// decoded, and validation skips the key (see Config.failed).
func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{File: w.file, Line: n.Line, Path: path, Reason: fmt.Sprintf(format, args...)})
	w.failed[path] = true
	was := *n
	w.dropped[n] = &was
	if w.expanded[n] {
		w.expanded[&was] = true
	}
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

// own returns the walker's own copy of n, to be walked through an alias at
// the alias' line: the value n had before fail dropped it, if it did (it
// failed at the anchor's key, and is checked again at this one), in its
// state of ${VAR} expansion. A copy's checks, expansion and failure touch
// neither the anchor's value nor its other aliases'.
func (w *walker) own(n *yaml.Node) *yaml.Node {
	if was, ok := w.dropped[n]; ok {
		n = was
	}
	c := *n
	c.Line = w.aliasLine
	if w.expanded[n] {
		w.expanded[&c] = true
	}
	return &c
}

// stop reports a problem of the file's structure, after which the file is
// not decoded.
func (w *walker) stop(n *yaml.Node, path, format string, args ...any) {
	w.fatal++
	w.errs = append(w.errs, &FieldError{File: w.file, Line: n.Line, Path: path, Reason: fmt.Sprintf(format, args...)})
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	w.visits++
	if w.visits > maxVisits {
		if w.visits == maxVisits+1 {
			w.stop(n, path, "the file has more than %d values (aliases that repeat each other?)", maxVisits)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias != nil {
			// The key gets a copy of the anchored value (and of its
			// children, below), at the alias' line: a value that does
			// not fit this key, or failed at the anchor's, is reported
			// here and dropped here, the anchor and its other users are
			// checked on their own. An alias is walked once per use
			// (maxVisits bounds aliases that repeat each other).
			outer := w.aliasLine
			if outer == 0 {
				w.aliasLine = n.Line
			}
			c := w.own(n.Alias)
			w.walk(c, t, path)
			w.aliasLine = outer
			*n = *c
			if w.expanded[c] {
				w.expanded[n] = true // walked again through a shared parent
			}
		}
		return
	}
	if w.aliasLine > 0 && len(n.Content) > 0 {
		// n is a copy (own): its children become copies too.
		content := make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			content[i] = w.own(child)
		}
		n.Content = content
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode {
		w.expand(n, t, path)
	}
	if isNull(n) {
		return // keeps the default
	}
	switch {
	case t == durationType:
		w.duration(n, path)
		return
	case t == sizeType:
		if w.scalar(n, path, "a size like 64MiB") {
			if _, err := ParseSize(n.Value); err != nil {
				w.fail(n, path, "%v", err)
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		w.mapping(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list (lines starting with '- ')")
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = item.Line
			if isNull(item) {
				// yaml.v3 would drop it, or give an empty entry: both hide
				// a half-written item.
				w.fail(item, p, "is an empty entry: fill it in or remove its '-' line")
			} else {
				w.walk(item, t.Elem(), p)
			}
			if w.failed[p] {
				// yaml.v3 drops a null item, which would move the
				// items after it to other paths: an empty one keeps them.
				empty(item, t.Elem())
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping (name: value lines)")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := path + "." + n.Content[i].Value
			w.lines[p] = n.Content[i].Line
			w.walk(n.Content[i+1], t.Elem(), p)
		}
	case reflect.String:
		w.scalar(n, path, "a single value")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if w.scalar(n, path, "a whole number") {
			var v int64
			// yaml.v3 truncates a float into an int (1.5 becomes 1): only an
			// !!int is a whole number.
			switch err := n.Decode(&v); {
			case n.ShortTag() == "!!int" && err == nil && !reflect.Zero(t).OverflowInt(v):
			case quotedAs(n, "!!int"):
				w.fail(n, path, "%q is quoted, which makes it text: write the number without quotes", n.Value)
			case n.ShortTag() == "!!int" || beyondInt64(n.Value):
				w.fail(n, path, "%q is too large a number", n.Value)
			default:
				w.fail(n, path, "%q is not a whole number: write one in digits, like 4", n.Value)
			}
		}
	case reflect.Bool:
		if w.scalar(n, path, "true or false") {
			var v bool
			switch err := n.Decode(&v); {
			case err == nil:
			case quotedAs(n, "!!bool"):
				w.fail(n, path, "%q is quoted, which makes it text: write true or false without quotes", n.Value)
			default:
				w.fail(n, path, "%q is not true or false: write true or false", n.Value)
			}
		}
	}
}

// quotedAs reports a quoted scalar whose text, unquoted, YAML would read
// as tag (!!int, !!bool): the quotes make it a string.
func quotedAs(n *yaml.Node, tag string) bool {
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
		return false
	}
	plain := yaml.Node{Kind: yaml.ScalarNode, Value: n.Value}
	return plain.ShortTag() == tag
}

// beyondInt64 reports whether s is a whole number in digits too large for an
// int64, which YAML reads as a float rather than an !!int.
func beyondInt64(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return errors.Is(err, strconv.ErrRange)
}

// empty makes n a value that decodes into t's zero value (a list item
// that failed keeps its place).
func empty(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		n.Kind, n.Tag = yaml.MappingNode, "!!map"
	case t.Kind() == reflect.Slice:
		n.Kind, n.Tag = yaml.SequenceNode, "!!seq"
	case t == durationType:
		n.Tag, n.Value = "!!str", "0s"
	case t.Kind() == reflect.String:
		n.Tag = "!!str"
	case t.Kind() == reflect.Bool:
		n.Tag, n.Value = "!!bool", "false"
	default:
		n.Tag, n.Value = "!!int", "0"
	}
}

// scalar reports whether n is a single value, and complains when it is not.
func (w *walker) scalar(n *yaml.Node, path, what string) bool {
	if n.Kind == yaml.ScalarNode {
		return true
	}
	w.fail(n, path, "must be %s, not a list or a mapping", what)
	return false
}

// expand replaces ${VAR} in a scalar value, once per node (an alias may
// reach a node twice). A plain scalar that changed is re-typed by its new
// text, except for string fields, which take it as it is.
func (w *walker) expand(n *yaml.Node, t reflect.Type, path string) {
	if w.expanded[n] || !strings.Contains(n.Value, "$") {
		return
	}
	v, err := expand(n.Value, w.env)
	if err != nil {
		// Not marked expanded: an alias of it expands, and fails, at
		// its own key.
		if t == reflect.TypeOf(Secret("")) {
			// A secret has a *_file twin, the way the systemd unit and the
			// image pass it (from $CREDENTIALS_DIRECTORY).
			key := path[strings.LastIndexByte(path, '.')+1:]
			how := ""
			if key == "access_key_secret" {
				how = " (the systemd unit and the image pass it so: access_key_secret_file: access_key_secret)"
			}
			w.fail(n, path, "%v; or keep the secret in a file and name it with %s_file instead%s", err, key, how)
			return
		}
		w.fail(n, path, "%v", err)
		return
	}
	w.expanded[n] = true
	if v == n.Value {
		return
	}
	n.Value = v
	switch {
	case t.Kind() == reflect.String:
		n.Tag = "!!str"
	case n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0:
		n.Tag = "" // resolve again from the expanded text
	}
}

// duration checks a Go duration ("30s", "1m30s"); a bare 0 is allowed and
// rewritten to "0s", since yaml.v3 refuses numbers for durations.
func (w *walker) duration(n *yaml.Node, path string) {
	if !w.scalar(n, path, "a duration like 30s") {
		return
	}
	if n.Value == "0" {
		n.Value, n.Tag = "0s", "!!str"
		return
	}
	if _, err := time.ParseDuration(n.Value); err != nil {
		w.fail(n, path, "%q is not a duration: write a number with a unit, like 500ms, 30s, 1m30s or 2h", n.Value)
		return
	}
	n.Tag = "!!str"
}

// mapping checks the keys of a struct's mapping, following merge keys (<<).
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.fail(n, path, "must be a mapping of keys (key: value lines)")
		return
	}
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.stop(k, path, "a key must be a plain name")
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			w.merge(v, t, path)
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			w.errs = append(w.errs, &FieldError{File: w.file, Line: k.Line, Reason: unknownKey(k.Value, path, fields)})
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		w.lines[p] = k.Line
		w.walk(v, f, p)
	}
}

func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	for _, item := range items {
		n, failed := len(w.errs), w.failed[path]
		w.walk(item, t, path)
		if len(w.errs) > n && isNull(item) {
			// fail dropped it: yaml.v3 merges only mappings. The keys
			// of path written next to it are still checked.
			empty(item, t)
			w.failed[path] = failed
		}
	}
}

func unknownKey(key, path string, fields map[string]reflect.Type) string {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	msg := fmt.Sprintf("unknown key %q %s", key, where)
	best, bestD := "", min(3, len(key)/2)+1 // suggest only a close name
	for name := range fields {
		if d := editDistance(key, name); d < bestD || d == bestD && name < best {
			best, bestD = name, d
		}
	}
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	}
	return msg
}

// yamlFields maps a struct's yaml key names to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// editDistance is the Levenshtein distance of two short keys.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
