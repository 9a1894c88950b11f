package bridge

import (
	"errors"
	"fmt"
	"time"
)

// check reports every bound or setting of c out of range, naming the
// PipelineConfig field. It fills in nothing: the values come from the
// config (config.Default() holds the defaults).
func (c *PipelineConfig) check() error {
	var errs []error
	atLeast1 := func(name string, v int64) {
		if v < 1 {
			errs = append(errs, fmt.Errorf("pipeline: %s must be at least 1, got %d", name, v))
		}
	}
	atLeast1("BatchSize", int64(c.BatchSize))
	atLeast1("BatchBytes", int64(c.BatchBytes))
	atLeast1("MaxInFlight", int64(c.MaxInFlight))
	atLeast1("MaxInFlightBytes", c.MaxInFlightBytes)
	atLeast1("MaxRequestsPerDestination", int64(c.MaxRequestsPerDestination))
	atLeast1("MaxRequests", int64(c.MaxRequests))
	errs = append(errs, checkSending(c.Linger, c.Retry, c.Envelope))
	return errors.Join(errs...)
}

// check reports every field of a whole tuning (Replace) out of range.
func (t *Tuning) check() error {
	var errs []error
	if t.Router == nil {
		errs = append(errs, errors.New("pipeline: Tuning.Router is required"))
	}
	if t.BatchSize < 1 || t.BatchBytes < 1 {
		errs = append(errs, fmt.Errorf("pipeline: BatchSize and BatchBytes must be at least 1, got %d and %d", t.BatchSize, t.BatchBytes))
	}
	errs = append(errs, checkSending(t.Linger, t.Retry, t.Envelope))
	return errors.Join(errs...)
}

// checkSending checks the settings PipelineConfig and Tuning share: the
// linger, the retry policy and the envelope.
func checkSending(linger time.Duration, retry RetryPolicy, envelope string) error {
	var errs []error
	if linger < 0 {
		errs = append(errs, fmt.Errorf("pipeline: Linger must not be negative, got %s", linger))
	}
	errs = append(errs, retry.check())
	if envelope != EnvelopeRaw && envelope != EnvelopeJSON {
		errs = append(errs, fmt.Errorf("pipeline: Envelope %q is not %q or %q", envelope, EnvelopeRaw, EnvelopeJSON))
	}
	return errors.Join(errs...)
}

func (r RetryPolicy) check() error {
	if r.InitialBackoff <= 0 {
		return fmt.Errorf("pipeline: Retry.InitialBackoff must be more than 0, got %s", r.InitialBackoff)
	}
	if r.MaxBackoff < r.InitialBackoff {
		return fmt.Errorf("pipeline: Retry.MaxBackoff %s is less than Retry.InitialBackoff %s", r.MaxBackoff, r.InitialBackoff)
	}
	if r.MaxAttempts < 0 || r.MaxAge < 0 {
		return fmt.Errorf("pipeline: Retry.MaxAttempts and Retry.MaxAge must not be negative (0: no limit)")
	}
	return nil
}
