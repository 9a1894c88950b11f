package ident

import "testing"

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"productKey": true, "_x": true, "A1_b": true, "x9": true,
		"": false, "9x": false, "a-b": false, "a.b": false, "a b": false, "ä": false, "{x}": false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}
