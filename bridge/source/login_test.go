package source

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// TestLoginFailsAlikeForEveryProtocol: Login is where both protocols sign,
// so they classify its failures alike: signing inputs that cannot be read
// now are transient (redialled), inputs that cannot sign are fatal; the
// protocol's edit reaches the login, and no error holds the secret.
func TestLoginFailsAlikeForEveryProtocol(t *testing.T) {
	const secret = "Zq9-login-secret"
	good := iotauth.Params{ClientID: "base", AccessKeyID: "LTAItest", AccessKeySecret: secret,
		ConsumerGroupID: "DEFAULT_GROUP", SignMethod: iotauth.HMACSHA1}
	at := time.Unix(1700000000, 0)
	settings := func(p iotauth.Params, err error) Settings {
		return Settings{Params: func() (iotauth.Params, error) { return p, err }, Clock: func() time.Time { return at }}
	}

	p, creds, err := settings(good, nil).Login("stomp connect", "gw-1", func(p *iotauth.Params) { p.EncodeBase64 = true })
	if err != nil || p.ClientID != "gw-1" || !strings.HasPrefix(creds.Username, "gw-1|") || !strings.Contains(creds.Username, "encode=base64") {
		t.Errorf("Login = %+v, %q, %v; want gw-1's login with the edit (encode=base64)", p, creds.Username, err)
	}

	_, _, err = settings(iotauth.Params{}, errors.New("credentials file mid-rotation")).Login("amqp connect", "gw-2", nil)
	if errors.Is(err, ErrFatal) {
		t.Errorf("Login with unreadable inputs = %v: fatal, want a transient error the driver redials", err)
	}
	errtext.Want(t, "Login (unreadable inputs)", err, []string{"amqp connect as gw-2", "credentials file mid-rotation"}, secret)

	bad := good
	bad.ConsumerGroupID = "bad,group"
	_, _, err = settings(bad, nil).Login("stomp connect", "gw-3", nil)
	if !errors.Is(err, ErrFatal) {
		t.Errorf("Login with inputs that cannot sign = %v, want ErrFatal", err)
	}
	errtext.Want(t, "Login (cannot sign)", err, []string{"stomp connect as gw-3", "sign the login", "consumerGroupId"}, secret)
}

// TestRefusalReportsOnlyWhatNewCredentialsMayFix: a refused login is
// reported to Settings.Refused (the credentials cache then fetches a new
// triple at once and warns that the clock may be behind) only when the
// server's reason may be the key triple: the key unknown, the STS token not
// the one issued, the timestamp, a wrong secret, or no cause named
// (RabbitMQ). A refusal naming another cause (the simulator's texts:
// throttled, a wrong consumer group or instance, a malformed login, the
// server stopping) is not: before, every refusal was, and each showed the
// "is the clock behind, ...?" warning.
func TestRefusalReportsOnlyWhatNewCredentialsMayFix(t *testing.T) {
	p := iotauth.Params{AccessKeyID: "LTAIsts"}
	rabbitUser := "c1|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=LTAIsts,iotInstanceId=x,consumerGroupId=g|"
	for _, tc := range []struct {
		reason   string
		reported bool
	}{
		{`authentication failed: unknown authId "LTAIsts"`, true},
		{"authentication failed: the securityToken is not the one issued with this authId", true},
		{"authentication failed: timestamp 1700000000000 is 10m0s away from the server clock (limit 5m0s)", true},
		{"authentication failed: signature mismatch: the passcode is not the HMAC of the username's authId and timestamp with the secret of that authId", true},
		{"Bad CONNECT (Access refused for user '" + rabbitUser + "')", true},
		{"throttled: more than 100 connection attempts in 1m0s for consumer group g1 (the platform's limit, across every client of the group); back off and retry", false},
		{`authentication failed: consumer group does not exist: "g2" (this server has g1); check consumerGroupId`, false},
		{`authentication failed: wrong instance: iotInstanceId "x" is not this instance's (iot-1); check iotInstanceId`, false},
		{"authentication failed: 9600: too many connections in one consumer group: consumer group g1 has 64 clients online", false},
		{"authentication failed: login (the platform username) and passcode (the signature) are required", false},
		{`authentication failed: username: timestamp "x" is not epoch milliseconds`, false},
		{"server is shutting down", false},
		{`authentication failed: not authorized: the RAM user of this authId may not subscribe (it lacks the action iot:sub); authId "LTAIsts"`, false},
	} {
		var heard []string
		s := Settings{Refused: func(id string) { heard = append(heard, id) }}
		err := s.Refusal(p, LoginRefused(nil, "stomp connect h:1", tc.reason, nil))
		if !errors.Is(err, bridge.ErrLoginRefused) {
			t.Errorf("%q: Refusal returned %v, want the refused login", tc.reason, err)
		}
		if got := len(heard) == 1 && heard[0] == p.AccessKeyID; got != tc.reported || len(heard) > 1 {
			t.Errorf("%q: Refused heard %q, want reported %v", tc.reason, heard, tc.reported)
		}
		// The same reason as the protocol's error (AMQP's SASL outcome).
		heard = nil
		s.Refusal(p, LoginRefused(nil, "amqp login", "", errors.New("SASL PLAIN auth failed with code 0x1: "+tc.reason)))
		if got := len(heard) == 1; got != tc.reported {
			t.Errorf("%q as the cause: Refused heard %q, want reported %v", tc.reason, heard, tc.reported)
		}
	}
	// A refusal the protocol explains itself (AMQP's throttled consumer
	// group, the server's own fault), and a failure that is not a refusal.
	for _, err := range []error{
		fmt.Errorf("amqp login: %w: sys-temp; the server had a transient system error", bridge.ErrLoginRefused),
		errors.New("stomp connect h:1: cannot reach the server"),
	} {
		heard := 0
		Settings{Refused: func(string) { heard++ }}.Refusal(p, err)
		if heard != 0 {
			t.Errorf("%v: reported to Refused", err)
		}
	}
}

// TestLoginRefusalNamesTheSettingTheReasonNames: a refusal whose reason
// names its cause (the simulator's texts: a throttled consumer group, a
// group or an instance the server does not know) tells the operator to
// change that one setting, and not the credentials; any other reason, or
// none, lists every setting a login depends on. Before, a throttled STOMP
// login (check -connect right after another bridge's reconnects) said
// "check source.credentials ...".
func TestLoginRefusalNamesTheSettingTheReasonNames(t *testing.T) {
	names := Names{FieldParams: "CREDS", FieldConsumerGroupID: "CG", FieldIotInstanceID: "INST", FieldSignMethod: "SM", FieldLimiter: "CAP",
		FieldConnections: "CONNS"}
	all := "check CREDS (AccessKey ID and secret, STS token), CG, INST and SM, and that the system clock is right"
	for _, tc := range []struct {
		reason string
		want   string
		not    []string
	}{
		{"throttled: more than 100 connection attempts in 1m0s for consumer group g1 (the platform's limit, across every client of the group); back off and retry",
			"the consumer group made too many connection attempts (the platform allows 100 a minute per group, across every client): wait a minute before trying again (the bridge retries with back-off); if it repeats, lower CAP",
			[]string{"CREDS", "INST", "SM"}},
		{`authentication failed: consumer group does not exist: "g2" (this server has g1); check consumerGroupId`,
			"check CG: the consumer group must exist in the instance", []string{"CREDS", "INST", "SM"}},
		{`authentication failed: wrong instance: iotInstanceId "x" is not this instance's (iot-1); check iotInstanceId`,
			"check INST: the ID on the console's instance overview", []string{"CREDS", "CG", "SM"}},
		// The platform's 9600 (before: 'check CREDS ..., CG, INST and SM').
		{`authentication failed: 9600: too many connections in one consumer group: consumer group g1 has 64 clients online, the platform's limit (error 9600); a client must leave it first`,
			"the consumer group has the 64 clients online that the platform allows (error 9600): each of CONNS is one, and so is every other bridge or client of the group; lower CONNS here or on the others",
			[]string{"CREDS", "INST", "SM", "CAP"}},
		// A user without the iot:sub permission (before: 'check CREDS (AccessKey ID and secret, STS token), CG, INST and SM').
		{`authentication failed: not authorized: the RAM user of this authId may not subscribe (it lacks the action iot:sub); authId "LTAIx"`,
			"the key was accepted, but its RAM user (for an STS token: the role) may not subscribe: grant it the action iot:sub " +
				"(the system policy AliyunIOTFullAccess has it), or give CREDS the key of a user that has it",
			[]string{"CG", "INST", "SM", "clock"}},
		// The login's timestamp, signed with this machine's clock (walk14: a
		// box 20 minutes and 2 days behind read 'check CREDS (...), CG, INST
		// and SM, and that the system clock is right', the clock last).
		{"authentication failed: timestamp 1796325396350 is 48h0m0s away from the server clock (limit 15m0s)",
			"the server refused the login's timestamp, which is this machine's clock: is the clock off? sync it (NTP); " +
				"the bridge signs each attempt with the time it has then, and logs in once the clock is right",
			[]string{"CREDS", "CG", "INST", "SM"}},
		{`authentication failed: unknown authId "LTAIx"`, all, nil},
		{"authentication failed: signature mismatch", all, nil},
		// A wrong secret: the simulator's reason names the timestamp the
		// HMAC covers, and is not the clock's (17ba87b took it for it).
		{"authentication failed: signature mismatch: the passcode is not the HMAC of the username's authId and timestamp with the secret of that authId", all, nil},
		{"", all, nil},
	} {
		for _, err := range []error{
			LoginRefused(names, "stomp connect h:1", tc.reason, nil),
			LoginRefused(names, "amqp login", "", errors.New("SASL PLAIN auth failed with code 0x1: "+tc.reason)),
		} {
			errtext.Want(t, tc.reason, err, []string{tc.want})
			for _, n := range tc.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("%q: %q names %s, which the reason does not concern", tc.reason, err, n)
				}
			}
		}
	}
}
