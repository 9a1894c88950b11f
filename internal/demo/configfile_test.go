package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWriteConfigKeepsAnEditedConfig: the demo writes its config again on
// each run in the same -dir, but a config the user edited (or a file that is
// not the demo's) is renamed aside, never overwritten.
func TestWriteConfigKeepsAnEditedConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "demo.yaml")
	now := time.Date(2026, 12, 3, 14, 5, 6, 0, time.UTC)
	read := func(p string) string {
		t.Helper()
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	for run, body := range []string{"endpoint: 127.0.0.1:1\n", "endpoint: 127.0.0.1:2\n"} {
		kept, err := writeConfig(path, []byte(body), now)
		if err != nil || kept != "" {
			t.Fatalf("run %d over the demo's own file: kept %q, err %v; want it written again", run, kept, err)
		}
		if got := read(path); !strings.HasPrefix(got, configHeader) || !strings.HasSuffix(got, body) || !writtenByDemo([]byte(got)) {
			t.Fatalf("run %d wrote:\n%s", run, got)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("demo.yaml mode: %v %v, want 0600 (it holds the demo's AccessKey)", st, err)
	}

	edited := read(path) + "# my change\n"
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	kept, err := writeConfig(path, []byte("endpoint: 127.0.0.1:3\n"), now)
	if want := path + ".edited-20261203T140506Z"; err != nil || kept != want {
		t.Fatalf("run over an edited config: kept %q, err %v; want %q", kept, err, want)
	}
	if got := read(kept); got != edited {
		t.Errorf("the kept copy is not the user's edit:\n%s", got)
	}
	if got := read(path); !strings.HasSuffix(got, "endpoint: 127.0.0.1:3\n") {
		t.Errorf("the new config was not written:\n%s", got)
	}

	// Edited again within the same second: the earlier copy is not overwritten.
	if err := os.WriteFile(path, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := writeConfig(path, []byte("x: 1\n"), now); err == nil || !strings.Contains(err.Error(), "move one of them away") {
		t.Errorf("a second edit with its copy's name taken: err %v, want a refusal saying what to do", err)
	}
	if read(path) != "mine\n" || read(kept) != edited {
		t.Errorf("a refused write changed a file")
	}

	for _, data := range []string{"", "endpoint: x\n", configHeader + digestLead + "00\nendpoint: x\n", configHeader + digestLead + "nonewline"} {
		if writtenByDemo([]byte(data)) {
			t.Errorf("writtenByDemo(%q) = true, want false", data)
		}
	}
}
