package config

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

func TestLiteralSecretsInReadableConfigAreFound(t *testing.T) {
	cfg := []byte(`source:
  credentials:
    access_key_id: AK
    access_key_secret: plain-text-secret
    security_token: ${STS_TOKEN}
mns:
  credentials:
    access_key_secret: "${MNS_SECRET:-}"
    security_token: "tok"
`)
	got := strings.Join(literalSecrets(cfg), ",")
	if got != "source.credentials.access_key_secret,mns.credentials.security_token" {
		t.Errorf("literal secrets = %q", got)
	}
	if n := literalSecrets([]byte("source:\n  credentials:\n    access_key_secret_file: s\n")); len(n) != 0 {
		t.Errorf("a *_file key is not a literal secret: %v", n)
	}
}

// TestReadableSecretFilesAreWarned: a secret file (access_key_secret_file,
// security_token_file, credentials_file) that every user may read is warned
// of, naming the key, the file and the fix; one a group may read (the
// Kubernetes Secret, 0440) is not, nor a file named twice twice.
func TestReadableSecretFilesAreWarned(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	open, group, private := write("open", 0o644), write("group", 0o440), write("private", 0o600)
	cfg := validConfig()
	cfg.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: open, SecurityTokenFile: group}
	cfg.MNS.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: open, SecurityTokenFile: private}
	var got []string
	for _, w := range cfg.Warnings() {
		if strings.Contains(w.String(), "every user of this machine can read it") {
			got = append(got, w.String())
		}
	}
	want := "source.credentials.access_key_secret_file: " + open + " holds a secret and every user of this machine can read it: chmod 600 it, " +
		"owned by the bridge's user (or 640 for a group that user is in) file=" + open + " mode=-rw-r--r--"
	if len(got) != 1 || got[0] != want {
		t.Errorf("warnings of readable secret files = %q, want only %q", got, want)
	}
	cfg.Source.Credentials = Credentials{CredentialsFile: write("triple.json", 0o604)}
	cfg.MNS.Credentials = Credentials{}
	if ws := readableSecretFiles(&cfg); len(ws) != 1 || !strings.HasPrefix(ws[0].Msg, "source.credentials.credentials_file: ") {
		t.Errorf("a readable credentials_file: warnings %v", ws)
	}
}

// TestCrossRegionIsWarned: a public instance's endpoint names its region;
// an MNS endpoint of another region is warned of, naming both and the fix,
// and an internal one as unreachable from elsewhere. An instance endpoint
// (no region) or a loopback MNS is not compared.
func TestCrossRegionIsWarned(t *testing.T) {
	for _, tc := range []struct{ source, mns, want string }{
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com", "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com",
			"mns.endpoint is in region cn-hangzhou, source.endpoint in cn-shanghai: every message crosses regions; if that is not meant, use the MNS endpoint of cn-shanghai " +
				"(https://ACCOUNT_ID.mns.cn-shanghai.aliyuncs.com) source_region=cn-shanghai mns_region=cn-hangzhou"},
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com:5671", "http://1234567890123456.mns.cn-hangzhou-internal.aliyuncs.com",
			"; an internal MNS endpoint is reachable only from within its own region (cn-hangzhou) source_region"},
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com", "https://1234567890123456.mns.cn-shanghai.aliyuncs.com", ""},
		{"iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com", "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com", ""},
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com", "http://127.0.0.1:9000", ""},
		// A fully qualified name's trailing dot, and upper case, are the
		// same host (canonicalHost): no warning was given for them.
		{"1234567890123456.IOT-AMQP.cn-shanghai.aliyuncs.com.:5671", "https://1234567890123456.mns.cn-hangzhou.aliyuncs.com",
			"mns.endpoint is in region cn-hangzhou, source.endpoint in cn-shanghai"},
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com", "https://1234567890123456.MNS.cn-hangzhou.aliyuncs.com.",
			"mns.endpoint is in region cn-hangzhou, source.endpoint in cn-shanghai"},
	} {
		cfg := validConfig()
		cfg.Source.Endpoint, cfg.MNS.Endpoint = tc.source, tc.mns
		w, ok := crossRegion(&cfg)
		if ok != (tc.want != "") || ok && !strings.Contains(w.String(), tc.want) {
			t.Errorf("%s -> %s: warned %v %q, want %q", tc.source, tc.mns, ok, w, tc.want)
		}
	}
}

// TestInstanceEndpointWithoutItsInstanceIDIsWarned: an instance's
// subscription endpoint (<instance id>.amqp.iothub.aliyuncs.com) names the
// instance; a source.iot_instance_id that is empty or names another is
// warned of, naming both keys and the id to write. The same id (in any
// case), a public instance's endpoint, another host and the example's
// placeholder host (warned of as such) are not.
func TestInstanceEndpointWithoutItsInstanceIDIsWarned(t *testing.T) {
	for _, tc := range []struct{ endpoint, instance, want string }{
		{"iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com", "",
			"source.iot_instance_id is empty, but source.endpoint iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com is the endpoint of the instance iot-06z00ax1o2vfzzz: " +
				"the platform's documents ask for the instance's ID in every login of an instance that has one; set source.iot_instance_id: iot-06z00ax1o2vfzzz " +
				"(the console's instance overview shows it)"},
		{"iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5671", "iot-06z00other",
			"source.iot_instance_id is iot-06z00other, but source.endpoint iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com is the endpoint of the instance iot-06z00ax1o2vfzzz: " +
				"the login would name one instance and connect to another; copy both from the same instance (the console's instance overview)"},
		{"iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com", "iot-06z00ax1o2vfzzz", ""},
		{"IOT-06Z00AX1O2VFZZZ.AMQP.IOTHUB.ALIYUNCS.COM.", "iot-06z00ax1o2vfzzz", ""},
		{"1234567890123456.iot-amqp.cn-shanghai.aliyuncs.com", "", ""},
		{"127.0.0.1:5671", "", ""},
		{placeholderSourceHost, "", ""},
	} {
		cfg := validConfig()
		cfg.Source.Endpoint, cfg.Source.IotInstanceID = tc.endpoint, tc.instance
		var got []string
		for _, w := range cfg.Warnings() {
			if strings.Contains(w.Msg, "source.iot_instance_id") {
				got = append(got, w.Msg)
			}
		}
		if want := []string{tc.want}; tc.want == "" && len(got) != 0 || tc.want != "" && !slices.Equal(got, want) {
			t.Errorf("%s, iot_instance_id %q: warned %q, want %q", tc.endpoint, tc.instance, got, tc.want)
		}
	}
}

// TestExamplePlaceholdersAreWarned: configs/example.yaml as shipped, with
// the example env file's AccessKey ID, is valid but holds three
// placeholders; each is warned of, naming its key. An edited config is not.
func TestExamplePlaceholdersAreWarned(t *testing.T) {
	cfg, err := parseFile(t, "../configs/example.yaml", testEnv("ALIBABA_CLOUD_ACCESS_KEY_ID", placeholderKeyID))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings() {
		if strings.Contains(w.Msg, "the example's placeholder") {
			got = append(got, w.Msg[:strings.IndexByte(w.Msg, ':')])
		}
	}
	if strings.Join(got, ",") != "source.endpoint,mns.endpoint,source.credentials.access_key_id" {
		t.Errorf("placeholder warnings for: %q, want source.endpoint, mns.endpoint and source.credentials.access_key_id", got)
	}
	edited := validConfig()
	edited.MNS.Endpoint = "https://5678.mns.cn-hangzhou.aliyuncs.com"
	if ws := placeholders(&edited); len(ws) != 0 {
		t.Errorf("an edited config: placeholder warnings %v", ws)
	}
}

// TestPlaceholderSecretIsWarned: the Kubernetes Secret's placeholder
// secret (deploy/kubernetes/secret.yaml), read from a file as the
// manifests do or given inline, is warned of by the key that holds it, once
// when mns.credentials are the source's, and for mns.credentials of their
// own; a real secret is not. (Before, only the key id's placeholder was.)
func TestPlaceholderSecretIsWarned(t *testing.T) {
	dir := t.TempDir()
	file := testfile.Write(t, dir, "access_key_secret", placeholderSecret+"\n")
	realFile := testfile.Write(t, dir, "real_secret", "a-real-secret\n")
	keys := func(c *Config) string {
		var got []string
		for _, w := range placeholders(c) {
			got = append(got, w.Msg[:strings.IndexByte(w.Msg, ':')])
		}
		return strings.Join(got, ",")
	}
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"secret file", func(c *Config) {
			c.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: file}
			c.MNS.Credentials = c.Source.Credentials
		}, "source.credentials.access_key_secret_file"},
		{"inline secret, mns empty", func(c *Config) {
			c.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecret: placeholderSecret}
			c.MNS.Credentials = Credentials{}
		}, "source.credentials.access_key_secret"},
		{"mns of its own", func(c *Config) {
			c.MNS.Credentials = Credentials{AccessKeyID: placeholderKeyID, AccessKeySecretFile: file}
		}, "mns.credentials.access_key_id,mns.credentials.access_key_secret_file"},
		{"real secret file", func(c *Config) {
			c.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: realFile}
		}, ""},
		{"secret file missing", func(c *Config) {
			c.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: dir + "/none"}
		}, ""},
	} {
		c := validConfig()
		c.MNS.Endpoint = "https://5678.mns.cn-hangzhou.aliyuncs.com"
		tc.mutate(&c)
		if got := keys(&c); got != tc.want {
			t.Errorf("%s: placeholder warnings for %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSpoolRoomIsWarned: a spool.max_bytes its filesystem cannot hold is
// warned of (not refused: see spoolRoom), naming the key, the directory and
// the sizes: a filesystem smaller than it, or less free space than it beyond
// what the spool's file already takes.
func TestSpoolRoomIsWarned(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name                   string
		max, total, free, file uint64
		want                   string // "" for no warning
	}{
		{"fits", gib, 100 * gib, 50 * gib, 0, ""},
		{"free exactly", gib, 100 * gib, gib, 0, ""},
		{"the file holds the rest", gib, 100 * gib, gib / 2, gib / 2, ""},
		{"1TiB on 100GiB", 1024 * gib, 100 * gib, 50 * gib, 0,
			"spool.max_bytes is larger than the whole filesystem of spool.dir; if MNS is down long enough the disk fills first: the source then stops reading as when the spool is full" +
				" and the messages of the failed write wait in memory (a crash meanwhile loses them), and whatever else writes to that disk fails too." +
				" Set spool.max_bytes to what the spool may use of this disk (its file takes somewhat more than the messages it holds), or give the spool a larger disk" +
				" spool.dir=/s spool.max_bytes=1TiB filesystem_size=100.0GiB free=50.0GiB"},
		{"little free", gib, 100 * gib, 300 << 20, 100 << 20,
			"spool.max_bytes is larger than the free space of spool.dir's filesystem (plus what the spool's file holds); if MNS is down long enough"},
	} {
		w, ok := roomWarning("/s", spoolOnly(tc.max, tc.file), tc.total, tc.free)
		switch {
		case tc.want == "" && ok:
			t.Errorf("%s: warned %q", tc.name, w)
		case tc.want != "" && (!ok || !strings.HasPrefix(w.String(), tc.want)):
			t.Errorf("%s: warned %v %q, want %q", tc.name, ok, w, tc.want)
		}
	}
	if w, _ := roomWarning("/s", spoolOnly(gib, 100<<20), 100*gib, 300<<20); !strings.HasSuffix(w.String(), "free=300.0MiB spool_file=100.0MiB") {
		t.Errorf("the free-space warning lacks the sizes: %q", w)
	}

	// This machine's filesystem (statfs, Linux): smaller than 1EiB, in
	// front of a spool directory the spool would create.
	// The spool alone: TestSpoolRoomCountsTheOtherStateFiles has the
	// other files.
	cfg := validConfig()
	cfg.Spool.Dir, cfg.Spool.MaxBytes = filepath.Join(t.TempDir(), "not", "yet"), 1<<60
	cfg.Delivery.DeadLetter.File, cfg.Delivery.Dedup.File = "", ""
	var found bool
	for _, w := range cfg.Warnings() {
		found = found || strings.HasPrefix(w.String(), "spool.max_bytes is larger than the whole filesystem of spool.dir")
	}
	if runtime.GOOS == "linux" && !found {
		t.Errorf("no warning of spool.max_bytes 1EiB: %v", cfg.Warnings())
	}
	cfg.Spool.MaxBytes = MiB
	for _, w := range cfg.Warnings() {
		if strings.HasPrefix(w.String(), "spool.max_bytes") {
			t.Errorf("warned of a 1MiB spool: %s", w)
		}
	}
}

// spoolOnly is roomWarning's uses for a spool alone: a bound of max, a file
// of file bytes.
func spoolOnly(max, file uint64) []diskUse {
	return []diskUse{{bound: "spool.max_bytes", file: "spool_file", max: max, now: file}}
}

// TestSpoolRoomCountsTheOtherStateFiles: the dead-letter file (up to
// delivery.dead_letter.max_bytes) and the de-dup journal on the spool's
// filesystem take room the spool then lacks. The warning counted the spool
// alone: a 60 GiB spool and a 1 GiB dead-letter file on 60.5 GiB free
// passed. Now it counts them together, names each, and what their files
// hold already is room they have.
func TestSpoolRoomCountsTheOtherStateFiles(t *testing.T) {
	const gib = 1 << 30
	uses := func(spoolMax, dlMax, dlNow uint64) []diskUse {
		return append(spoolOnly(spoolMax, 0),
			diskUse{name: "delivery.dead_letter.max_bytes", bound: "delivery.dead_letter.max_bytes", file: "dead_letter_file", max: dlMax, now: dlNow},
			diskUse{name: "the de-dup journal (delivery.dedup.file, bounded by delivery.dedup.size)", bound: "dedup_journal", file: "dedup_journal_file", max: 10 << 20})
	}
	w, ok := roomWarning("/s", uses(60*gib, gib, 0), 100*gib, 60*gib+gib/2)
	want := "spool.max_bytes with delivery.dead_letter.max_bytes and the de-dup journal (delivery.dedup.file, bounded by delivery.dedup.size) on the same filesystem " +
		"is larger than the free space of spool.dir's filesystem (plus what their files hold); if MNS is down long enough the disk fills first"
	if !ok || !strings.HasPrefix(w.String(), want) ||
		!strings.Contains(w.String(), " spool.dir=/s spool.max_bytes=60GiB delivery.dead_letter.max_bytes=1GiB dedup_journal=about 10.0MiB together=61.0GiB filesystem_size=100.0GiB free=60.5GiB spool_file=0.0MiB") ||
		!strings.Contains(w.String(), "Lower spool.max_bytes (or delivery.dead_letter.max_bytes) so that together they fit this disk") {
		t.Errorf("60GiB spool and a 1GiB dead-letter file on 60.5GiB free: warned %v %q, want %q with the sizes", ok, w, want)
	}
	if w, ok := roomWarning("/s", uses(60*gib, gib, gib/2+(20<<20)), 100*gib, 60*gib+gib/2); ok {
		t.Errorf("a dead-letter file that holds 0.5GiB already needs only the rest of its bound: warned %q", w)
	}
	if w, ok := roomWarning("/s", uses(99*gib, 2*gib, 0), 100*gib, 100*gib); !ok || !strings.Contains(w.String(), "on the same filesystem is larger than the whole filesystem of spool.dir") {
		t.Errorf("99GiB + 2GiB on a 100GiB filesystem: warned %v %q", ok, w)
	}

	// This machine: a spool that fits the free space alone, and a
	// dead-letter file of 2 GiB beside it.
	dir := t.TempDir()
	_, free, ok := fsSpace(dir)
	if !ok {
		t.Skip("statfs cannot tell the free space here")
	}
	cfg := validConfig()
	cfg.Spool.Dir, cfg.Spool.MaxBytes = filepath.Join(dir, "spool"), Size(free-512<<20)
	cfg.Delivery.DeadLetter.File, cfg.Delivery.DeadLetter.MaxBytes = filepath.Join(dir, "dead.jsonl"), 2*gib
	cfg.Delivery.Dedup.File = filepath.Join(dir, "dedup.log")
	var found string
	for _, w := range cfg.Warnings() {
		if strings.HasPrefix(w.String(), "spool.max_bytes") {
			found = w.String()
		}
	}
	if !strings.HasPrefix(found, "spool.max_bytes with delivery.dead_letter.max_bytes and the de-dup journal") {
		t.Errorf("a spool of the free space less 512MiB and a 2GiB dead-letter file on its filesystem: warning %q", found)
	}
}

// TestDialTimeoutAboveThePlatformsDeadlineIsWarned: a source.dial_timeout
// longer than the platform's 15 s connect+auth deadline was accepted
// silently (the walk: dial_timeout: 1m); it is warned of, naming the key
// and the platform's limit, and the default and 15 s are not.
func TestDialTimeoutAboveThePlatformsDeadlineIsWarned(t *testing.T) {
	dialWarnings := func(d time.Duration) []string {
		cfg := validConfig()
		cfg.Source.DialTimeout = d
		var out []string
		for _, w := range cfg.Warnings() {
			if strings.Contains(w.String(), "source.dial_timeout") {
				out = append(out, w.String())
			}
		}
		return out
	}
	if w := dialWarnings(Default().Source.DialTimeout); len(w) != 0 {
		t.Errorf("the default dial_timeout is warned of: %q", w)
	}
	if w := dialWarnings(15 * time.Second); len(w) != 0 {
		t.Errorf("dial_timeout 15s is warned of: %q", w)
	}
	w := dialWarnings(time.Minute)
	want := "source.dial_timeout is 1m0s, longer than the platform's connect+auth deadline of 15s: the platform closes a connection"
	if len(w) != 1 || !strings.HasPrefix(w[0], want) || !strings.HasSuffix(w[0], "source.dial_timeout=1m0s platform_limit=15s") {
		t.Errorf("dial_timeout 1m: warnings %q, want one starting %q and naming the limit", w, want)
	}
}
