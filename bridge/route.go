package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Routing
//
// A pattern is a '/'-separated topic filter that starts with '/'. Each
// segment is one of:
//
//	literal   matches exactly that segment (byte for byte)
//	+         matches any one segment, including an empty one
//	{name}    matches one non-empty segment and captures it as name
//	#         matches the rest of the topic: zero or more segments (last only)
//
// The platform forwards some topics with a leading "/sys" and some without,
// so a leading "/sys" is optional on either side: the pattern
// "/{productKey}/{deviceName}/thing/event/property/post" matches
// "/sys/a1/d1/thing/event/property/post" too, and a pattern written with
// "/sys/..." matches the topic without it. An empty topic, or one that does
// not start with '/', matches no pattern.
//
// Queue names, topic names and message tags are templates: literal text
// with {name} placeholders that take the value of the pattern's named
// segment.

// MaxTagLen is the longest MNS message tag, in characters.
const MaxTagLen = 16

// maxCaptures bounds the named segments of one pattern, so that matching
// keeps its captures on the stack.
const maxCaptures = 16

// renderCacheSize bounds the rendered routes cached per rule; the cache is
// emptied when it is full (a simple bound that follows a moving working set).
const renderCacheSize = 4096

// RouteSpec is one config rule (routes[i]): Match is the pattern, and
// exactly one of Queue and Topic is the destination template. MessageTag is
// an optional tag template, for topics only. MessageGroupID (the MNS
// MessageGroupId of FIFO queues and topics) and the Values of Properties
// (MNS user properties, STRING) are optional templates too.
type RouteSpec struct {
	Match, Queue, Topic, MessageTag string
	MessageGroupID                  string
	Properties                      []RouteProperty
}

// RouteProperty is one MNS user property a route attaches: a literal name
// and a value template.
type RouteProperty struct {
	Name, Value string
}

// DefaultRouteSpec takes the messages that no rule matches: to Queue, or to
// Topic (with MessageTag), or, when DeadLetter is true or all are empty, to
// the dead-letter target. Its names are literal: there is no pattern to
// take placeholder values from.
type DefaultRouteSpec struct {
	Queue, Topic, MessageTag string
	MessageGroupID           string
	Properties               []RouteProperty
	DeadLetter               bool
}

// Route is where one message goes.
type Route struct {
	// Dest is the MNS queue or topic; zero when DeadLetter.
	Dest Destination
	// Tag is the MNS message tag ("" for none; topics only).
	Tag string
	// GroupID is the MNS MessageGroupId ("" for none).
	GroupID string
	// Properties are the route's own MNS user properties, rendered; nil
	// for none. Shared and read-only (a pointer keeps Route comparable).
	Properties *[]Property
	// DeadLetter says the message goes to the dead-letter target instead.
	DeadLetter bool
	// Reason says why, when DeadLetter, e.g. `no route matches topic "/x"`
	// or `routes[1]: rendered queue name "a_b" is invalid: ...`.
	Reason string
	// Rule is the index of the matching rule, -1 for the default route or
	// when nothing matched.
	Rule int
}

// Router maps a message topic to a Route. It is built once from the config
// and is safe for concurrent use.
type Router struct {
	rules     []*rule
	def       Route // Rule -1; DeadLetter when there is no default destination
	validName func(string) error
}

type segKind uint8

const (
	segLiteral segKind = iota
	segPlus
	segNamed
	segHash
)

type patSeg struct {
	kind segKind
	lit  string // segLiteral
	cap  int    // segNamed: index into the captures
}

type tmplPart struct {
	lit string
	cap int // -1 for a literal part
}

// tmpl is a parsed template; static when it has no placeholders.
type tmpl struct {
	text   string
	parts  []tmplPart
	static bool
}

type rule struct {
	segs    []patSeg // as written
	noSys   []patSeg // without a leading "sys" literal; == segs when there is none
	hasSys  bool
	kind    DestinationKind
	name    tmpl
	tag     tmpl
	group   tmpl
	props   []propTmpl
	keyCaps []int // captures the templates use, in order: the cache key

	static      bool  // no placeholders: fixed is the answer
	fixed       Route // when static
	mu          sync.RWMutex
	cache       map[string]Route
	validName   func(string) error
	index       int
	kindForName string // "queue" or "topic"
}

// NewRouter compiles the rules and the default route. validName checks a
// literal or rendered MNS queue or topic name (the caller passes
// mns.ValidName); nil uses the documented MNS rules (letters, digits and
// '-', starting with a letter or digit, at most 120 characters).
//
// It checks every rule at load: the pattern's syntax, that a template uses
// only names its pattern captures, that literal parts hold only valid MNS
// name characters and cannot make every rendering invalid, and that a tag's
// literal text fits in 16 characters. All problems are returned at once,
// joined, each prefixed with its config path ("routes[2].queue: ...",
// "default_route.topic: ...").
func NewRouter(rules []RouteSpec, def DefaultRouteSpec, validName func(string) error) (*Router, error) {
	if validName == nil {
		validName = validMNSName
	}
	r := &Router{validName: validName}
	var errs []error
	for i, spec := range rules {
		ru, err := compileRule(i, spec, validName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.rules = append(r.rules, ru)
	}
	d, err := compileDefault(def, validName)
	if err != nil {
		errs = append(errs, err)
	}
	r.def = d
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Route returns where a message with this topic goes: the first rule whose
// pattern matches, else the default route, else the dead-letter target. A
// rule whose rendered name or tag is invalid for this topic (for example a
// deviceName "dev_01" in a queue name) gives a dead-letter Route with the
// reason; Route never returns a destination with an invalid name.
//
// It is safe for concurrent use and does not allocate for a matched rule
// once the rendering for its captured values is cached.
func (r *Router) Route(topic string) Route {
	noSys := topic
	if strings.HasPrefix(topic, "/sys/") {
		noSys = topic[len("/sys"):]
	}
	var caps [maxCaptures]string
	for _, ru := range r.rules {
		if !ru.match(topic, noSys, &caps) {
			continue
		}
		return ru.route(&caps)
	}
	if r.def.DeadLetter {
		d := r.def
		d.Reason = fmt.Sprintf("no route matches topic %q", topic)
		return d
	}
	return r.def
}

// Destinations returns the fixed destinations of the rules and the default
// route (those without placeholders), each once, in config order: the ones
// a config check can look up before any message arrives.
func (r *Router) Destinations() []Destination {
	var out []Destination
	seen := map[Destination]bool{}
	add := func(d Destination) {
		if d.Kind != 0 && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, ru := range r.rules {
		if ru.name.static {
			add(Destination{Kind: ru.kind, Name: ru.name.text})
		}
	}
	add(r.def.Dest)
	return out
}

func (ru *rule) match(topic, noSys string, caps *[maxCaptures]string) bool {
	if matchSegs(ru.noSys, noSys, caps) {
		return true
	}
	// Try as written when stripping changed either side, so that a pattern
	// like "/+/+/+" still sees a "/sys/a/b" topic's own first segment.
	if (noSys != topic || ru.hasSys) && matchSegs(ru.segs, topic, caps) {
		return true
	}
	return false
}

// matchSegs reports whether topic matches the pattern segments, filling
// caps with the named segments' values (substrings of topic).
func matchSegs(segs []patSeg, topic string, caps *[maxCaptures]string) bool {
	if len(topic) == 0 || topic[0] != '/' {
		return false
	}
	pos := 1 // start of the next segment; len(topic)+1 once all are consumed
	for _, s := range segs {
		if s.kind == segHash {
			return true
		}
		if pos > len(topic) {
			return false
		}
		end := strings.IndexByte(topic[pos:], '/')
		if end < 0 {
			end = len(topic)
		} else {
			end += pos
		}
		seg := topic[pos:end]
		switch s.kind {
		case segLiteral:
			if seg != s.lit {
				return false
			}
		case segNamed:
			if seg == "" {
				return false
			}
			caps[s.cap] = seg
		}
		pos = end + 1
	}
	return pos > len(topic)
}

func (ru *rule) route(caps *[maxCaptures]string) Route {
	if ru.static {
		return ru.fixed
	}
	var kb [256]byte
	key := kb[:0]
	for _, c := range ru.keyCaps {
		key = binary.AppendUvarint(key, uint64(len(caps[c])))
		key = append(key, caps[c]...)
	}
	ru.mu.RLock()
	rt, ok := ru.cache[string(key)]
	ru.mu.RUnlock()
	if ok {
		return rt
	}
	rt = ru.render(caps)
	ru.mu.Lock()
	if len(ru.cache) >= renderCacheSize {
		clear(ru.cache)
	}
	ru.cache[string(key)] = rt
	ru.mu.Unlock()
	return rt
}

// render builds the Route for these captures, checking the rendered name
// and tag.
func (ru *rule) render(caps *[maxCaptures]string) Route {
	name := ru.name.render(caps)
	if err := ru.validName(name); err != nil {
		return Route{DeadLetter: true, Rule: ru.index,
			Reason: fmt.Sprintf("routes[%d]: rendered %s name %q is invalid: %v", ru.index, ru.kindForName, name, err)}
	}
	tag := ru.tag.render(caps)
	if err := checkTag(tag); err != nil {
		return Route{DeadLetter: true, Rule: ru.index,
			Reason: fmt.Sprintf("routes[%d]: rendered message tag %q is invalid: %v", ru.index, tag, err)}
	}
	rt := Route{Dest: Destination{Kind: ru.kind, Name: name}, Tag: tag, GroupID: ru.group.render(caps), Rule: ru.index}
	if len(ru.props) > 0 {
		ps := make([]Property, len(ru.props))
		for i, p := range ru.props {
			ps[i] = Property{Name: p.name, Value: p.val.render(caps), Type: PropString}
		}
		rt.Properties = &ps
	}
	return rt
}

// propTmpl is a route property: a literal name and a value template.
type propTmpl struct {
	name string
	val  tmpl
}

// compileProps parses a route's properties; path is "routes[i]" or
// "default_route".
func compileProps(path string, props []RouteProperty, names []string) ([]propTmpl, []error) {
	var out []propTmpl
	var errs []error
	seen := map[string]bool{}
	for _, p := range props {
		if err := CheckPropertyName(p.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s.properties: %w", path, err))
			continue
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("%s.properties: %q is set twice", path, p.Name))
			continue
		}
		seen[p.Name] = true
		t, err := parseTemplate(p.Value, names)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.properties.%s: %w", path, p.Name, err))
			continue
		}
		out = append(out, propTmpl{name: p.Name, val: t})
	}
	return out, errs
}

// MaxPropertyNameLen is the longest MNS property name.
const MaxPropertyNameLen = 256

// CheckPropertyName applies the MNS rules for property names: 1 to 256
// characters of A-Z a-z 0-9 _ . -, not starting or ending with '.', no "..".
func CheckPropertyName(n string) error {
	switch {
	case n == "":
		return errors.New("property name is empty")
	case len(n) > MaxPropertyNameLen:
		return fmt.Errorf("property name %.20q... is %d characters; MNS allows at most %d", n, len(n), MaxPropertyNameLen)
	case n[0] == '.' || n[len(n)-1] == '.':
		return fmt.Errorf("property name %q starts or ends with '.'", n)
	case strings.Contains(n, ".."):
		return fmt.Errorf("property name %q contains \"..\"", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("property name %q has %q: MNS allows letters, digits, '_', '.' and '-'", n, c)
		}
	}
	return nil
}

func (t *tmpl) render(caps *[maxCaptures]string) string {
	if t.static {
		return t.text
	}
	var b strings.Builder
	n := 0
	for _, p := range t.parts {
		if p.cap < 0 {
			n += len(p.lit)
		} else {
			n += len(caps[p.cap])
		}
	}
	b.Grow(n)
	for _, p := range t.parts {
		if p.cap < 0 {
			b.WriteString(p.lit)
		} else {
			b.WriteString(caps[p.cap])
		}
	}
	return b.String()
}

// checkTag reports why a rendered tag cannot be sent to MNS.
func checkTag(tag string) error {
	if !utf8.ValidString(tag) {
		return errors.New("not valid UTF-8")
	}
	if n := utf8.RuneCountInString(tag); n > MaxTagLen {
		return fmt.Errorf("%d characters, MNS allows at most %d", n, MaxTagLen)
	}
	for _, c := range tag {
		if unicode.IsControl(c) {
			return fmt.Errorf("control character %q", c)
		}
	}
	return nil
}

func compileRule(i int, spec RouteSpec, validName func(string) error) (*rule, error) {
	path := fmt.Sprintf("routes[%d]", i)
	var errs []error
	ru := &rule{index: i, validName: validName, cache: map[string]Route{}}

	names, err := ru.compilePattern(spec.Match)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.match: %w", path, err))
	}

	field, text := "", ""
	switch {
	case spec.Queue != "" && spec.Topic != "":
		errs = append(errs, fmt.Errorf("%s: set queue or topic, not both", path))
	case spec.Queue != "":
		ru.kind, field, text = Queue, "queue", spec.Queue
	case spec.Topic != "":
		ru.kind, field, text = Topic, "topic", spec.Topic
	default:
		errs = append(errs, fmt.Errorf("%s: set queue or topic: the destination of the messages this rule matches", path))
	}
	if spec.MessageTag != "" && ru.kind == Queue {
		errs = append(errs, fmt.Errorf("%s.message_tag: a message tag needs an MNS topic; queues have no tags, remove it or use topic", path))
	}
	if err != nil {
		// Without a valid pattern the placeholders cannot be checked.
		return nil, errors.Join(errs...)
	}
	ru.kindForName = field
	if field != "" {
		ru.name, err = compileNameTemplate(text, names, field, validName)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", path, field, err))
		}
	}
	ru.tag, err = compileTagTemplate(spec.MessageTag, names)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.message_tag: %w", path, err))
	}
	ru.group, err = parseTemplate(spec.MessageGroupID, names)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.message_group_id: %w", path, err))
	}
	var perrs []error
	ru.props, perrs = compileProps(path, spec.Properties, names)
	errs = append(errs, perrs...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	used := map[int]bool{}
	all := []tmpl{ru.name, ru.tag, ru.group}
	for _, p := range ru.props {
		all = append(all, p.val)
	}
	for _, t := range all {
		for _, p := range t.parts {
			if p.cap >= 0 && !used[p.cap] {
				used[p.cap] = true
				ru.keyCaps = append(ru.keyCaps, p.cap)
			}
		}
	}
	if len(ru.keyCaps) == 0 {
		ru.static = true
		ru.fixed = ru.render(&[maxCaptures]string{})
	}
	return ru, nil
}

// compilePattern parses the pattern into ru and returns its capture names.
func (ru *rule) compilePattern(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("required: a topic pattern such as /{productKey}/{deviceName}/user/#")
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("pattern %q must start with '/', as platform topics do", p)
	}
	parts := strings.Split(p[1:], "/")
	var names []string
	var errs []error
	for i, s := range parts {
		switch {
		case s == "#":
			if i != len(parts)-1 {
				errs = append(errs, fmt.Errorf("pattern %q: '#' may only be the last segment", p))
			}
			ru.segs = append(ru.segs, patSeg{kind: segHash})
		case s == "+":
			ru.segs = append(ru.segs, patSeg{kind: segPlus})
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && len(s) >= 2:
			name := s[1 : len(s)-1]
			if !validIdent(name) {
				errs = append(errs, fmt.Errorf("pattern %q: segment name %q must be letters, digits and '_', not starting with a digit", p, name))
				continue
			}
			for _, n := range names {
				if n == name {
					errs = append(errs, fmt.Errorf("pattern %q: segment name {%s} is used twice", p, name))
				}
			}
			if len(names) == maxCaptures {
				errs = append(errs, fmt.Errorf("pattern %q: more than %d named segments", p, maxCaptures))
				continue
			}
			ru.segs = append(ru.segs, patSeg{kind: segNamed, cap: len(names)})
			names = append(names, name)
		case s == "":
			errs = append(errs, fmt.Errorf("pattern %q: empty segment (two '/' in a row or a trailing '/')", p))
		case strings.ContainsAny(s, "+#{}"):
			errs = append(errs, fmt.Errorf("pattern %q: segment %q mixes text with a wildcard or placeholder; '+', '#' and {name} must be whole segments", p, s))
		default:
			ru.segs = append(ru.segs, patSeg{kind: segLiteral, lit: s})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	ru.noSys = ru.segs
	if len(ru.segs) > 1 && ru.segs[0].kind == segLiteral && ru.segs[0].lit == "sys" {
		ru.noSys = ru.segs[1:]
		ru.hasSys = true
	}
	return names, nil
}

func validIdent(s string) bool {
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

// parseTemplate splits text into literal parts and {name} placeholders,
// resolving each name among names.
func parseTemplate(text string, names []string) (tmpl, error) {
	t := tmpl{text: text, static: true}
	rest := text
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, tmplPart{lit: rest, cap: -1})
			break
		}
		if rest[open] == '}' {
			return tmpl{}, fmt.Errorf("template %q: '}' without '{'", text)
		}
		if open > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:open], cap: -1})
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] != '}' {
			return tmpl{}, fmt.Errorf("template %q: '{' without '}'", text)
		}
		name := rest[open+1 : open+1+end]
		idx := -1
		for i, n := range names {
			if n == name {
				idx = i
			}
		}
		if idx < 0 {
			if len(names) == 0 {
				return tmpl{}, fmt.Errorf("template %q: {%s} has no value here: there is no pattern with named segments", text, name)
			}
			return tmpl{}, fmt.Errorf("template %q: {%s} is not a named segment of the pattern (it has {%s})", text, name, strings.Join(names, "}, {"))
		}
		t.parts = append(t.parts, tmplPart{cap: idx})
		t.static = false
		rest = rest[open+1+end+1:]
	}
	return t, nil
}

// compileNameTemplate parses a queue or topic name template and checks that
// it can render a valid name: literal parts use only MNS name characters,
// and the shortest rendering (one character per placeholder, as named
// segments are never empty) passes validName.
func compileNameTemplate(text string, names []string, kind string, validName func(string) error) (tmpl, error) {
	t, err := parseTemplate(text, names)
	if err != nil {
		return tmpl{}, err
	}
	if t.static {
		if err := validName(text); err != nil {
			return tmpl{}, fmt.Errorf("%q is not a valid MNS %s name: %w", text, kind, err)
		}
		return t, nil
	}
	var sample strings.Builder
	for _, p := range t.parts {
		if p.cap >= 0 {
			sample.WriteByte('a')
			continue
		}
		for _, c := range p.lit {
			if !isNameChar(c) {
				return tmpl{}, fmt.Errorf("template %q: %q is not allowed in an MNS %s name (letters, digits and '-' only)", text, c, kind)
			}
		}
		sample.WriteString(p.lit)
	}
	if err := validName(sample.String()); err != nil {
		return tmpl{}, fmt.Errorf("template %q can never render a valid MNS %s name (e.g. %q: %v)", text, kind, sample.String(), err)
	}
	return t, nil
}

// compileTagTemplate parses a message tag template and checks that its
// literal text leaves room within the 16-character limit.
func compileTagTemplate(text string, names []string) (tmpl, error) {
	t, err := parseTemplate(text, names)
	if err != nil {
		return tmpl{}, err
	}
	n := 0
	for _, p := range t.parts {
		if p.cap >= 0 {
			n++ // a named segment renders at least one character
			continue
		}
		n += utf8.RuneCountInString(p.lit)
		for _, c := range p.lit {
			if unicode.IsControl(c) {
				return tmpl{}, fmt.Errorf("template %q: control character %q is not allowed in a message tag", text, c)
			}
		}
	}
	if n > MaxTagLen {
		return tmpl{}, fmt.Errorf("template %q renders at least %d characters; MNS message tags have at most %d", text, n, MaxTagLen)
	}
	return t, nil
}

func compileDefault(def DefaultRouteSpec, validName func(string) error) (Route, error) {
	dl := Route{DeadLetter: true, Rule: -1}
	var errs []error
	if def.DeadLetter && (def.Queue != "" || def.Topic != "") {
		errs = append(errs, errors.New("default_route: dead_letter excludes queue and topic; set one of them"))
	}
	if def.Queue != "" && def.Topic != "" {
		errs = append(errs, errors.New("default_route: set queue or topic, not both"))
	}
	if def.MessageTag != "" && def.Topic == "" {
		errs = append(errs, errors.New("default_route.message_tag: a message tag needs an MNS topic; set default_route.topic or remove it"))
	}
	route := dl
	for _, f := range []struct {
		field, text string
		kind        DestinationKind
	}{{"queue", def.Queue, Queue}, {"topic", def.Topic, Topic}} {
		if f.text == "" {
			continue
		}
		t, err := compileNameTemplate(f.text, nil, f.field, validName)
		if err != nil {
			errs = append(errs, fmt.Errorf("default_route.%s: %w", f.field, err))
			continue
		}
		route = Route{Dest: Destination{Kind: f.kind, Name: t.text}, Rule: -1}
	}
	if def.MessageTag != "" {
		t, err := compileTagTemplate(def.MessageTag, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("default_route.message_tag: %w", err))
		} else if !route.DeadLetter {
			route.Tag = t.text
		}
	}
	props, perrs := compileProps("default_route", def.Properties, nil)
	errs = append(errs, perrs...)
	if def.MessageGroupID != "" {
		if _, err := parseTemplate(def.MessageGroupID, nil); err != nil {
			errs = append(errs, fmt.Errorf("default_route.message_group_id: %w", err))
		}
	}
	if len(errs) > 0 {
		return dl, errors.Join(errs...)
	}
	if !route.DeadLetter {
		route.GroupID = def.MessageGroupID
		if len(props) > 0 {
			ps := make([]Property, len(props))
			for i, p := range props {
				ps[i] = Property{Name: p.name, Value: p.val.text, Type: PropString}
			}
			route.Properties = &ps
		}
	}
	return route, nil
}

// isNameChar reports whether c may appear in an MNS queue or topic name.
func isNameChar(c rune) bool {
	return c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validMNSName applies the documented MNS naming rules; NewRouter uses it
// when the caller passes no validator.
func validMNSName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 120:
		return fmt.Errorf("%d characters, at most 120 allowed", len(name))
	case name[0] == '-':
		return errors.New("must start with a letter or digit")
	}
	for _, c := range name {
		if !isNameChar(c) {
			return fmt.Errorf("%q is not allowed (letters, digits and '-' only)", c)
		}
	}
	return nil
}
