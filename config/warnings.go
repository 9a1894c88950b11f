package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
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
	out = append(out, readableSecretFiles(cfg)...)
	for _, w := range mns.EndpointWarnings(cfg.MNS.Endpoint) {
		out = append(out, Warning{Msg: "mns.endpoint: " + w})
	}
	if w, ok := crossRegion(cfg); ok {
		out = append(out, w)
	}
	out = append(out, placeholders(cfg)...)
	if w, ok := instanceEndpoint(cfg); ok {
		out = append(out, w)
	}
	if cfg.Source.TLS.InsecureSkipVerify {
		out = append(out, Warning{Msg: "TLS certificate verification is off (source.tls.insecure_skip_verify): anyone on the path can read and alter the traffic; use source.tls.ca_file instead"})
	}
	if d := cfg.Source.DialTimeout; d > source.ConnectAuthDeadline {
		out = append(out, Warning{
			Msg: fmt.Sprintf("source.dial_timeout is %s, longer than the platform's connect+auth deadline of %s: the platform closes a connection "+
				"that is not logged in (and, on AMQP, its receiver link attached) by then, so a slow attempt fails at %s whatever this says; "+
				"set source.dial_timeout to %s or less", d, source.ConnectAuthDeadline, source.ConnectAuthDeadline, source.ConnectAuthDeadline),
			Attrs: []any{"source.dial_timeout", d, "platform_limit", source.ConnectAuthDeadline},
		})
	}
	if w, ok := spoolRoom(cfg); ok {
		out = append(out, w)
	}
	if cfg.Source.SpoolByDefault() && cfg.Spool.Dir == "" {
		out = append(out, Warning{
			Msg:   "source.stomp.ack is auto and the spool is off (spool.dir: \"\"): the platform settles each message when it sends it, so the messages read but not yet accepted by MNS are lost if the process dies (kill -9, out of memory, power loss); at a clean shutdown they go to the dead-letter file. Remove spool.dir (the default spool) to close this window",
			Attrs: []any{"loss_window", fmt.Sprintf("the messages held: up to delivery.max_in_flight = %d, plus what the connection buffered", cfg.Delivery.MaxInFlight)},
		})
	}
	return out
}

// The placeholders of the shipped examples (configs/example.yaml,
// configs/iot-mns-bridge.env, the Kubernetes manifests, README): a config
// that still holds one was copied and not edited.
const (
	placeholderSourceHost = "iot-06z00xxxx.amqp.iothub.aliyuncs.com"
	placeholderAccount    = "1234567890123456"
	placeholderKeyID      = "LTAI5tEXAMPLEEXAMPLEEXAMP"
	placeholderSecret     = "REPLACE-WITH-THE-ACCESSKEY-SECRET"
)

// placeholders warns of each example placeholder cfg still holds, naming
// the key and where the real value is found. Warnings, not errors: the
// shipped example must pass check as it is (the .deb installs it).
func placeholders(cfg *Config) []Warning {
	var out []Warning
	if addr, err := cfg.Source.Address(); err == nil && strings.EqualFold(hostOf(addr), placeholderSourceHost) {
		out = append(out, Warning{Msg: "source.endpoint: " + placeholderSourceHost + " is the example's placeholder, not a real host: " +
			"write your instance's subscription endpoint (IoT platform console, instance details)"})
	}
	if u, err := url.Parse(cfg.MNS.Endpoint); err == nil && strings.HasPrefix(u.Hostname(), placeholderAccount+".") {
		out = append(out, Warning{Msg: "mns.endpoint: " + placeholderAccount + " is the example's placeholder account id: " +
			"write your MNS endpoint (MNS console, queue details, endpoint)"})
	}
	for _, c := range []struct {
		path    string
		cr      Credentials
		secrets func() (secret, token string, err error)
	}{{"source.credentials", cfg.Source.Credentials, cfg.SourceSecrets}, {"mns.credentials", cfg.MNS.Credentials, cfg.MNSSecrets}} {
		// mns.credentials that are the source's are warned of once.
		if c.path != "source.credentials" && (c.cr == cfg.Source.Credentials || c.cr == Credentials{}) {
			continue
		}
		if c.cr.AccessKeyID == placeholderKeyID {
			out = append(out, Warning{Msg: c.path + ".access_key_id: " + placeholderKeyID + " is the example's placeholder (from the example env file or the Kubernetes Secret?): " +
				"write your AccessKey ID: ALIBABA_CLOUD_ACCESS_KEY_ID in /etc/iot-mns-bridge/iot-mns-bridge.env under systemd, the Secret's access_key_id on Kubernetes"})
		}
		// A secret that cannot be read is an error of its own (check, run).
		if secret, _, err := c.secrets(); err == nil && secret == placeholderSecret {
			key := c.path + ".access_key_secret"
			if c.cr.AccessKeySecretFile != "" {
				key = c.path + ".access_key_secret_file"
			}
			out = append(out, Warning{Msg: key + ": " + placeholderSecret + " is the example's placeholder (from the Kubernetes Secret?): " +
				"write your AccessKey Secret there; on Kubernetes create the Secret with kubectl, as deploy/kubernetes/secret.yaml says"})
		}
	}
	return out
}

// instanceEndpoint warns when source.endpoint is an instance's
// subscription endpoint, INSTANCE_ID.amqp.iothub.aliyuncs.com (the form the
// console shows for an instance with an ID), and source.iot_instance_id is
// empty or names another instance: the login must name the instance it
// connects to. A warning, not an error: that the host's first label is the
// instance's ID is the form seen everywhere, not a documented rule. The
// example's placeholder host has its own warning.
func instanceEndpoint(cfg *Config) (Warning, bool) {
	addr, err := cfg.Source.Address()
	if err != nil {
		return Warning{}, false
	}
	host := canonicalHost(hostOf(addr))
	id, rest, _ := strings.Cut(host, ".")
	have := cfg.Source.IotInstanceID
	if rest != "amqp.iothub.aliyuncs.com" || !strings.HasPrefix(id, "iot-") || host == placeholderSourceHost || strings.EqualFold(have, id) {
		return Warning{}, false
	}
	if have == "" {
		return Warning{Msg: fmt.Sprintf("source.iot_instance_id is empty, but source.endpoint %s is the endpoint of the instance %s: "+
			"the platform's documents ask for the instance's ID in every login of an instance that has one; set source.iot_instance_id: %s "+
			"(the console's instance overview shows it)", host, id, id)}, true
	}
	return Warning{Msg: fmt.Sprintf("source.iot_instance_id is %s, but source.endpoint %s is the endpoint of the instance %s: "+
		"the login would name one instance and connect to another; copy both from the same instance (the console's instance overview)", have, host, id)}, true
}

// crossRegion warns when source.endpoint names its region (a public
// instance's UID.iot-amqp.REGION.aliyuncs.com; an instance's
// iot-06z00xxxx.amqp.iothub.aliyuncs.com does not) and mns.endpoint is of
// another: MNS endpoints of one region copied with the other's, the likely
// mistake; an internal MNS endpoint is reached only from its own region.
func crossRegion(cfg *Config) (Warning, bool) {
	addr, err := cfg.Source.Address()
	if err != nil {
		return Warning{}, false
	}
	labels := strings.Split(canonicalHost(hostOf(addr)), ".")
	if len(labels) != 5 || labels[1] != "iot-amqp" || labels[3] != "aliyuncs" || labels[4] != "com" {
		return Warning{}, false
	}
	src := labels[2]
	dst, ok := mns.RegionFromEndpoint(cfg.MNS.Endpoint)
	if !ok || dst == src {
		return Warning{}, false
	}
	msg := fmt.Sprintf("mns.endpoint is in region %s, source.endpoint in %s: every message crosses regions; if that is not meant, use the MNS endpoint of %s "+
		"(https://ACCOUNT_ID.mns.%s.aliyuncs.com)", dst, src, src, src)
	if strings.Contains(cfg.MNS.Endpoint, "-internal") {
		msg += "; an internal MNS endpoint is reachable only from within its own region (" + dst + ")"
	}
	return Warning{Msg: msg, Attrs: []any{"source_region", src, "mns_region", dst}}, true
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

// readableSecretFiles warns of each secret file (access_key_secret_file,
// security_token_file, credentials_file; the source's and MNS's) that every
// user of this machine may read. A group may: the Kubernetes manifests mount
// the Secret 0440 for the pod's fsGroup. A file named twice is warned of once.
func readableSecretFiles(cfg *Config) []Warning {
	var out []Warning
	seen := map[string]bool{}
	for _, c := range []struct {
		path string
		cr   Credentials
	}{{"source.credentials", cfg.Source.Credentials}, {"mns.credentials", cfg.MNS.Credentials}} {
		for _, f := range []struct{ key, file string }{
			{"access_key_secret_file", c.cr.AccessKeySecretFile},
			{"security_token_file", c.cr.SecurityTokenFile},
			{"credentials_file", c.cr.CredentialsFile},
		} {
			if f.file == "" || seen[f.file] {
				continue
			}
			seen[f.file] = true
			st, err := os.Stat(f.file)
			if err != nil || st.Mode().Perm()&0o004 == 0 {
				continue
			}
			out = append(out, Warning{
				Msg: fmt.Sprintf("%s.%s: %s holds a secret and every user of this machine can read it: chmod 600 it, owned by the bridge's user "+
					"(or 640 for a group that user is in)", c.path, f.key, f.file),
				Attrs: []any{"file", f.file, "mode", st.Mode().Perm().String()},
			})
		}
	}
	return out
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
	def := Default().Delivery
	for _, f := range []struct{ key, path, name string }{
		{"delivery.dead_letter.file", cfg.Delivery.DeadLetter.File, def.DeadLetter.File},
		{"delivery.dedup.file", cfg.Delivery.Dedup.File, def.Dedup.File},
	} {
		if f.path == "" {
			continue
		}
		dir := filepath.Dir(f.path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			out = append(out, fmt.Sprintf("%s: directory %s does not exist here: run refuses to start until it does; create it, writable by the bridge's user (relative paths go under $STATE_DIRECTORY when it is set)", f.key, dir))
		} else if st, err := os.Stat(f.path); err == nil && st.IsDir() {
			out = append(out, fmt.Sprintf("%s: %s is a directory: run refuses to start; name a file in it, like %s", f.key, f.path, filepath.Join(f.path, f.name)))
		} else if err := notWritable(dir); err != nil {
			todo := "choose another directory or fix its owner or mode"
			if errors.Is(err, syscall.EROFS) {
				todo = ReadOnlyAdvice
			}
			out = append(out, fmt.Sprintf("%s: directory %s %s: run refuses to start until it can create %s; %s (relative paths go under $STATE_DIRECTORY when it is set)",
				f.key, dir, notWritableText(err), f.path, todo))
		}
	}
	if cfg.Spool.Dir != "" {
		if problem, readOnly := uncreatableDir(cfg.Spool.Dir); problem != "" {
			todo := fmt.Sprintf("run refuses to start until it can create %s; choose another directory or fix the parent's owner or mode", cfg.Spool.Dir)
			switch st, err := os.Stat(cfg.Spool.Dir); {
			case readOnly:
				todo = fmt.Sprintf("run refuses to start until it can create its file in %s; %s", cfg.Spool.Dir, ReadOnlyAdvice)
			case err == nil && st.IsDir():
				// The directory itself: its parent is not the one to fix.
				todo = "run refuses to start until it can write its file there; fix the directory's owner or mode (the bridge's user must write it) or choose another directory"
			}
			out = append(out, fmt.Sprintf("spool.dir: %s: %s (relative paths go under $STATE_DIRECTORY when it is set)", problem, todo))
		}
	}
	return out
}

// ReadOnlyAdvice is what helps a state directory on a read-only filesystem
// (EROFS: a container's read-only root, a path that a systemd unit's
// ProtectSystem=strict leaves read-only, a volume mounted read-only),
// where chown and chmod cannot.
const ReadOnlyAdvice = "its owner or mode cannot help: put it on a writable filesystem (mount a writable volume there; " +
	"under systemd, StateDirectory= or ReadWritePaths=; in Kubernetes, a volume such as an emptyDir or a PersistentVolumeClaim) or choose a directory on one"

// notWritableText says why a directory is not writable, from
// notWritable's error.
func notWritableText(err error) string {
	if errors.Is(err, syscall.EROFS) {
		return "is on a read-only filesystem"
	}
	return "is not writable by this user"
}

// uncreatableDir says why the spool cannot use dir, a directory it creates
// on demand with its parents ("" when it can): the path or its nearest
// existing parent is not a directory, or is not writable by this process;
// readOnly says that is for a read-only filesystem.
func uncreatableDir(dir string) (problem string, readOnly bool) {
	p, st, err := nearest(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", false
	case err != nil:
		return fmt.Sprintf("cannot look at %s: %v", p, err), false
	case !st.IsDir():
		return p + " is not a directory", false
	}
	if err := notWritable(p); err != nil {
		return p + " " + notWritableText(err), errors.Is(err, syscall.EROFS)
	}
	return "", false
}

// nearest returns path, or its nearest parent that exists, and its info;
// the error is fs.ErrNotExist when nothing up to the root exists, else why
// p cannot be looked at.
func nearest(path string) (p string, st fs.FileInfo, err error) {
	p = filepath.Clean(path)
	for {
		st, err = os.Stat(p)
		if err == nil || !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return p, st, err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p, nil, fs.ErrNotExist
		}
		p = parent
	}
}

// spoolRoom warns when the spool's filesystem cannot hold spool.max_bytes
// and the other state the bridge writes there: the dead-letter file (up to
// delivery.dead_letter.max_bytes: in a long MNS outage the messages past
// delivery.retry.max_age go there while the spool fills) and the de-dup
// journal (bounded by delivery.dedup.size, see bridge.DedupJournalBytes),
// each when it is on the same filesystem. The filesystem is smaller than
// their bounds together, or has less free space than they may still take
// beyond what their files hold now. The disk then fills before the spool
// does. That is a warning, not an error: a config that ran before keeps
// running (a refused start reads nothing and leaves the spooled messages
// where they are), and a full disk loses nothing while the bridge runs: the
// spool's commits fail, the source stops reading as when the spool is full,
// and the messages of the failed commits wait in memory until a commit
// succeeds; a dead-letter write that fails holds its messages.
func spoolRoom(cfg *Config) (Warning, bool) {
	dir := cfg.Spool.Dir
	if dir == "" || cfg.Spool.MaxBytes <= 0 {
		return Warning{}, false
	}
	p, st, err := nearest(dir)
	if err != nil || !st.IsDir() {
		return Warning{}, false // MissingStateDirs says so
	}
	total, free, ok := fsSpace(p)
	if !ok {
		return Warning{}, false
	}
	uses := []diskUse{{bound: "spool.max_bytes", file: "spool_file", max: uint64(cfg.Spool.MaxBytes),
		now: fileSize(filepath.Join(dir, spool.FileName))}}
	fs, _ := fsID(p)
	onSpoolFS := func(path string) bool {
		q, st, err := nearest(filepath.Dir(path))
		if err != nil || !st.IsDir() {
			return false
		}
		id, ok := fsID(q)
		return ok && id == fs
	}
	if dl := cfg.Delivery.DeadLetter; dl.File != "" && onSpoolFS(dl.File) {
		uses = append(uses, diskUse{name: "delivery.dead_letter.max_bytes", bound: "delivery.dead_letter.max_bytes", file: "dead_letter_file",
			max: uint64(dl.MaxBytes), now: fileSize(dl.File)})
	}
	if d := cfg.Delivery.Dedup; d.File != "" && d.Size > 0 && onSpoolFS(d.File) {
		uses = append(uses, diskUse{name: "the de-dup journal (delivery.dedup.file, bounded by delivery.dedup.size)", bound: "dedup_journal", file: "dedup_journal_file",
			max: bridge.DedupJournalBytes(d.Size), now: fileSize(d.File)})
	}
	return roomWarning(dir, uses, total, free)
}

// diskUse is a file the bridge writes on the spool's filesystem: what the
// warning calls it, the attributes of its bound and of its size, the bound
// and its size now.
type diskUse struct {
	name, bound, file string
	max, now          uint64
}

// fileSize is the size of the file at path, 0 when there is none.
func fileSize(path string) uint64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return uint64(st.Size())
}

// roomWarning is spoolRoom's decision for the files in uses (the spool's
// first) in dir's filesystem, which holds total bytes, free of them
// available to the bridge.
func roomWarning(dir string, uses []diskUse, total, free uint64) (Warning, bool) {
	var bound, more uint64
	attrs := []any{"spool.dir", dir}
	var others []string
	for i, u := range uses {
		b := max(u.max, u.now) // a file larger than its bound stays so
		bound += b
		more += b - u.now
		if u.bound == "dedup_journal" {
			attrs = append(attrs, u.bound, "about "+roughSize(u.max))
		} else {
			attrs = append(attrs, u.bound, Size(u.max))
		}
		if i > 0 {
			others = append(others, u.name)
		}
	}
	what, held := "spool.max_bytes", "what the spool's file holds"
	advice := "Set spool.max_bytes to what the spool may use of this disk (its file takes somewhat more than the messages it holds), or give the spool a larger disk"
	if len(others) > 0 {
		what, held = "spool.max_bytes with "+strings.Join(others, " and ")+" on the same filesystem", "what their files hold"
		advice = "Lower spool.max_bytes (or delivery.dead_letter.max_bytes) so that together they fit this disk (the spool's file takes somewhat more than the messages it holds), or give the spool a disk of its own"
		attrs = append(attrs, "together", roughSize(bound))
	}
	then := "; if MNS is down long enough the disk fills first: the source then stops reading as when the spool is full " +
		"and the messages of the failed write wait in memory (a crash meanwhile loses them), and whatever else writes to " +
		"that disk fails too. " + advice
	attrs = append(attrs, "filesystem_size", roughSize(total), "free", roughSize(free))
	switch {
	case total < bound:
		return Warning{Msg: what + " is larger than the whole filesystem of spool.dir" + then, Attrs: attrs}, true
	case free < more:
		for i, u := range uses {
			if i == 0 || u.now > 0 {
				attrs = append(attrs, u.file, roughSize(u.now))
			}
		}
		return Warning{Msg: what + " is larger than the free space of spool.dir's filesystem (plus " + held + ")" + then, Attrs: attrs}, true
	}
	return Warning{}, false
}

// roughSize formats a byte count of a disk, to a tenth of its unit:
// "19.7GiB", "300.0MiB".
func roughSize(b uint64) string {
	switch {
	case b >= 1<<40:
		return strconv.FormatFloat(float64(b)/(1<<40), 'f', 1, 64) + "TiB"
	case b >= 1<<30:
		return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + "GiB"
	}
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + "MiB"
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
