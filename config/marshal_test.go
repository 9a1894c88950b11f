package config_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// TestMarshalRoundTrip: a Config built in code and written by Marshal loads
// back with what was set, and the file holds only what differs from the
// defaults.
func TestMarshalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	bundle, err := certgen.New("localhost") // the loader checks the CA file holds a certificate
	if err != nil {
		t.Fatal(err)
	}
	ca := testfile.Write(t, dir, "ca.pem", string(bundle.CAPEM))
	c := configtest.New()
	c.Source.Endpoint = "127.0.0.1:61614"
	c.Source.ClientID = "rt"
	c.Source.Credentials = config.Credentials{AccessKeyID: "LTAIrt", AccessKeySecret: "s3cret: #1"}
	c.Source.TLS.CAFile = ca
	c.Source.STOMP.Ack = "client-individual"
	c.Source.DialTimeout = 1500 * time.Millisecond
	c.MNS.Endpoint = "http://127.0.0.1:9"
	c.Routes = []config.Route{{Match: "/{productKey}/#", Queue: "t-{productKey}", Properties: map[string]string{"b": "2", "a": "{productKey}"}},
		{Match: "/x/#", Topic: "x", MessageTag: "t"}}
	c.DefaultRoute.Queue = "unrouted"
	c.Delivery.DeadLetter.File = ""
	c.Delivery.DeadLetter.Queue = "dlq"
	c.Spool.MaxBytes = 5 * config.MiB
	c.HTTP.Listen = ""
	c.Log.SummaryInterval = 0
	data, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "batch_size") || !strings.Contains(string(data), "listen: \"\"") {
		t.Errorf("YAML holds a default or lacks a changed value:\n%s", data)
	}
	path := configtest.Write(t, dir, "c.yaml", c)
	got, err := config.Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	// The loader fills what the file leaves out (MNS credentials from the
	// source, paths made absolute); what the test set must come back.
	if got.Source.Endpoint != c.Source.Endpoint || got.Source.Credentials.AccessKeySecret != "s3cret: #1" ||
		got.Source.STOMP.Ack != "client-individual" || got.Source.DialTimeout != 1500*time.Millisecond ||
		!reflect.DeepEqual(got.Routes, c.Routes) || !reflect.DeepEqual(got.DefaultRoute, c.DefaultRoute) ||
		got.Delivery.DeadLetter != c.Delivery.DeadLetter || got.Spool.MaxBytes != 5*config.MiB ||
		got.HTTP.Listen != "" || got.Log.SummaryInterval != 0 || got.Delivery.BatchSize != config.Default().Delivery.BatchSize {
		t.Errorf("loaded back:\n%#v\nfrom\n%s", *got, data)
	}
}
