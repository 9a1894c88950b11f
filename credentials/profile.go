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
)

// Environment variables of the profile providers.
const (
	EnvCredentialsFile    = "ALIBABA_CLOUD_CREDENTIALS_FILE"
	EnvProfile            = "ALIBABA_CLOUD_PROFILE"
	EnvCLIConfigFile      = "ALIBABA_CLOUD_CONFIG_FILE"
	EnvCLIProfileDisabled = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"
)

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
	// ECS is the provider an ecs_ram_role section uses (its RoleName is
	// set from the section); nil = a default ECSRole.
	ECS *ECSRole

	w fileWatch
}

func (*Profile) Name() string { return "profile" }

func (p *Profile) path(get func(string) string) string {
	if p.Path != "" {
		return p.Path
	}
	if f := get(EnvCredentialsFile); f != "" {
		return f
	}
	return homeFile(get, ".alibabacloud/credentials")
}

// Changed reports whether the file changed since the last Retrieve, for
// access_key sections (an ecs_ram_role section expires by itself).
func (p *Profile) Changed() bool {
	return p.w.changed([]string{p.path(lookup(p.LookupEnv))})
}

func (p *Profile) Retrieve(ctx context.Context) (Credentials, error) {
	get := lookup(p.LookupEnv)
	path := p.path(get)
	p.w.remember(p.w.snapshot([]string{path}))
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && p.Path == "" && get(EnvCredentialsFile) == "" {
			return Credentials{}, notConfigured("profile: no %s", path)
		}
		return Credentials{}, fmt.Errorf("profile: %w", fileErr(path, err))
	}
	section := p.Section
	if section == "" {
		section = get(EnvProfile)
	}
	if section == "" {
		section = "default"
	}
	sec, line, err := iniSection(data, section)
	if err != nil {
		return Credentials{}, fmt.Errorf("profile: %s line %d: %w", path, line, err)
	}
	if sec == nil {
		return Credentials{}, fmt.Errorf("profile: %s has no section [%s]", path, section)
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
		ecs := ECSRole{LookupEnv: p.LookupEnv}
		if p.ECS != nil {
			ecs = *p.ECS
		}
		ecs.RoleName = sec["role_name"]
		if ecs.RoleName == "" {
			return Credentials{}, fmt.Errorf("%s: type ecs_ram_role needs role_name", where)
		}
		c, err := ecs.Retrieve(ctx)
		if err != nil {
			return Credentials{}, fmt.Errorf("%s: %w", where, err)
		}
		c.Source = "profile " + section + " (" + c.Source + ")"
		return c, nil
	case "":
		return Credentials{}, fmt.Errorf("%s: no type (access_key or ecs_ram_role)", where)
	default:
		return Credentials{}, fmt.Errorf("%s: type %s is not supported: use access_key or ecs_ram_role", where, printable(t))
	}
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

	w fileWatch
}

func (*CLIProfile) Name() string { return "cli_profile" }

func (p *CLIProfile) path(get func(string) string) string {
	if p.Path != "" {
		return p.Path
	}
	if f := get(EnvCLIConfigFile); f != "" {
		return f
	}
	return homeFile(get, ".aliyun/config.json")
}

// Changed reports whether the file changed since the last Retrieve.
func (p *CLIProfile) Changed() bool {
	return p.w.changed([]string{p.path(lookup(p.LookupEnv))})
}

func (p *CLIProfile) Retrieve(ctx context.Context) (Credentials, error) {
	get := lookup(p.LookupEnv)
	if envTrue(get, EnvCLIProfileDisabled) {
		return Credentials{}, notConfigured("cli_profile: off (%s=true)", EnvCLIProfileDisabled)
	}
	path := p.path(get)
	p.w.remember(p.w.snapshot([]string{path}))
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && p.Path == "" && get(EnvCLIConfigFile) == "" {
			return Credentials{}, notConfigured("cli_profile: no %s", path)
		}
		return Credentials{}, fmt.Errorf("cli_profile: %w", fileErr(path, err))
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
	name := p.Profile
	if name == "" {
		name = get(EnvProfile)
	}
	if name == "" {
		name = cfg.Current
	}
	if name == "" {
		name = "default"
	}
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
			ecs := ECSRole{LookupEnv: p.LookupEnv}
			if p.ECS != nil {
				ecs = *p.ECS
			}
			ecs.RoleName = pr.RAMRoleName
			c, err := ecs.Retrieve(ctx)
			if err != nil {
				return Credentials{}, fmt.Errorf("%s: %w", where, err)
			}
			c.Source = "cli_profile " + name + " (" + c.Source + ")"
			return c, nil
		default:
			return Credentials{}, fmt.Errorf("%s: mode %s is not supported: use AK, StsToken or EcsRamRole", where, printable(pr.Mode))
		}
		if err := c.check(where, c.Expiration); err != nil {
			return Credentials{}, err
		}
		c.Source = "cli_profile " + name
		return c, nil
	}
	return Credentials{}, fmt.Errorf("%s: no such profile", where)
}
