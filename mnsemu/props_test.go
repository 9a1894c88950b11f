package mnsemu

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
)

type xmlProp struct {
	Name, Value, Type string
}

type xmlPropMsg struct {
	MessageBody    string
	UserProperties struct {
		List []xmlProp `xml:"PropertyValue"`
	}
	SystemProperties struct {
		List []xmlProp `xml:"SystemPropertyValue"`
	}
	MessageGroupId string
}

// The documented request (Java SDK serialisation: namespace without the
// trailing slash) is stored, and Receive and Peek return the properties
// and group id as the docs show them, BINARY still base64.
func TestPropertiesRoundTrip(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}, Topics: []string{"t1"}})
	body := `<?xml version="1.0" encoding="UTF-8"?>
<Message xmlns="http://mns.aliyuncs.com/doc/v1">
  <MessageBody>hello</MessageBody>
  <DelaySeconds>0</DelaySeconds>
  <Priority>8</Priority>
  <UserProperties>
    <PropertyValue><Name>city</Name><Value>hang&lt;zhou&gt;</Value><Type>STRING</Type></PropertyValue>
    <PropertyValue><Name>generateTime</Name><Value>1700000000123</Value><Type>NUMBER</Type></PropertyValue>
    <PropertyValue><Name>ok</Name><Value>true</Value><Type>BOOLEAN</Type></PropertyValue>
    <PropertyValue><Name>blob</Name><Value>AAEC/w==</Value><Type>BINARY</Type></PropertyValue>
  </UserProperties>
  <SystemProperties>
    <SystemPropertyValue><Name>traceparent</Name><Value>00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01</Value><Type>STRING</Type></SystemPropertyValue>
  </SystemProperties>
  <MessageGroupId>order-42</MessageGroupId>
</Message>`
	if st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: body, ctype: "text/xml;charset=UTF-8"}); st != 201 {
		t.Fatalf("send: %d %s", st, b)
	}
	stored := v.e.Messages("q1")
	if len(stored) != 1 || len(stored[0].UserProperties) != 4 || stored[0].MessageGroupID != "order-42" {
		t.Fatalf("stored %+v", stored)
	}
	if val, ok := stored[0].UserProperty("city"); !ok || val != "hang<zhou>" {
		t.Errorf("city = %q %v", val, ok)
	}
	check := func(what string, b []byte) {
		t.Helper()
		var m xmlPropMsg
		if err := xml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v: %s", what, err, b)
		}
		want := []xmlProp{{"city", "hang<zhou>", "STRING"}, {"generateTime", "1700000000123", "NUMBER"}, {"ok", "true", "BOOLEAN"}, {"blob", "AAEC/w==", "BINARY"}}
		if fmt.Sprint(m.UserProperties.List) != fmt.Sprint(want) {
			t.Errorf("%s: user properties %v, want %v", what, m.UserProperties.List, want)
		}
		if len(m.SystemProperties.List) != 1 || m.SystemProperties.List[0].Name != "traceparent" || m.MessageGroupId != "order-42" || m.MessageBody != "hello" {
			t.Errorf("%s: %+v", what, m)
		}
	}
	st, _, b := v.do(req{method: "GET", path: "/queues/q1/messages?peekonly=true"})
	if st != 200 {
		t.Fatalf("peek %d %s", st, b)
	}
	check("peek", b)
	st, _, b = v.do(req{method: "GET", path: "/queues/q1/messages?numOfMessages=16&waitseconds=0"})
	if st != 200 {
		t.Fatalf("batch receive %d %s", st, b)
	}
	var ms struct {
		Msgs []struct {
			Inner []byte `xml:",innerxml"`
		} `xml:"Message"`
	}
	if err := xml.Unmarshal(b, &ms); err != nil || len(ms.Msgs) != 1 {
		t.Fatalf("batch receive: %v %s", err, b)
	}
	check("batch receive", []byte("<Message>"+string(ms.Msgs[0].Inner)+"</Message>"))

	// Publish keeps them too.
	pub := `<Message><MessageBody>x</MessageBody><MessageTag>tg</MessageTag><UserProperties><PropertyValue><Name>a.b</Name><Value>1</Value><Type>STRING</Type></PropertyValue></UserProperties><MessageGroupId>g</MessageGroupId></Message>`
	if st, _, b := v.do(req{method: "POST", path: "/topics/t1/messages", body: pub, ctype: "text/xml"}); st != 201 {
		t.Fatalf("publish: %d %s", st, b)
	}
	if p := v.e.Published("t1"); len(p) != 1 || len(p[0].UserProperties) != 1 || p[0].MessageGroupID != "g" {
		t.Errorf("published %+v", p)
	}
}

// Malformed properties are refused with InvalidArgument, nothing stored,
// in Send, BatchSend (the whole request) and Publish.
func TestPropertiesRefused(t *testing.T) {
	prop := func(name, value, typ string) string {
		return "<PropertyValue><Name>" + name + "</Name><Value>" + value + "</Value><Type>" + typ + "</Type></PropertyValue>"
	}
	user := func(ps ...string) string { return "<UserProperties>" + strings.Join(ps, "") + "</UserProperties>" }
	many := make([]string, 51)
	for i := range many {
		many[i] = prop(fmt.Sprintf("p%d", i), "v", "STRING")
	}
	tests := []struct{ name, extra string }{
		{"51 properties", user(many...)},
		{"name with space", user(prop("a b", "v", "STRING"))},
		{"name starting with dot", user(prop(".a", "v", "STRING"))},
		{"name with ..", user(prop("a..b", "v", "STRING"))},
		{"name of 257", user(prop(strings.Repeat("n", 257), "v", "STRING"))},
		{"duplicate", user(prop("a", "1", "STRING"), prop("a", "2", "STRING"))},
		{"value of 4097", user(prop("a", strings.Repeat("v", 4097), "STRING"))},
		{"bad type", user(prop("a", "v", "string"))},
		{"bad boolean", user(prop("a", "yes", "BOOLEAN"))},
		{"bad binary", user(prop("a", "!!", "BINARY"))},
		{"no type", user("<PropertyValue><Name>a</Name><Value>v</Value></PropertyValue>")},
		{"unknown system property", "<SystemProperties><SystemPropertyValue><Name>DLQSourceArn</Name><Value>x</Value><Type>STRING</Type></SystemPropertyValue></SystemProperties>"},
		{"body and properties over 64 KB", user(prop("a", strings.Repeat("v", 4000), "STRING"), prop("b", strings.Repeat("v", 4000), "STRING"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newEnv(t, Config{Queues: []string{"q1"}, Topics: []string{"t1"}})
			bodyText := "x"
			if strings.Contains(tt.name, "64 KB") {
				bodyText = strings.Repeat("b", 60000)
			}
			msg := "<MessageBody>" + bodyText + "</MessageBody>" + tt.extra
			for _, r := range []req{
				{method: "POST", path: "/queues/q1/messages", body: "<Message>" + msg + "</Message>", ctype: "text/xml"},
				{method: "POST", path: "/queues/q1/messages", body: "<Messages><Message><MessageBody>ok</MessageBody></Message><Message>" + msg + "</Message></Messages>", ctype: "text/xml"},
				{method: "POST", path: "/topics/t1/messages", body: "<Message>" + msg + "</Message>", ctype: "text/xml"},
			} {
				st, _, b := v.do(r)
				v.wantError(st, b, 400, "InvalidArgument")
			}
			if len(v.e.Messages("q1")) != 0 || len(v.e.Published("t1")) != 0 {
				t.Error("a refused message was stored")
			}
		})
	}
}
