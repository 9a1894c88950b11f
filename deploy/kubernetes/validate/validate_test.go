package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManifestsAreValid(t *testing.T) {
	for _, err := range Validate("..") {
		t.Error(err)
	}
}

// TestValidatorCatches breaks the manifests one way at a time and expects
// the validator to name the problem.
func TestValidatorCatches(t *testing.T) {
	tests := []struct {
		name, file, old, new, want string
	}{
		{"misspelt field", "statefulset.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriod: 45", `unknown field "terminationGracePeriod"`},
		{"wrong type", "statefulset.yaml", "replicas: 3", "replicas: three", "StatefulSet"},
		{"too many replicas", "statefulset.yaml", "replicas: 3", "replicas: 65", "above the platform's 64 clients"},
		{"no pod name", "statefulset.yaml", "fieldPath: metadata.name", "fieldPath: metadata.namespace", "no env POD_NAME from metadata.name"},
		{"liveness path", "statefulset.yaml", "path: /healthz\n              port: http-metrics\n            periodSeconds: 30", "path: /metrics\n              port: http-metrics\n            periodSeconds: 30", "liveness probe path"},
		{"pdb selector", "poddisruptionbudget.yaml", "app.kubernetes.io/name: iot-mns-bridge", "app.kubernetes.io/name: other", "PodDisruptionBudget iot-mns-bridge: selector"},
		{"secret key", "secret.yaml", "access_key_id:", "key_id:", "Secret iot-mns-bridge-credentials has no key access_key_id"},
		{"apiVersion", "statefulset.yaml", "apiVersion: apps/v1", "apiVersion: apps/v2", `StatefulSet: apiVersion "apps/v2", want "apps/v1"`},
		{"unknown kind", "poddisruptionbudget.yaml", "kind: PodDisruptionBudget", "kind: DisruptionBudget", `kind "DisruptionBudget" is not one this validator knows`},
		{"service name", "statefulset.yaml", "serviceName: iot-mns-bridge", "serviceName: other", `serviceName "other" is not a Service`},
		{"no memory limit", "statefulset.yaml", "limits:\n              memory: 256Mi", "limits: {}", "memory limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			entries, err := os.ReadDir("..")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.IsDir() {
					continue
				}
				b, err := os.ReadFile(filepath.Join("..", e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if e.Name() == tt.file {
					if !strings.Contains(string(b), tt.old) {
						t.Fatalf("%s does not contain %q", tt.file, tt.old)
					}
					b = []byte(strings.Replace(string(b), tt.old, tt.new, 1))
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			errs := Validate(dir)
			var all []string
			for _, err := range errs {
				all = append(all, err.Error())
			}
			if !strings.Contains(strings.Join(all, "\n"), tt.want) {
				t.Errorf("validator errors %q, want one containing %q", all, tt.want)
			}
		})
	}
}
