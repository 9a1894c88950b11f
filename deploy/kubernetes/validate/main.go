// Command validate checks the Kubernetes manifests in deploy/kubernetes
// offline, the way the API server would decode them, plus what the bridge
// needs of them:
//
//   - every resource kustomization.yaml lists is decoded strictly into its
//     k8s.io/api type (an unknown or misspelt field, or a wrong type, is an
//     error), and names and labels follow the API's rules;
//   - the StatefulSet's selector matches its pod labels, and so do the
//     Service's and the PodDisruptionBudget's;
//   - every Secret and ConfigMap key, volume and port the pod refers to exists,
//     the ConfigMap has a config.yaml, the pod has POD_NAME from its name and
//     a terminationGracePeriodSeconds;
//   - probes on /healthz (liveness, startup) and /readyz (readiness),
//     resources with a memory limit, non-root, replicas within the platform's
//     64 clients per consumer group.
//
// The config itself is loaded with the bridge's config package, and checked
// against these manifests (client id, probe port, grace period, replicas x
// connections), by internal/opscheck's TestKubernetesConfig in the main
// module: this module does not depend on the bridge, so its limit of 64 is a
// copy of the platform's (source.MaxConnections), pinned by that test.
//
// Usage (from this directory): go run . ..
// scripts/ops-check.sh (step kube) runs it; it is its own Go module so that
// the main module does not depend on k8s.io/api.
package main

import (
	"fmt"
	"os"
)

func main() {
	dir := ".."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	errs := Validate(dir)
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, "validate:", err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
	fmt.Printf("validate: %s: ok\n", dir)
}
