package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// Warning is a risk in a valid config: "run" logs it once at start and
// "check" prints it, so that what the daemon would warn about is seen
// before it runs.
type Warning struct {
	Msg   string
	Attrs []any // slog key-value pairs
}

// String is the message followed by " key=value" for each attribute.
func (w Warning) String() string {
	var b strings.Builder
	b.WriteString(w.Msg)
	for i := 0; i+1 < len(w.Attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", w.Attrs[i], w.Attrs[i+1])
	}
	return b.String()
}

// Warnings lists the risks of cfg, each once.
func (cfg *Config) Warnings() []Warning {
	var out []Warning
	if w, ok := readableSecrets(cfg); ok {
		out = append(out, w)
	}
	for _, w := range mns.EndpointWarnings(cfg.MNS.Endpoint) {
		out = append(out, Warning{Msg: "mns.endpoint: " + w})
	}
	if cfg.Source.TLS.InsecureSkipVerify {
		out = append(out, Warning{Msg: "TLS certificate verification is off (source.tls.insecure_skip_verify): anyone on the path can read and alter the traffic; use source.tls.ca_file instead"})
	}
	if cfg.Source.SpoolByDefault() && cfg.Spool.Dir == "" {
		out = append(out, Warning{
			Msg:   "source.stomp.ack is auto and the spool is off (spool.dir: \"\"): the platform settles each message when it sends it, so the messages read but not yet accepted by MNS are lost if the process dies (kill -9, out of memory, power loss); at a clean shutdown they go to the dead-letter file. Remove spool.dir (the default spool) to close this window",
			Attrs: []any{"loss_window", fmt.Sprintf("the messages held: up to delivery.max_in_flight = %d, plus what the connection buffered", cfg.Delivery.MaxInFlight)},
		})
	}
	return out
}

// readableSecrets warns when the config file itself holds a secret (a
// literal access_key_secret or security_token, not ${VAR} or a *_file) and
// users other than its owner can read it.
func readableSecrets(cfg *Config) (Warning, bool) {
	if cfg.Path == "" {
		return Warning{}, false
	}
	st, err := os.Stat(cfg.Path)
	if err != nil || st.Mode().Perm()&0o044 == 0 {
		return Warning{}, false
	}
	data, err := os.ReadFile(cfg.Path)
	if err != nil {
		return Warning{}, false
	}
	keys := literalSecrets(data)
	if len(keys) == 0 {
		return Warning{}, false
	}
	return Warning{
		Msg:   "the config file holds a secret and other users can read it: chmod 600 it, or use ${ENV} or the *_file keys",
		Attrs: []any{"file", cfg.Path, "mode", st.Mode().Perm().String(), "keys", strings.Join(keys, ", ")},
	}, true
}

// MissingStateDirs lists, for "check", the state paths "run" cannot use
// (where this shell resolves them): a state file whose directory does not
// exist ("run" refuses to start without it), and a spool directory that
// cannot be created (the spool creates its own directory and its parents,
// so only a parent that is a file or not writable stops it). Under systemd
// or in the image, $STATE_DIRECTORY (created by StateDirectory= or the
// volume) is where relative paths go.
func (cfg *Config) MissingStateDirs() []string {
	var out []string
	for _, f := range []struct{ key, path string }{
		{"delivery.dead_letter.file", cfg.Delivery.DeadLetter.File},
		{"delivery.dedup.file", cfg.Delivery.Dedup.File},
	} {
		if f.path == "" {
			continue
		}
		dir := filepath.Dir(f.path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			out = append(out, fmt.Sprintf("%s: directory %s does not exist here: run refuses to start until it does; create it, writable by the bridge's user (relative paths go under $STATE_DIRECTORY when it is set)", f.key, dir))
		}
	}
	if cfg.Spool.Dir != "" {
		if problem := uncreatableDir(cfg.Spool.Dir); problem != "" {
			out = append(out, fmt.Sprintf("spool.dir: %s: run refuses to start until it can create %s; choose another directory or fix the parent's owner or mode (relative paths go under $STATE_DIRECTORY when it is set)", problem, cfg.Spool.Dir))
		}
	}
	return out
}

// uncreatableDir says why the spool cannot use dir, a directory it creates
// on demand with its parents ("" when it can): the path or its nearest
// existing parent is not a directory, or is not writable by this process.
func uncreatableDir(dir string) string {
	p := filepath.Clean(dir)
	for {
		st, err := os.Stat(p)
		switch {
		case err == nil && !st.IsDir():
			return p + " is not a directory"
		case err == nil:
			if !writable(p) {
				return p + " is not writable by this user"
			}
			return ""
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Sprintf("cannot look at %s: %v", p, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return ""
		}
		p = parent
	}
}

// literalSecrets returns the paths of secret keys whose value is written in
// the file itself.
func literalSecrets(data []byte) []string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return nil
	}
	var found []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				p := strings.TrimPrefix(path+"."+k, ".")
				if (k == "access_key_secret" || k == "security_token") && v.Kind == yaml.ScalarNode &&
					v.Value != "" && !strings.HasPrefix(strings.TrimSpace(v.Value), "${") {
					found = append(found, p)
				}
				walk(v, p)
			}
		}
	}
	walk(&root, "")
	return found
}
