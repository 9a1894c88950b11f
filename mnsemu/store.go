package mnsemu

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// MNS limits the emulator enforces.
const (
	maxBatch       = 16
	maxBatchBytes  = 65536
	maxWaitSeconds = 30
	maxDelay       = 604800
	maxTagLen      = 16
)

type queueAttrs struct {
	DelaySeconds           int
	MaximumMessageSize     int
	MessageRetentionPeriod int
	VisibilityTimeout      int
	PollingWaitSeconds     int
	LoggingEnabled         bool
}

func defaultQueueAttrs() queueAttrs {
	return queueAttrs{MaximumMessageSize: 65536, MessageRetentionPeriod: 345600, VisibilityTimeout: 30}
}

type topicAttrs struct {
	MaximumMessageSize int
	LoggingEnabled     bool
}

func defaultTopicAttrs() topicAttrs { return topicAttrs{MaximumMessageSize: 65536} }

type queue struct {
	name              string
	attrs             queueAttrs
	created, modified time.Time
	msgs              []*qmsg
	byReceipt         map[string]*qmsg
	notify            chan struct{} // closed and replaced when a message is added
}

type qmsg struct {
	StoredMessage
	visibleAt    time.Time
	receipt      string
	firstDequeue time.Time
}

type topic struct {
	name              string
	attrs             topicAttrs
	created, modified time.Time
	msgs              []StoredMessage
	count             int64
}

func newQueue(name string, a queueAttrs, now time.Time) *queue {
	return &queue{name: name, attrs: a, created: now, modified: now, byReceipt: make(map[string]*qmsg), notify: make(chan struct{})}
}

func newTopic(name string, a topicAttrs, now time.Time) *topic {
	return &topic{name: name, attrs: a, created: now, modified: now}
}

// under returns the queue or topic name (find is queueFor or topicFor, or
// declaredQueue or declaredTopic to create none) and what read takes of it,
// both under e.mu; notExist when there is none.
func under[T, V any](e *Emulator, find func(string) *T, name string, notExist *apiError, read func(*T) V) (*T, V, *apiError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var v V
	it := find(name)
	if it == nil {
		return nil, v, notExist
	}
	return it, read(it), nil
}

// queueFor returns the queue, creating it with default attributes when
// AutoCreate is on; nil when it does not exist. e.mu must be held.
func (e *Emulator) queueFor(name string) *queue {
	return declared(e, e.queues, name, e.cfg.AutoCreate, defaultQueue)
}

// topicFor is queueFor for a topic.
func (e *Emulator) topicFor(name string) *topic {
	return declared(e, e.topics, name, e.cfg.AutoCreate, defaultTopic)
}

// declaredQueue and declaredTopic return the queue or topic name if it
// exists, never creating one (what a test reads must not change the
// store). e.mu must be held.
func (e *Emulator) declaredQueue(name string) *queue { return e.queues[name] }
func (e *Emulator) declaredTopic(name string) *topic { return e.topics[name] }

// declared returns m[name]; when there is none and create is true, a new
// one with default attributes (by fresh) that m then holds. e.mu must be
// held.
func declared[T any](e *Emulator, m map[string]*T, name string, create bool, fresh func(string, time.Time) *T) *T {
	it := m[name]
	if it == nil && create {
		it = fresh(name, e.now())
		m[name] = it
	}
	return it
}

func defaultQueue(name string, now time.Time) *queue {
	return newQueue(name, defaultQueueAttrs(), now)
}

func defaultTopic(name string, now time.Time) *topic {
	return newTopic(name, defaultTopicAttrs(), now)
}

var (
	errQueueNotExist = errf(404, "QueueNotExist", "The queue name you provided is not exist.")
	errTopicNotExist = errf(404, "TopicNotExist", "The topic you provided does not exist.")
)

func malformed(err error) *apiError {
	if err == errBadNS {
		return errf(400, "MalformedXML", "The XML namespace must be "+xmlNS+".")
	}
	return errf(400, "MalformedXML", "The XML you provided was not well-formed: "+err.Error())
}

// idAndMD5 returns a new message id and the MD5 of body, sharing one
// allocation.
func (e *Emulator) idAndMD5(body string) (id, sum string) {
	var b [64]byte
	e.putID(b[:32])
	putMD5Hex(b[32:], body)
	both := string(b[:])
	return both[:32], both[32:]
}

func putMD5Hex(b []byte, s string) {
	sum := md5.Sum(unsafe.Slice(unsafe.StringData(s), len(s)))
	for i, c := range sum {
		b[2*i], b[2*i+1] = hexUpper[c>>4], hexUpper[c&15]
	}
}

func md5Hex(s string) string {
	sum := md5.Sum(unsafe.Slice(unsafe.StringData(s), len(s)))
	var b [32]byte
	for i, c := range sum {
		b[2*i], b[2*i+1] = hexUpper[c>>4], hexUpper[c&15]
	}
	return string(b[:])
}

// checkMessage validates one message of a send request; its properties go
// into sm.
func checkMessage(m inMessage, maxSize, defDelay int, sm *StoredMessage) (delay, prio int, err *apiError) {
	if m.Body == nil {
		return 0, 0, errf(400, "InvalidArgument", "The MessageBody is required.")
	}
	if len(*m.Body) > maxSize {
		return 0, 0, errf(400, "InvalidArgument", "The length of message should not be larger than MaximumMessageSize.")
	}
	if err = checkGroupAndProps(m, sm); err != nil {
		return 0, 0, err
	}
	if delay, err = intField(m.Delay, "DelaySeconds", 0, maxDelay, defDelay); err != nil {
		return 0, 0, err
	}
	if prio, err = intField(m.Priority, "Priority", 1, 16, 8); err != nil {
		return 0, 0, err
	}
	return delay, prio, nil
}

// checkGroupAndProps validates the properties and group id of m, and that
// they fit with the body in the message size; they go into sm.
func checkGroupAndProps(m inMessage, sm *StoredMessage) *apiError {
	user, system, size, err := checkProperties(m)
	if err != nil {
		return err
	}
	if len(*m.Body)+size > maxMessageSize {
		return errf(400, "InvalidArgument", "The length of message (body and properties) should not be larger than 65536.")
	}
	sm.UserProperties, sm.SystemProperties = user, system
	if m.GroupID != nil {
		sm.MessageGroupID = *m.GroupID
	}
	return nil
}

// sendMessages serves SendMessage (a <Message> body) and BatchSendMessage
// (a <Messages> body).
func (e *Emulator) sendMessages(x *exchange, f Faults, name string) *apiError {
	var req inRequest
	if err := parseMessages(x.body, &req); err != nil {
		return malformed(err)
	}
	q, attrs, err := under(e, e.queueFor, name, errQueueNotExist, func(q *queue) queueAttrs { return q.attrs })
	if err != nil {
		return err
	}
	batch := req.root == "Messages"
	n := len(req.msgs)
	if batch && (n < 1 || n > maxBatch) {
		return errf(400, "InvalidArgument", "The count of message in batch request should between 1 and 16.")
	}
	delays := make([]int, n)
	prios := make([]int, n)
	props := make([]StoredMessage, n)
	total := 0
	for i, m := range req.msgs {
		var err *apiError
		if delays[i], prios[i], err = checkMessage(m, attrs.MaximumMessageSize, attrs.DelaySeconds, &props[i]); err != nil {
			return err
		}
		total += len(*m.Body)
	}
	if batch && total > maxBatchBytes {
		return errf(400, "InvalidArgument", "The total size of messages in batch request should not be larger than 65536.")
	}
	if err := e.admit(f, x.r, n); err != nil {
		return err
	}
	now := e.now()
	stored := make([]*qmsg, 0, n)
	receipts := make([]string, 0, n) // read after the messages are shared
	failed := make([]bool, n)
	anyFailed := false
	for i, m := range req.msgs {
		if batch && e.failOne(f, name, i, *m.Body) {
			failed[i], anyFailed = true, true
			continue
		}
		id, sum := e.idAndMD5(*m.Body)
		qm := &qmsg{StoredMessage: StoredMessage{ID: id, Body: *m.Body, BodyMD5: sum,
			Priority: prios[i], DelaySeconds: delays[i], EnqueueTime: now,
			UserProperties: props[i].UserProperties, SystemProperties: props[i].SystemProperties, MessageGroupID: props[i].MessageGroupID},
			visibleAt: now.Add(time.Duration(delays[i]) * time.Second)}
		if delays[i] > 0 {
			qm.receipt = e.newReceipt()
		}
		stored = append(stored, qm)
		receipts = append(receipts, qm.receipt)
	}
	e.mu.Lock()
	for _, qm := range stored {
		q.msgs = append(q.msgs, qm)
		if qm.receipt != "" {
			q.byReceipt[qm.receipt] = qm
		}
	}
	e.trimQueue(q)
	if len(stored) > 0 {
		close(q.notify)
		q.notify = make(chan struct{})
	}
	e.mu.Unlock()
	e.stats.sent.Add(int64(len(stored)))
	if anyFailed {
		e.stats.partial.Add(int64(n - len(stored)))
	}

	replies := make([]sentReply, n)
	k := 0
	for i := range replies {
		if failed[i] {
			replies[i] = sentReply{ErrorCode: "InternalError", ErrorMessage: "The request processing has failed due to some unknown error."}
			continue
		}
		replies[i] = sentReply{MessageId: stored[k].ID, MessageBodyMD5: stored[k].BodyMD5, ReceiptHandle: receipts[k]}
		k++
	}
	x.buf.Reset()
	out := encodeMessages(x.buf, replies, batch)
	status := http.StatusCreated
	if anyFailed {
		status = http.StatusInternalServerError
		e.stats.errMu.Lock()
		e.stats.errors["InternalError"] += int64(n - len(stored))
		e.stats.errMu.Unlock()
	}
	e.write(x, status, out)
	return nil
}

// trimQueue drops the oldest messages over StoreLimit. e.mu must be held.
func (e *Emulator) trimQueue(q *queue) {
	lim := e.cfg.StoreLimit
	if lim <= 0 || len(q.msgs) <= 2*lim {
		return
	}
	drop := len(q.msgs) - lim
	for _, m := range q.msgs[:drop] {
		if m.receipt != "" {
			delete(q.byReceipt, m.receipt)
		}
	}
	q.msgs = append(q.msgs[:0], q.msgs[drop:]...)
}

func (e *Emulator) newReceipt() string {
	id := e.newID()
	return "1-" + base64.StdEncoding.EncodeToString([]byte(id+"-"+strconv.FormatInt(e.now().UnixMilli(), 10)))
}

// publishMessage serves PublishMessage.
func (e *Emulator) publishMessage(x *exchange, f Faults, name string) *apiError {
	var req inRequest
	if err := parseMessages(x.body, &req); err != nil {
		return malformed(err)
	}
	if req.root != "Message" {
		return errf(400, "InvalidArgument", "PublishMessage takes one <Message>.")
	}
	m := req.msgs[0]
	t, attrs, err := under(e, e.topicFor, name, errTopicNotExist, func(t *topic) topicAttrs { return t.attrs })
	if err != nil {
		return err
	}
	if m.Body == nil {
		return errf(400, "InvalidArgument", "The MessageBody is required.")
	}
	if len(*m.Body) > attrs.MaximumMessageSize {
		return errf(400, "InvalidArgument", "The length of message should not be larger than MaximumMessageSize.")
	}
	tag := ""
	if m.Tag != nil {
		tag = *m.Tag
		if utf8.RuneCountInString(tag) > maxTagLen {
			return errf(400, "InvalidArgument", "The length of MessageTag should not be larger than 16.")
		}
	}
	var sm StoredMessage
	if err := checkGroupAndProps(m, &sm); err != nil {
		return err
	}
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	sm.ID, sm.Body, sm.BodyMD5, sm.Tag, sm.EnqueueTime = e.newID(), *m.Body, md5Hex(*m.Body), tag, e.now()
	e.mu.Lock()
	t.msgs = append(t.msgs, sm)
	t.count++
	if lim := e.cfg.StoreLimit; lim > 0 && len(t.msgs) > 2*lim {
		t.msgs = append(t.msgs[:0], t.msgs[len(t.msgs)-lim:]...)
	}
	e.mu.Unlock()
	e.stats.published.Add(1)
	x.buf.Reset()
	out := encodeReply(x.buf, "Message", sentReply{MessageId: sm.ID, MessageBodyMD5: sm.BodyMD5})
	e.write(x, http.StatusCreated, out)
	return nil
}

// receiveMessages serves ReceiveMessage, BatchReceiveMessage and peek.
func (e *Emulator) receiveMessages(x *exchange, f Faults, name string) *apiError {
	qv := x.r.URL.Query()
	batch := qv.Has("numOfMessages")
	num := 1
	if batch {
		n, err := strconv.Atoi(qv.Get("numOfMessages"))
		if err != nil || n < 1 || n > maxBatch {
			return errf(400, "InvalidArgument", "The value of numOfMessages should between 1 and 16.")
		}
		num = n
	}
	peek := strings.EqualFold(qv.Get("peekonly"), "true")
	q, wait, err := under(e, e.queueFor, name, errQueueNotExist, func(q *queue) int { return q.attrs.PollingWaitSeconds })
	if err != nil {
		return err
	}
	if qv.Has("waitseconds") {
		n, err := strconv.Atoi(qv.Get("waitseconds"))
		if err != nil || n < 0 || n > maxWaitSeconds {
			return errf(400, "InvalidArgument", "The value of waitseconds should between 0 and 30.")
		}
		wait = n
	}
	if peek {
		wait = 0
	}
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		e.mu.Lock()
		now := e.now()
		got, next := q.take(e, now, num, peek)
		ch := q.notify
		e.mu.Unlock()
		if len(got) > 0 {
			if !peek {
				e.stats.received.Add(int64(len(got)))
			}
			x.buf.Reset()
			e.write(x, http.StatusOK, encodeMessages(x.buf, receivedReplies(got), batch))
			return nil
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return errf(404, "MessageNotExist", "Message not exist.")
		}
		if !next.IsZero() {
			remaining = min(remaining, max(next.Sub(now), time.Millisecond))
		}
		t := time.NewTimer(remaining)
		select {
		case <-ch:
		case <-t.C:
		case <-x.r.Context().Done():
			t.Stop()
			return nil
		}
		t.Stop()
	}
}

// received is a message as a receive reply shows it.
type received struct {
	StoredMessage
	receipt      string
	nextVisible  time.Time
	firstDequeue time.Time
}

// take returns up to n visible messages, highest priority (lowest number)
// first and then oldest first, making them invisible for the visibility
// timeout unless peek. It also returns when the next invisible message
// becomes visible (zero if none). e.mu must be held.
func (q *queue) take(e *Emulator, now time.Time, n int, peek bool) ([]received, time.Time) {
	var vis []*qmsg
	var next time.Time
	for _, m := range q.msgs {
		if !m.visibleAt.After(now) {
			vis = append(vis, m)
		} else if next.IsZero() || m.visibleAt.Before(next) {
			next = m.visibleAt
		}
	}
	sort.SliceStable(vis, func(i, j int) bool { return vis[i].Priority < vis[j].Priority })
	if len(vis) > n {
		vis = vis[:n]
	}
	out := make([]received, 0, len(vis))
	for _, m := range vis {
		if peek {
			out = append(out, received{StoredMessage: m.StoredMessage, nextVisible: m.visibleAt, firstDequeue: m.firstDequeue})
			continue
		}
		if m.receipt != "" {
			delete(q.byReceipt, m.receipt)
		}
		m.receipt = e.newReceipt()
		q.byReceipt[m.receipt] = m
		m.DequeueCount++
		if m.firstDequeue.IsZero() {
			m.firstDequeue = now
		}
		m.visibleAt = now.Add(time.Duration(q.attrs.VisibilityTimeout) * time.Second)
		out = append(out, received{m.StoredMessage, m.receipt, m.visibleAt, m.firstDequeue})
	}
	return out, next
}

// receivedReplies returns msgs as a receive reply shows them.
func receivedReplies(msgs []received) []receivedReply {
	out := make([]receivedReply, len(msgs))
	for i, m := range msgs {
		out[i] = receivedReply{MessageId: m.ID, ReceiptHandle: m.receipt, MessageBodyMD5: m.BodyMD5, MessageBody: m.Body,
			EnqueueTime: millis(m.EnqueueTime), NextVisibleTime: millis(m.nextVisible), FirstDequeueTime: millis(m.firstDequeue),
			DequeueCount: m.DequeueCount, Priority: m.Priority, MessageGroupId: m.MessageGroupID}
		if len(m.UserProperties) > 0 {
			out[i].UserProperties = &userProps[Property]{m.UserProperties}
		}
		if len(m.SystemProperties) > 0 {
			out[i].SystemProperties = &systemProps[Property]{m.SystemProperties}
		}
	}
	return out
}

// deleteMessage serves DeleteMessage.
func (e *Emulator) deleteMessage(x *exchange, f Faults, name string) *apiError {
	qv := x.r.URL.Query()
	rh := qv.Get("ReceiptHandle")
	if rh == "" {
		return errf(400, "MissingReceiptHandle", "The ReceiptHandle is required.")
	}
	if !strings.HasPrefix(rh, "1-") {
		return errf(400, "ReceiptHandleError", "The receipt handle you provided is not valid.")
	}
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.queueFor(name)
	if q == nil {
		return errQueueNotExist
	}
	m := q.byReceipt[rh]
	if m == nil {
		return errf(404, "MessageNotExist", "Message not exist.")
	}
	delete(q.byReceipt, rh)
	for i, qm := range q.msgs {
		if qm == m {
			q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
			break
		}
	}
	e.stats.deleted.Add(1)
	e.write(x, http.StatusNoContent, nil)
	return nil
}

// getAttributes serves GetQueueAttributes and GetTopicAttributes: the
// reply, made by attrs under e.mu, as the root element root.
func (e *Emulator) getAttributes(x *exchange, f Faults, root string, attrs func() (any, *apiError)) *apiError {
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	e.mu.Lock()
	reply, err := attrs()
	e.mu.Unlock()
	if err != nil {
		return err
	}
	x.buf.Reset()
	e.write(x, http.StatusOK, encodeReply(x.buf, root, reply))
	return nil
}

// queueAttributes returns the GetQueueAttributes reply of queue name.
// e.mu must be held.
func (e *Emulator) queueAttributes(name string) (any, *apiError) {
	q := e.queueFor(name)
	if q == nil {
		return nil, errQueueNotExist
	}
	now := e.now()
	var active, inactive, delayed int
	for _, m := range q.msgs {
		switch {
		case !m.visibleAt.After(now):
			active++
		case m.DequeueCount == 0:
			delayed++
		default:
			inactive++
		}
	}
	a := q.attrs
	return queueReply{QueueName: q.name, CreateTime: q.created.Unix(), LastModifyTime: q.modified.Unix(),
		DelaySeconds: a.DelaySeconds, MaximumMessageSize: a.MaximumMessageSize, MessageRetentionPeriod: a.MessageRetentionPeriod,
		VisibilityTimeout: a.VisibilityTimeout, PollingWaitSeconds: a.PollingWaitSeconds,
		ActiveMessages: active, InactiveMessages: inactive, DelayMessages: delayed, LoggingEnabled: boolText(a.LoggingEnabled)}, nil
}

// topicAttributes returns the GetTopicAttributes reply of topic name.
// e.mu must be held.
func (e *Emulator) topicAttributes(name string) (any, *apiError) {
	t := e.topicFor(name)
	if t == nil {
		return nil, errTopicNotExist
	}
	return topicReply{TopicName: t.name, CreateTime: t.created.Unix(), LastModifyTime: t.modified.Unix(),
		MaximumMessageSize: t.attrs.MaximumMessageSize, MessageRetentionPeriod: 86400, MessageCount: t.count,
		LoggingEnabled: boolText(t.attrs.LoggingEnabled)}, nil
}

// attrsXML is the body of CreateQueue, SetQueueAttributes and CreateTopic.
type attrsXML struct {
	XMLName                xml.Name
	DelaySeconds           *string `xml:"DelaySeconds"`
	MaximumMessageSize     *string `xml:"MaximumMessageSize"`
	MessageRetentionPeriod *string `xml:"MessageRetentionPeriod"`
	VisibilityTimeout      *string `xml:"VisibilityTimeout"`
	PollingWaitSeconds     *string `xml:"PollingWaitSeconds"`
	LoggingEnabled         *string `xml:"LoggingEnabled"`
}

func parseAttrs(body []byte, root string) (attrsXML, *apiError) {
	var a attrsXML
	if len(bytes.TrimSpace(body)) == 0 {
		return a, nil
	}
	if err := xml.Unmarshal(body, &a); err != nil {
		return a, malformed(err)
	}
	if a.XMLName.Local != root {
		return a, errf(400, "MalformedXML", "The root element must be <"+root+">.")
	}
	if !validNS(a.XMLName.Space) {
		return a, malformed(errBadNS)
	}
	return a, nil
}

func boolField(v *string, def bool) (bool, *apiError) {
	if v == nil {
		return def, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(*v))
	if err != nil {
		return false, errf(400, "InvalidArgument", "The value of LoggingEnabled should be True or False.")
	}
	return b, nil
}

func applyQueueAttrs(a attrsXML, base queueAttrs) (queueAttrs, *apiError) {
	var err *apiError
	out := base
	if out.DelaySeconds, err = intField(a.DelaySeconds, "DelaySeconds", 0, maxDelay, base.DelaySeconds); err != nil {
		return out, err
	}
	if out.MaximumMessageSize, err = intField(a.MaximumMessageSize, "MaximumMessageSize", 1024, 65536, base.MaximumMessageSize); err != nil {
		return out, err
	}
	if out.MessageRetentionPeriod, err = intField(a.MessageRetentionPeriod, "MessageRetentionPeriod", 60, 604800, base.MessageRetentionPeriod); err != nil {
		return out, err
	}
	if out.VisibilityTimeout, err = intField(a.VisibilityTimeout, "VisibilityTimeout", 1, 43200, base.VisibilityTimeout); err != nil {
		return out, err
	}
	if out.PollingWaitSeconds, err = intField(a.PollingWaitSeconds, "PollingWaitSeconds", 0, maxWaitSeconds, base.PollingWaitSeconds); err != nil {
		return out, err
	}
	if out.LoggingEnabled, err = boolField(a.LoggingEnabled, base.LoggingEnabled); err != nil {
		return out, err
	}
	return out, nil
}

// createQueue serves CreateQueue and, with ?metaoverride=true,
// SetQueueAttributes.
func (e *Emulator) createQueue(x *exchange, f Faults, name string) *apiError {
	ax, aerr := parseAttrs(x.body, "Queue")
	if aerr != nil {
		return aerr
	}
	override := strings.EqualFold(x.r.URL.Query().Get("metaoverride"), "true")
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	q := e.queues[name]
	if override {
		if q == nil {
			return errQueueNotExist
		}
		a, err := applyQueueAttrs(ax, q.attrs)
		if err != nil {
			return err
		}
		q.attrs, q.modified = a, e.now()
		e.write(x, http.StatusNoContent, nil)
		return nil
	}
	a, err := applyQueueAttrs(ax, defaultQueueAttrs())
	if err != nil {
		return err
	}
	return e.declare(x, q != nil, q != nil && q.attrs == a, "/queues/"+name,
		errf(409, "QueueAlreadyExist", "The queue you want to create already exists with different attributes."),
		func() { e.queues[name] = newQueue(name, a, e.now()) })
}

// declare answers CreateQueue or CreateTopic: 204 when the queue or topic
// exists with the same attributes, conflict when with others, else 201 with
// its Location (path) after create. e.mu must be held.
func (e *Emulator) declare(x *exchange, exists, same bool, path string, conflict *apiError, create func()) *apiError {
	if exists {
		if !same {
			return conflict
		}
		e.write(x, http.StatusNoContent, nil)
		return nil
	}
	create()
	x.w.Header()["Location"] = []string{hostID(x.r) + path}
	e.write(x, http.StatusCreated, nil)
	return nil
}

// createTopic serves CreateTopic.
func (e *Emulator) createTopic(x *exchange, f Faults, name string) *apiError {
	ax, aerr := parseAttrs(x.body, "Topic")
	if aerr != nil {
		return aerr
	}
	if err := e.admit(f, x.r, 1); err != nil {
		return err
	}
	a := defaultTopicAttrs()
	var err *apiError
	if a.MaximumMessageSize, err = intField(ax.MaximumMessageSize, "MaximumMessageSize", 1024, 65536, a.MaximumMessageSize); err != nil {
		return err
	}
	if a.LoggingEnabled, err = boolField(ax.LoggingEnabled, false); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.topics[name]
	return e.declare(x, t != nil, t != nil && t.attrs == a, "/topics/"+name,
		errf(409, "TopicAlreadyExist", "The topic you want to create already exists with different attributes."),
		func() { e.topics[name] = newTopic(name, a, e.now()) })
}
