package mnsvectors

import "testing"

func TestLoadV4(t *testing.T) {
	vs, err := LoadV4()
	if err != nil {
		t.Fatal(err)
	}
	official := 0
	for _, v := range vs.Vectors {
		if _, err := v.When(); err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
		if v.Signature == "" || v.SK == "" || v.Method == "" {
			t.Errorf("%s: incomplete vector %+v", v.Name, v)
		}
		if !v.SelfComputed {
			official++
		}
	}
	if official < 8 || vs.Raw.Signature == "" || vs.Key.Hex == "" {
		t.Errorf("%d official vectors, raw %+v, key %+v", official, vs.Raw, vs.Key)
	}
}
