package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestFieldErrorNamesTheFieldAndTheReason: a FieldError says what the
// operator calls the field (Names; "Config.<Field>" without one) and the
// reason, wraps the reason's error, and Fields finds every one through
// wrapping and errors.Join.
func TestFieldErrorNamesTheFieldAndTheReason(t *testing.T) {
	names := Names{FieldCAFile: "tls.ca"}
	err := names.Bad(FieldCAFile, "read it: %w", fs.ErrNotExist)
	if got, want := err.Error(), "tls.ca: read it: "+fs.ErrNotExist.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != FieldCAFile || fe.Name != "tls.ca" {
		t.Errorf("errors.As = %+v, want the CAFile field named tls.ca", fe)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("the reason's error is not wrapped")
	}
	if got := Names(nil).Bad(FieldDialTimeout, "must be positive").Error(); got != "Config.DialTimeout: must be positive" {
		t.Errorf("without Names: %q", got)
	}
	joined := fmt.Errorf("config: %w", errors.Join(err, errors.New("other"), names.Bad(FieldEndpoint, "is required")))
	if got, want := Fields(joined), []Field{FieldCAFile, FieldEndpoint}; !reflect.DeepEqual(got, want) {
		t.Errorf("Fields = %v, want %v", got, want)
	}
	if !HasField(joined, FieldEndpoint) || HasField(joined, FieldConnections) || HasField(nil, FieldEndpoint) {
		t.Error("HasField is wrong")
	}
}

// TestExplanationsUseTheNames: the dial and login explanations and the
// config checks of this package name settings only through Names.
func TestExplanationsUseTheNames(t *testing.T) {
	names := Names{FieldEndpoint: "EP", FieldDialTimeout: "DT", FieldParams: "CREDS", FieldConsumerGroupID: "CG",
		FieldIotInstanceID: "INST", FieldSignMethod: "SM", FieldCAFile: "CA"}
	if got := ExplainDial(names, "op", time.Second, fmt.Errorf("x: %w", context.DeadlineExceeded)).Error(); !strings.Contains(got, "(DT); check EP,") {
		t.Errorf("ExplainDial = %q, want DT and EP", got)
	}
	if got := LoginRefused(names, "op", "no", nil).Error(); !strings.Contains(got, "check CREDS (AccessKey ID and secret, STS token), CG, INST and SM") {
		t.Errorf("LoginRefused = %q", got)
	}
	if err := CheckEndpoint("nohost", names); !HasField(err, FieldEndpoint) || !strings.HasPrefix(err.Error(), "EP: ") {
		t.Errorf("CheckEndpoint = %v", err)
	}
	if _, err := (TLSOptions{CAFile: "/nonexistent/ca.pem"}).TLSConfig("h", names); !HasField(err, FieldCAFile) ||
		!strings.HasPrefix(err.Error(), "CA: ") {
		t.Errorf("TLSConfig = %v", err)
	}
	var buf bytes.Buffer
	TLSOptions{InsecureSkipVerify: true}.WarnIfInsecure(slog.New(slog.NewTextHandler(&buf, nil)), Names{FieldInsecureSkipVerify: "SKIP"}, "c1", "h:1")
	if !strings.Contains(buf.String(), "verification is off (SKIP)") {
		t.Errorf("WarnIfInsecure logged %q, want the name SKIP", buf.String())
	}
}
