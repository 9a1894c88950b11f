// Command dashq prints the queries of a Grafana dashboard (JSON) as a
// Prometheus rules file, one recording rule per query, with the dashboard's
// variables filled in, so that `promtool check rules` parses every query.
// scripts/ops-check.sh (step rules) runs it.
//
//	go run ./internal/opscheck/dashq deploy/grafana/iot-mns-bridge.json > q.yml
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// vars are values for the dashboard's variables and Grafana's built-ins.
var vars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$job", "iot-mns-bridge", "$instance", ".*")

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dashq:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: dashq DASHBOARD.json")
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("%s: %w", os.Args[1], err)
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, p := range d.Panels {
		if len(p.Targets) == 0 {
			return fmt.Errorf("%s: panel %q has no query", os.Args[1], p.Title)
		}
		for j, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				return fmt.Errorf("%s: panel %q: query %d is empty", os.Args[1], p.Title, j)
			}
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel%d:query%d", i+1, j), Expr: vars.Replace(t.Expr)})
		}
	}
	if len(rules) == 0 {
		return fmt.Errorf("%s: no panels with queries", os.Args[1])
	}
	out := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	return yaml.NewEncoder(os.Stdout).Encode(out)
}
