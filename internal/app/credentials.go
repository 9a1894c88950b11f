package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// signerCredentials are the caches both signers draw their key triple
// from: one for the source and one for MNS, the same one when
// mns.credentials are the source's.
type signerCredentials struct {
	source, mns *credentials.Cache
	shared      bool
	// provisioned is set once the source is built; see provisioningParams.
	provisioned atomic.Bool
}

// newSignerCredentials builds the providers the config selects, each
// behind one cache; no I/O.
func newSignerCredentials(cfg *config.Config, opts credentials.CacheOptions, log *slog.Logger) (*signerCredentials, error) {
	sp, err := cfg.SourceProvider()
	if err != nil {
		return nil, err
	}
	o := opts
	o.Logger = log.With("component", "credentials", "for", "source.credentials")
	sc := &signerCredentials{source: credentials.NewCache(sp, o)}
	mp, shared, err := cfg.MNSProvider()
	if err != nil {
		return nil, err
	}
	if shared {
		sc.mns, sc.shared = sc.source, true
		return sc, nil
	}
	o.Logger = log.With("component", "credentials", "for", "mns.credentials")
	sc.mns = credentials.NewCache(mp, o)
	return sc, nil
}

// register exports the caches' expiry and failed refreshes.
func (sc *signerCredentials) register(reg prometheus.Registerer) {
	expiry := prometheus.NewDesc("iot_mns_bridge_credentials_expiry_timestamp_seconds",
		"When the held credentials expire (Unix time); 0 when they do not expire or none are held.", []string{"credentials"}, nil)
	failures := prometheus.NewDesc("iot_mns_bridge_credentials_refresh_failures",
		"Consecutive failed credential refreshes (0 while refreshes work).", []string{"credentials"}, nil)
	reg.MustRegister(collectorFunc{descs: []*prometheus.Desc{expiry, failures}, collect: func(ch chan<- prometheus.Metric) {
		for _, c := range []struct {
			name  string
			cache *credentials.Cache
		}{{"source", sc.source}, {"mns", sc.mns}} {
			st := c.cache.Status()
			exp := 0.0
			if !st.Expiration.IsZero() {
				exp = float64(st.Expiration.Unix())
			}
			ch <- prometheus.MustNewConstMetric(expiry, prometheus.GaugeValue, exp, c.name)
			ch <- prometheus.MustNewConstMetric(failures, prometheus.GaugeValue, float64(st.Failures), c.name)
		}
	}})
}

// collectorFunc is a prometheus.Collector from a function.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
}

func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f.collect(ch) }

// close stops the caches' proactive refreshes.
func (sc *signerCredentials) close() {
	sc.source.Close()
	sc.mns.Close()
}

// iotParams returns the source's signing parameters with the current
// triple: every dial signs with the triple valid at that time, with
// authMode=ststoken and the triple's own AccessKeyId when it has a token.
func (sc *signerCredentials) iotParams(cfg *config.Config) func() (iotauth.Params, error) {
	return func() (iotauth.Params, error) {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Source.DialTimeout)
		defer cancel()
		c, err := sc.source.Get(ctx)
		if err != nil {
			return iotauth.Params{}, fmt.Errorf("source.credentials: %w", err)
		}
		// A triple the login cannot carry (a separator in the id or token)
		// fails this dial only: the next issue may be fine, so it must not
		// reach the signer, which treats bad parameters as a config error.
		key := iotauth.Params{ClientID: "c", ConsumerGroupID: "g", SignMethod: iotauth.HMACSHA1,
			AccessKeyID: c.AccessKeyID, AccessKeySecret: c.AccessKeySecret, SecurityToken: c.SecurityToken}
		if err := key.Validate(); err != nil {
			return iotauth.Params{}, fmt.Errorf("source.credentials: the key from %s cannot sign a login: %w", c.Source, err)
		}
		return cfg.SourceParams(c.AccessKeyID, c.AccessKeySecret, c.SecurityToken), nil
	}
}

// provisioningParams is iotParams for building the source: a source may
// check its parameters once when it is built (amqpsrc does), and a provider
// that is down at that moment must not stop the bridge from starting (it
// holds messages and retries, as after any failed refresh). Until
// provisioned is set, a credentials failure yields placeholder keys that
// pass that check; every dial asks again and gets the real error.
func (sc *signerCredentials) provisioningParams(cfg *config.Config) func() (iotauth.Params, error) {
	params := sc.iotParams(cfg)
	return func() (iotauth.Params, error) {
		p, err := params()
		if err != nil && !sc.provisioned.Load() {
			return cfg.SourceParams("pending", "pending", ""), nil
		}
		return p, err
	}
}

// mnsKey returns the MNS client's credentials func.
func (sc *signerCredentials) mnsKey() func(ctx context.Context) (string, string, string, error) {
	return func(ctx context.Context) (string, string, string, error) {
		c, err := sc.mns.Get(ctx)
		if err != nil {
			return "", "", "", fmt.Errorf("mns.credentials: %w", err)
		}
		return c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, nil
	}
}

// report writes which provider supplied each credential and when it
// expires (never a secret); it returns whether the source's and MNS's
// could not be had (both when they are one).
func (sc *signerCredentials) report(ctx context.Context, w io.Writer) (sourceFailed, mnsFailed bool) {
	line := func(field string, cache *credentials.Cache) (failed bool) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := cache.Get(ctx)
		if err != nil {
			fmt.Fprintf(w, "FAIL %s (provider %s): %v\n", field, cache.Provider().Name(), err)
			return true
		}
		exp := "does not expire"
		if !c.Expiration.IsZero() {
			exp = fmt.Sprintf("expires %s (in %s)", c.Expiration.UTC().Format(time.RFC3339), time.Until(c.Expiration).Round(time.Second))
		}
		mode := "aksign"
		if c.SecurityToken != "" {
			mode = "ststoken"
		}
		fmt.Fprintf(w, "ok   %s: provider %s, from %s, AccessKeyId %s, %s, %s\n", field, cache.Provider().Name(), c.Source,
			credentials.MaskID(c.AccessKeyID), mode, exp)
		if c.Skipped != "" {
			fmt.Fprintf(w, "warn %s: the default chain skipped %s; fix it, or turn it off (remove its inputs) if the credentials above are the ones to use\n", field, c.Skipped)
		}
		return false
	}
	sourceFailed = line("source.credentials", sc.source)
	switch {
	case sc.shared && sourceFailed:
		fmt.Fprintf(w, "FAIL mns.credentials: the source's (see above)\n")
		mnsFailed = true
	case sc.shared:
		fmt.Fprintf(w, "ok   mns.credentials: the source's (same provider, same triple)\n")
	default:
		mnsFailed = line("mns.credentials", sc.mns)
	}
	return sourceFailed, mnsFailed
}
