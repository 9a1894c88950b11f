package credentials

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Environment variables of the profile providers.
const (
	EnvCredentialsFile    = "ALIBABA_CLOUD_CREDENTIALS_FILE"
	EnvProfile            = "ALIBABA_CLOUD_PROFILE"
	EnvCLIConfigFile      = "ALIBABA_CLOUD_CONFIG_FILE"
	EnvCLIProfileDisabled = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"
)

// Profile reads the credentials file (~/.alibabacloud/credentials, or
// $ALIBABA_CLOUD_CREDENTIALS_FILE), an ini file of sections such as
//
//	[default]
//	type = access_key            # access_key_id, access_key_secret
//	[on-ecs]
//	type = ecs_ram_role          # role_name
//
// The section is Section, else $ALIBABA_CLOUD_PROFILE, else "default". The
// file is read again when it changes.
type Profile struct {
	Path, Section string
	LookupEnv     func(string) (string, bool)
	// ECS is the provider an ecs_ram_role section uses (for the role the
	// section names); nil = a default ECSRole.
	ECS *ECSRole

	w   fileWatch
	ecs ownECS
}

func (*Profile) Name() string { return "profile" }

func (p *Profile) file() configFile {
	return configFile{p.Path, EnvCredentialsFile, ".alibabacloud/credentials"}
}

// Changed reports whether the file changed since the last Retrieve, for
// access_key sections (an ecs_ram_role section expires by itself).
func (p *Profile) Changed() bool {
	return p.w.changed([]string{p.file().path(lookup(p.LookupEnv))})
}

func (p *Profile) Retrieve(ctx context.Context) (Credentials, error) {
	get := lookup(p.LookupEnv)
	path, data, err := p.file().read(&p.w, "profile", get)
	if err != nil {
		return Credentials{}, err
	}
	section := firstSet(p.Section, get(EnvProfile), "default")
	sec, line, err := iniSection(data, section)
	if err != nil {
		return Credentials{}, fmt.Errorf("profile: %s line %d: %w", path, line, err)
	}
	if sec == nil {
		return Credentials{}, fmt.Errorf("profile: %s has no section [%s] (%s)", path, section, nameOrigin(p.Section, get(EnvProfile), "the default"))
	}
	where := fmt.Sprintf("profile: %s [%s]", path, section)
	switch t := sec["type"]; t {
	case "access_key":
		c := Credentials{AccessKeyID: sec["access_key_id"], AccessKeySecret: sec["access_key_secret"], Source: "profile " + section}
		if err := c.check(where, c.Expiration); err != nil {
			return Credentials{}, err
		}
		return c, nil
	case "ecs_ram_role":
		if sec["role_name"] == "" {
			return Credentials{}, fmt.Errorf("%s: type ecs_ram_role needs role_name", where)
		}
		return ramRole(ctx, p.ecs.get(p.ECS, p.LookupEnv), sec["role_name"], where, "profile "+section)
	case "":
		return Credentials{}, fmt.Errorf("%s: no type (access_key or ecs_ram_role)", where)
	default:
		return Credentials{}, fmt.Errorf("%s: type %s is not supported: use access_key or ecs_ram_role", where, printable(t))
	}
}

// ownECS is the ECSRole of a profile provider that was given none: made
// once, so that it remembers across refreshes that the metadata service
// answered.
type ownECS struct {
	once sync.Once
	r    *ECSRole
}

// get returns set when it is not nil, else the ECSRole made once with
// lookupEnv.
func (o *ownECS) get(set *ECSRole, lookupEnv func(string) (string, bool)) *ECSRole {
	if set != nil {
		return set
	}
	o.once.Do(func() { o.r = &ECSRole{LookupEnv: lookupEnv} })
	return o.r
}

// ramRole retrieves the credentials of role from the ECS metadata service
// with ecs for a profile entry that names a RAM role: errors prefixed with
// where, the source named source (ECSRole's own in parentheses).
func ramRole(ctx context.Context, ecs *ECSRole, role, where, source string) (Credentials, error) {
	c, err := ecs.retrieve(ctx, role)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", where, err)
	}
	c.Source = source + " (" + c.Source + ")"
	return c, nil
}

// iniSection returns the keys of one [section] of an ini file (nil when it
// is absent). On a malformed line it returns its number; never its text.
func iniSection(data []byte, name string) (map[string]string, int, error) {
	var cur string
	var out map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
			continue
		case l[0] == '[':
			if !strings.HasSuffix(l, "]") {
				return nil, n, errors.New("a section header must end with ]")
			}
			cur = strings.TrimSpace(l[1 : len(l)-1])
			if cur == name && out == nil {
				out = map[string]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, n, errors.New("not a key = value line")
		}
		if cur == name {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out, 0, sc.Err()
}

// CLIProfile reads the aliyun CLI's config (~/.aliyun/config.json, or
// $ALIBABA_CLOUD_CONFIG_FILE) in its AK, StsToken and EcsRamRole modes. The
// profile is Profile, else $ALIBABA_CLOUD_PROFILE, else the file's
// "current". ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true turns it off. It only
// reads: it never writes the file or runs a process.
type CLIProfile struct {
	Path, Profile string
	LookupEnv     func(string) (string, bool)
	ECS           *ECSRole

	w   fileWatch
	ecs ownECS
}

func (*CLIProfile) Name() string { return "cli_profile" }

func (p *CLIProfile) file() configFile {
	return configFile{p.Path, EnvCLIConfigFile, ".aliyun/config.json"}
}

// Changed reports whether the file changed since the last Retrieve.
func (p *CLIProfile) Changed() bool {
	return p.w.changed([]string{p.file().path(lookup(p.LookupEnv))})
}

func (p *CLIProfile) Retrieve(ctx context.Context) (Credentials, error) {
	get := lookup(p.LookupEnv)
	if envTrue(get, EnvCLIProfileDisabled) {
		return Credentials{}, notConfigured("cli_profile: off (%s=true)", EnvCLIProfileDisabled)
	}
	path, data, err := p.file().read(&p.w, "cli_profile", get)
	if err != nil {
		return Credentials{}, err
	}
	var cfg struct {
		Current  string `json:"current"`
		Profiles []struct {
			Name            string `json:"name"`
			Mode            string `json:"mode"`
			AccessKeyID     string `json:"access_key_id"`
			AccessKeySecret string `json:"access_key_secret"`
			STSToken        string `json:"sts_token"`
			RAMRoleName     string `json:"ram_role_name"`
		} `json:"profiles"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Credentials{}, fmt.Errorf("cli_profile: %s is not the aliyun CLI's JSON config", path)
	}
	name := firstSet(p.Profile, get(EnvProfile), cfg.Current, "default")
	where := fmt.Sprintf("cli_profile: %s profile %s", path, printable(name))
	for _, pr := range cfg.Profiles {
		if pr.Name != name {
			continue
		}
		var c Credentials
		switch pr.Mode {
		case "AK":
			c = Credentials{AccessKeyID: pr.AccessKeyID, AccessKeySecret: pr.AccessKeySecret}
		case "StsToken":
			c = Credentials{AccessKeyID: pr.AccessKeyID, AccessKeySecret: pr.AccessKeySecret, SecurityToken: pr.STSToken}
			if c.SecurityToken == "" {
				return Credentials{}, fmt.Errorf("%s: mode StsToken needs sts_token", where)
			}
		case "EcsRamRole":
			return ramRole(ctx, p.ecs.get(p.ECS, p.LookupEnv), pr.RAMRoleName, where, "cli_profile "+name)
		default:
			return Credentials{}, fmt.Errorf("%s: mode %s is not supported: use AK, StsToken or EcsRamRole", where, printable(pr.Mode))
		}
		if err := c.check(where, c.Expiration); err != nil {
			return Credentials{}, err
		}
		c.Source = "cli_profile " + name
		return c, nil
	}
	fallback := "the default"
	if cfg.Current != "" {
		fallback = "the file's current"
	}
	return Credentials{}, fmt.Errorf("%s: no such profile (%s)", where, nameOrigin(p.Profile, get(EnvProfile), fallback))
}

// nameOrigin says where the name of a profile (or a section) that is not
// there came from: the provider's own setting, ALIBABA_CLOUD_PROFILE, or
// fallback (the default, or the file's current one), which
// ALIBABA_CLOUD_PROFILE would override.
func nameOrigin(set, env, fallback string) string {
	switch {
	case set != "":
		return "named by the provider's settings"
	case env != "":
		return "named by " + EnvProfile
	}
	return fallback + "; set " + EnvProfile + " to the one to use"
}

// configFile is the file a profile provider reads: the path set on the
// provider, else the one its environment variable names, else home, a path
// in the user's home directory.
type configFile struct {
	set, env, home string
}

func (f configFile) path(get func(string) string) string {
	return firstSet(f.set, get(f.env), homeFile(get, f.home))
}

// read reads the file for the provider who and has w remember it. A file
// that does not exist where neither the provider nor the environment named
// it means the provider is not configured.
func (f configFile) read(w *fileWatch, who string, get func(string) string) (path string, data []byte, err error) {
	path = f.path(get)
	w.remember(w.snapshot([]string{path}))
	data, err = os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && f.set == "" && get(f.env) == "" {
			return path, nil, notConfigured("%s: no %s", who, path)
		}
		return path, nil, fmt.Errorf("%s: %w", who, fileErr(path, err))
	}
	return path, data, nil
}

func homeFile(get func(string) string, rel string) string {
	home := get("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, rel)
}
