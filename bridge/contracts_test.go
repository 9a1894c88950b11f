package bridge

import "testing"

// TestSinkLimitsFit: one request carries messages up to the count and the
// bytes (as Size counts them) of the sink's limits, at least one, and all
// when the sink declares none.
func TestSinkLimitsFit(t *testing.T) {
	msgs := make([]Outgoing, 5)
	for i := range msgs {
		msgs[i].Body = make([]byte, 10)
	}
	double := func(_ *Outgoing, n int) int { return 2 * n }
	for _, c := range []struct {
		lim  SinkLimits
		want int
	}{
		{SinkLimits{}, 5},
		{SinkLimits{Messages: 2}, 2},
		{SinkLimits{Bytes: 30}, 3},
		{SinkLimits{Bytes: 30, Size: double}, 1},
		{SinkLimits{Bytes: 5}, 1}, // over the limit: alone
		{SinkLimits{Messages: 4, Bytes: 100, Size: double}, 4},
	} {
		if got := c.lim.Fit(msgs); got != c.want {
			t.Errorf("%+v: Fit = %d, want %d", c.lim, got, c.want)
		}
	}
	if got := (SinkLimits{Messages: 2}).Fit(nil); got != 0 {
		t.Errorf("Fit of none = %d", got)
	}
}
