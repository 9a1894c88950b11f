package source

import (
	"errors"
	"strings"
	"testing"
	"time"

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
