package field

import (
	"errors"
	"slices"
	"testing"
)

type testField string

// TestProblemsGathersEveryProblemInOrder: a check that meets several
// problems reports each, named for the operator, in the order met; a nil
// error adds nothing, and no problem is a nil error.
func TestProblemsGathersEveryProblemInOrder(t *testing.T) {
	names := Names[testField]{"A": "source.a"}
	p := names.Problems()
	if err := p.Err(); err != nil {
		t.Fatalf("no problem yet: Err = %v, want nil", err)
	}
	p.Bad("A", "must be positive, got %d", -1)
	p.Add(nil)
	p.Add(names.Bad("B", "%w", errors.New("unreadable")))
	err := p.Err()
	if got, want := Fields[testField](err), []testField{"A", "B"}; !slices.Equal(got, want) {
		t.Errorf("Fields = %v, want %v", got, want)
	}
	if got, want := err.Error(), "source.a: must be positive, got -1\nConfig.B: unreadable"; got != want {
		t.Errorf("Err = %q, want %q", got, want)
	}
}
