package credentials

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Chain tries its providers in order at every Retrieve; the first that
// yields wins. A provider whose inputs are absent (ErrNotConfigured) is
// skipped; one that fails is skipped too, and its error is reported when
// none yields, or in the triple's Skipped when a later one yields. It is not sticky: a later refresh starts from the top again.
type Chain []Provider

func (Chain) Name() string { return "chain" }

func (ch Chain) Retrieve(ctx context.Context) (Credentials, error) {
	var errs, failed []string
	for _, p := range ch {
		c, err := p.Retrieve(ctx)
		if err == nil {
			c.Skipped = strings.Join(failed, "; ")
			return c, nil
		}
		if ctx.Err() != nil {
			return Credentials{}, fmt.Errorf("chain: %w", ctx.Err())
		}
		errs = append(errs, err.Error())
		if !errors.Is(err, ErrNotConfigured) {
			failed = append(failed, err.Error())
		}
	}
	return Credentials{}, fmt.Errorf("the default credential chain found none: %s", strings.Join(errs, "; "))
}

// Changed reports whether any file-backed provider of the chain changed.
func (ch Chain) Changed() bool {
	for _, p := range ch {
		if w, ok := p.(Watcher); ok && w.Changed() {
			return true
		}
	}
	return false
}

// DefaultChain is the Alibaba Cloud default chain, in credentials-go's
// order: env, oidc, cli_profile, profile, ecs_ram_role, uri. lookupEnv nil
// = os.LookupEnv.
func DefaultChain(lookupEnv func(string) (string, bool)) Chain {
	return Chain{
		Env{LookupEnv: lookupEnv},
		&OIDC{LookupEnv: lookupEnv},
		&CLIProfile{LookupEnv: lookupEnv},
		&Profile{LookupEnv: lookupEnv},
		&ECSRole{LookupEnv: lookupEnv},
		&URI{LookupEnv: lookupEnv},
	}
}

// Names of the providers, as config pins them.
var Names = []string{"static", "env", "file", "profile", "cli_profile", "ecs_ram_role", "oidc", "uri"}

// ByName returns the provider a config pins by name, reading its inputs
// from the environment (static and file are built by the caller, which
// knows their values). ok is false for an unknown name.
func ByName(name string, lookupEnv func(string) (string, bool)) (Provider, error) {
	switch name {
	case "", "chain":
		return DefaultChain(lookupEnv), nil
	case "env":
		return Env{LookupEnv: lookupEnv}, nil
	case "profile":
		return &Profile{LookupEnv: lookupEnv}, nil
	case "cli_profile":
		return &CLIProfile{LookupEnv: lookupEnv}, nil
	case "ecs_ram_role":
		return &ECSRole{LookupEnv: lookupEnv}, nil
	case "oidc":
		return &OIDC{LookupEnv: lookupEnv}, nil
	case "uri":
		return &URI{LookupEnv: lookupEnv}, nil
	}
	return nil, errors.New("unknown provider " + printable(name) + ": use " + strings.Join(Names, ", ") + ", or leave it empty for the default chain")
}
