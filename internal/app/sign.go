package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// loadConfig loads and validates the config file named by -config; every
// problem is a UsageError (exit code 2).
func loadConfig(path string) (*config.Config, error) {
	cfg, _, err := loadConfigData(path)
	return cfg, err
}

// loadConfigData is loadConfig that also returns the file's contents as
// they were parsed (what a reload compares with).
func loadConfigData(path string) (*config.Config, []byte, error) {
	if path == "" {
		return nil, nil, usageErr("-config FILE is required")
	}
	cfg, data, err := config.LoadData(path)
	if err != nil {
		return nil, nil, &UsageError{Err: err}
	}
	return cfg, data, nil
}

func cmdSign(_ context.Context, args []string, stdio Stdio) error {
	fs := newFlags("sign", stdio)
	path := fs.String("config", "", "config `FILE`")
	ts := fs.Int64("timestamp", 0, "sign with this epoch-milliseconds timestamp instead of now")
	conn := fs.Int("connection", -1, "with source.connections > 1, sign for connection `I` (client id <client_id>-I)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	sp, err := cfg.SourceProvider()
	if err != nil {
		return &UsageError{Err: err}
	}
	cache := credentials.NewCache(sp, credentials.CacheOptions{OneShot: true})
	defer cache.Close()
	key, err := cache.Get(context.Background())
	if err != nil {
		return fmt.Errorf("source.credentials: %w", err)
	}
	p := cfg.SourceParams(key.AccessKeyID, key.AccessKeySecret, key.SecurityToken)
	if *conn >= 0 {
		p.ClientID = fmt.Sprintf("%s-%d", p.ClientID, *conn)
	}
	now := time.Now()
	if *ts != 0 {
		if *ts < 0 {
			return usageErr("-timestamp must be epoch milliseconds, got %d", *ts)
		}
		now = time.UnixMilli(*ts)
	}
	c, err := iotauth.Sign(p, now)
	if err != nil {
		var fe *iotauth.FieldError
		if errors.As(err, &fe) {
			return &UsageError{Err: err}
		}
		return err
	}
	fmt.Fprintf(stdio.Out, "username: %s\npassword: %s\n", c.Username, c.Password)
	fmt.Fprintln(stdio.Err, "warning: the password above is a credential (valid until the platform rejects its timestamp): do not share or log it")
	return nil
}
