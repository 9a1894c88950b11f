package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/ident"
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
	// Fixed says the destination's name is literal in the config (not a
	// template): when MNS says it does not exist, the whole route is broken
	// and the pipeline holds its messages rather than dead-lettering them.
	Fixed bool
	// DeadLetter says the message goes to the dead-letter target instead.
	DeadLetter bool
	// Reason says why, when DeadLetter, e.g. `no route matches topic "/x"`
	// or `routes[1]: rendered queue name "a_b" is invalid: ...`.
	Reason string
	// Class is ClassUnrouted or ClassInvalidName, when DeadLetter.
	Class DeadLetterClass
	// Rule is the index of the matching rule, -1 for the default route or
	// when nothing matched.
	Rule int
}

// NameRules are the sink's rules for destination names, message tags and
// property names (the MNS sink's are mns.NameRules). Name and Tag return the
// reason a name or tag is invalid, without quoting it ("it must start with a
// letter or digit"); Property returns the whole error, naming the property.
// nil accepts everything.
type NameRules struct {
	Name     func(name string) error // a queue or topic name
	Tag      func(tag string) error  // a message tag ("" is no tag)
	Property func(name string) error // a message property's name
}

func (n NameRules) name(s string) error {
	if n.Name == nil {
		return nil
	}
	return n.Name(s)
}

func (n NameRules) tag(s string) error {
	if n.Tag == nil || s == "" {
		return nil
	}
	return n.Tag(s)
}

func (n NameRules) property(s string) error {
	if n.Property == nil {
		return nil
	}
	return n.Property(s)
}

// RouteError is one problem with a route's config: Path is its config
// path ("routes[2].queue", "default_route"), Err the reason. NewRouter
// returns every RouteError it finds, joined.
type RouteError struct {
	Path string
	Err  error
}

func (e *RouteError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *RouteError) Unwrap() error { return e.Err }

func routeErr(path string, err error) error { return &RouteError{Path: path, Err: err} }

// Router maps a message topic to a Route. It is built once from the config
// and is safe for concurrent use.
type Router struct {
	rules []*rule
	def   Route // Rule -1; DeadLetter when there is no default destination
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
	names       NameRules
	index       int
	kindForName string // "queue" or "topic"
}

// NewRouter compiles the rules and the default route; it is the one parser
// of the route grammar (config validation calls it too). names are the
// sink's rules for names and tags (mns.NameRules): the router checks
// literal and rendered names and tags with them.
//
// It checks every rule at load: the pattern's syntax, that a template uses
// only names its pattern captures, and that a template can render a valid
// name or tag at all (with one character per placeholder, as named segments
// are never empty); a rule whose pattern is bad still has its templates
// checked, all but their placeholders' names. All problems are returned at
// once, joined, each a *RouteError with its config path ("routes[2].queue:
// ...", "default_route.topic: ...").
func NewRouter(rules []RouteSpec, def DefaultRouteSpec, names NameRules) (*Router, error) {
	r := &Router{}
	var errs []error
	for i, spec := range rules {
		ru, err := compileRule(i, spec, names)
		if err != nil {
			errs = append(errs, err...)
			continue
		}
		r.rules = append(r.rules, ru)
	}
	d, err := compileDefault(def, names)
	errs = append(errs, err...)
	r.def = d
	errs = append(errs, shadowed(rules)...)
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
		d.Reason, d.Class = fmt.Sprintf("no route matches topic %q", topic), ClassUnrouted
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

// Keys returns the config paths that name the fixed destination d
// literally, in config order ("routes[0].queue", "default_route.queue"):
// where an operator fixes a destination that fails. None for a destination
// no route names so.
func (r *Router) Keys(d Destination) []string {
	var out []string
	for _, ru := range r.rules {
		if ru.name.static && ru.kind == d.Kind && ru.name.text == d.Name {
			out = append(out, fmt.Sprintf("routes[%d].%s", ru.index, ru.kindForName))
		}
	}
	if r.def.Dest == d {
		out = append(out, "default_route."+d.Kind.String())
	}
	return out
}

// RouteTemplate is a rule's destination named per message: Dest holds
// its kind and its template as written (as Name), Path its config path
// ("routes[2].queue").
type RouteTemplate struct {
	Dest Destination
	Path string
}

// Templates returns the rules' destinations that have placeholders, in
// config order: those Destinations leaves out, which a config check cannot
// look up before a message names them.
func (r *Router) Templates() []RouteTemplate {
	var out []RouteTemplate
	for _, ru := range r.rules {
		if !ru.name.static {
			out = append(out, RouteTemplate{Dest: Destination{Kind: ru.kind, Name: ru.name.text},
				Path: fmt.Sprintf("routes[%d].%s", ru.index, ru.kindForName)})
		}
	}
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
	if err := ru.names.name(name); err != nil {
		return Route{DeadLetter: true, Rule: ru.index, Class: ClassInvalidName,
			Reason: fmt.Sprintf("routes[%d]: rendered %s name %q is invalid: %v", ru.index, ru.kindForName, name, err)}
	}
	tag := ru.tag.render(caps)
	if err := ru.names.tag(tag); err != nil {
		return Route{DeadLetter: true, Rule: ru.index, Class: ClassInvalidName,
			Reason: fmt.Sprintf("routes[%d]: rendered message tag %q is invalid: %v", ru.index, tag, err)}
	}
	rt := Route{Dest: Destination{Kind: ru.kind, Name: name}, Tag: tag, GroupID: ru.group.render(caps), Rule: ru.index, Fixed: ru.name.static}
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

// compileProps parses a route's properties, their names checked by the
// sink's rule (names.Property); path is "routes[i]" or "default_route".
func compileProps(path string, props []RouteProperty, scope templateScope, names NameRules) ([]propTmpl, []error) {
	var out []propTmpl
	var errs []error
	seen := map[string]bool{}
	for _, p := range props {
		if err := names.property(p.Name); err != nil {
			errs = append(errs, routeErr(path+".properties", err))
			continue
		}
		if seen[p.Name] {
			errs = append(errs, routeErr(path+".properties", fmt.Errorf("%q is set twice", p.Name)))
			continue
		}
		seen[p.Name] = true
		t, err := parseTemplate(p.Value, scope)
		if err != nil {
			errs = append(errs, routeErr(path+".properties."+p.Name, err))
			continue
		}
		out = append(out, propTmpl{name: p.Name, val: t})
	}
	return out, errs
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

// compileRule compiles routes[i]; it returns every problem found.
func compileRule(i int, spec RouteSpec, names NameRules) (*rule, []error) {
	path := fmt.Sprintf("routes[%d]", i)
	var errs []error
	ru := &rule{index: i, names: names, cache: map[string]Route{}}

	capNames, err := ru.compilePattern(spec.Match)
	if err != nil {
		errs = append(errs, routeErr(path+".match", err))
	}

	field, text := "", ""
	switch {
	case spec.Queue != "" && spec.Topic != "":
		errs = append(errs, routeErr(path, errors.New("set queue or topic, not both")))
	case spec.Queue != "":
		ru.kind, field, text = Queue, "queue", spec.Queue
	case spec.Topic != "":
		ru.kind, field, text = Topic, "topic", spec.Topic
	default:
		errs = append(errs, routeErr(path, errors.New("set queue or topic: the destination of the messages this rule matches")))
	}
	if spec.MessageTag != "" && ru.kind == Queue {
		errs = append(errs, routeErr(path+".message_tag", errTagNeedsTopic))
	}
	// Without a valid pattern a template's placeholders cannot be checked
	// against it; the rest of each template is, so that a route's every
	// problem is reported at once.
	scope := templateScope{match: spec.Match, names: capNames, anyName: err != nil}
	ru.kindForName = field
	if field != "" {
		ru.name, err = compileNameTemplate(text, scope, field, names)
		if err != nil {
			errs = append(errs, routeErr(path+"."+field, err))
		}
	} else if spec.Queue != "" && spec.Topic != "" {
		// Both set: report what else is wrong with either.
		for _, f := range [2][2]string{{"queue", spec.Queue}, {"topic", spec.Topic}} {
			if _, err := compileNameTemplate(f[1], scope, f[0], names); err != nil {
				errs = append(errs, routeErr(path+"."+f[0], err))
			}
		}
	}
	ru.tag, err = compileTagTemplate(spec.MessageTag, scope, names)
	if err != nil {
		errs = append(errs, routeErr(path+".message_tag", err))
	}
	ru.group, err = parseTemplate(spec.MessageGroupID, scope)
	if err != nil {
		errs = append(errs, routeErr(path+".message_group_id", err))
	}
	var perrs []error
	ru.props, perrs = compileProps(path, spec.Properties, scope, names)
	errs = append(errs, perrs...)
	if len(errs) > 0 {
		return nil, errs
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

// shadowed reports each rule whose pattern is the pattern of an earlier
// rule ("#" is "/#"): the first match wins, so it would never match.
func shadowed(rules []RouteSpec) []error {
	var errs []error
	first := map[string]int{}
	for i, spec := range rules {
		m := canonicalPattern(spec.Match)
		if m == "" {
			continue
		}
		if j, ok := first[m]; ok {
			errs = append(errs, routeErr(fmt.Sprintf("routes[%d].match", i), fmt.Errorf("%q is the pattern of routes[%d] too: the first match wins, so this route never matches; remove one or make it narrower", spec.Match, j)))
			continue
		}
		first[m] = i
	}
	return errs
}

// canonicalPattern is p, with MQTT's "everything", "#", written as the
// pattern that matches every topic too, "/#".
func canonicalPattern(p string) string {
	if p == "#" {
		return "/#"
	}
	return p
}

// compilePattern parses the pattern into ru and returns its capture names;
// the error is the first problem found.
func (ru *rule) compilePattern(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("required: a topic pattern like /{productKey}/{deviceName}/user/#")
	}
	p = canonicalPattern(p)
	if p[0] != '/' {
		return nil, fmt.Errorf("%q must start with '/', as platform topics do", p)
	}
	parts := strings.Split(p[1:], "/")
	var names []string
	for i, s := range parts {
		switch {
		case s == "":
			return nil, fmt.Errorf("%q has an empty segment (a doubled or trailing '/')", p)
		case s == "#":
			if i != len(parts)-1 {
				return nil, fmt.Errorf("%q has '#' before the last segment: '#' matches the rest of the topic, so it must come last", p)
			}
			ru.segs = append(ru.segs, patSeg{kind: segHash})
		case s == "+":
			ru.segs = append(ru.segs, patSeg{kind: segPlus})
		case len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}':
			name := s[1 : len(s)-1]
			if !ident.Valid(name) {
				return nil, fmt.Errorf("%q: segment %q is not a name: use letters, digits and '_' inside {}, not starting with a digit", p, s)
			}
			if slices.Contains(names, name) {
				return nil, fmt.Errorf("%q names two segments {%s}: use distinct names", p, name)
			}
			if len(names) == maxCaptures {
				return nil, fmt.Errorf("%q has more than %d named segments", p, maxCaptures)
			}
			ru.segs = append(ru.segs, patSeg{kind: segNamed, cap: len(names)})
			names = append(names, name)
		case strings.ContainsAny(s, "+#{}"):
			return nil, fmt.Errorf("%q: segment %q mixes text with a wildcard: a segment is literal text, +, # or {name}", p, s)
		default:
			ru.segs = append(ru.segs, patSeg{kind: segLiteral, lit: s})
		}
	}
	ru.noSys = ru.segs
	if len(ru.segs) > 1 && ru.segs[0].kind == segLiteral && ru.segs[0].lit == "sys" {
		ru.noSys = ru.segs[1:]
		ru.hasSys = true
	}
	return names, nil
}

// templateScope is what a template's placeholders can refer to: the named
// segments of its rule's pattern, or nothing for the default route (match
// "").
type templateScope struct {
	match string
	names []string
	// anyName takes every {name} as a placeholder: the rule's pattern did
	// not compile, so its names are unknown (and the rule is not built).
	anyName bool
}

// parseTemplate splits text into literal parts and {name} placeholders,
// resolving each name in scope. The error reads after the quoted template
// or stands alone ("template uses {x} but ...").
func parseTemplate(text string, scope templateScope) (tmpl, error) {
	t := tmpl{text: text, static: true}
	rest := text
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, tmplPart{lit: rest, cap: -1})
			break
		}
		if rest[open] == '}' {
			return tmpl{}, fmt.Errorf("%q has a '}' without its '{'", text)
		}
		if open > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:open], cap: -1})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return tmpl{}, fmt.Errorf("%q has a '{' without its '}'", text)
		}
		name := rest[open+1 : open+end]
		if !ident.Valid(name) {
			return tmpl{}, fmt.Errorf("%q has {%s}, which is not a segment name: use letters, digits and '_' inside {}, not starting with a digit", text, name)
		}
		idx := slices.Index(scope.names, name)
		if idx < 0 && scope.anyName {
			idx = 0 // checked for its syntax only; never rendered
		}
		if idx < 0 {
			if scope.match == "" {
				return tmpl{}, fmt.Errorf("template uses {%s} but the default route has no pattern: use a fixed name", name)
			}
			return tmpl{}, fmt.Errorf("template uses {%s} but match %q has no such segment", name, scope.match)
		}
		t.parts = append(t.parts, tmplPart{cap: idx})
		t.static = false
		rest = rest[open+end+1:]
	}
	return t, nil
}

// shortest renders t with one character per placeholder (named segments
// are never empty): if that is not a valid name or tag, no rendering is.
func (t *tmpl) shortest() string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.cap >= 0 {
			b.WriteByte('a')
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// compileNameTemplate parses a queue or topic name template and checks
// with names that it is, or can render, a valid name.
func compileNameTemplate(text string, scope templateScope, kind string, names NameRules) (tmpl, error) {
	return compileTemplate(text, scope, "MNS "+kind+" name", names.name)
}

// compileTagTemplate parses a message tag template and checks with names
// that it is, or can render, a valid tag.
func compileTagTemplate(text string, scope templateScope, names NameRules) (tmpl, error) {
	return compileTemplate(text, scope, "MNS message tag", names.tag)
}

// compileTemplate parses a template and checks with valid that it is a
// valid what, or, with placeholders, that its shortest rendering (one
// character per placeholder) can be.
func compileTemplate(text string, scope templateScope, what string, valid func(string) error) (tmpl, error) {
	t, err := parseTemplate(text, scope)
	if err != nil {
		return tmpl{}, err
	}
	if t.static {
		if err := valid(text); err != nil {
			return tmpl{}, fmt.Errorf("%q is not a valid %s: %w", text, what, err)
		}
		return t, nil
	}
	if err := valid(t.shortest()); err != nil {
		return tmpl{}, fmt.Errorf("template %q can never render a valid %s: %w (with one character per placeholder)", text, what, err)
	}
	return t, nil
}

var errTagNeedsTopic = errors.New("applies to topics only: a message tag needs an MNS topic (queues have no tags); set topic, or drop message_tag")

// compileDefault compiles the default route; it returns every problem
// found.
func compileDefault(def DefaultRouteSpec, names NameRules) (Route, []error) {
	dl := Route{DeadLetter: true, Rule: -1}
	var errs []error
	set := 0
	for _, b := range []bool{def.Queue != "", def.Topic != "", def.DeadLetter} {
		if b {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, routeErr("default_route", errors.New("set only one of queue, topic and dead_letter: true")))
	}
	if def.MessageTag != "" && def.Topic == "" {
		errs = append(errs, routeErr("default_route.message_tag", errTagNeedsTopic))
	}
	route := dl
	for _, f := range []struct {
		field, text string
		kind        DestinationKind
	}{{"queue", def.Queue, Queue}, {"topic", def.Topic, Topic}} {
		if f.text == "" {
			continue
		}
		t, err := compileNameTemplate(f.text, templateScope{}, f.field, names)
		if err != nil {
			errs = append(errs, routeErr("default_route."+f.field, err))
			continue
		}
		route = Route{Dest: Destination{Kind: f.kind, Name: t.text}, Rule: -1, Fixed: true}
	}
	if def.MessageTag != "" {
		t, err := compileTagTemplate(def.MessageTag, templateScope{}, names)
		if err != nil {
			errs = append(errs, routeErr("default_route.message_tag", err))
		} else if !route.DeadLetter {
			route.Tag = t.text
		}
	}
	props, perrs := compileProps("default_route", def.Properties, templateScope{}, names)
	errs = append(errs, perrs...)
	if def.MessageGroupID != "" {
		if _, err := parseTemplate(def.MessageGroupID, templateScope{}); err != nil {
			errs = append(errs, routeErr("default_route.message_group_id", err))
		}
	}
	if len(errs) > 0 {
		return dl, errs
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
