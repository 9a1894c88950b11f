package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// maxClientsPerGroup is the platform's limit of clients in one consumer group:
// a copy of the bridge's source.MaxConnections (this module does not depend on
// the bridge); internal/opscheck's TestKubernetesConfig checks they agree.
const maxClientsPerGroup = 64

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// manifests are the decoded resources, by kind.
type manifests struct {
	namespaces   []corev1.Namespace
	accounts     []corev1.ServiceAccount
	configMaps   []corev1.ConfigMap
	secrets      []corev1.Secret
	services     []corev1.Service
	statefulSets []appsv1.StatefulSet
	pdbs         []policyv1.PodDisruptionBudget
}

// Validate checks the kustomization in dir and returns every problem found.
func Validate(dir string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return []error{err}
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return []error{fmt.Errorf("kustomization.yaml: %w", err)}
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		fail("kustomization.yaml: apiVersion/kind %s/%s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	if len(k.Resources) == 0 {
		fail("kustomization.yaml lists no resources")
	}
	var m manifests
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			fail("kustomization.yaml: resource %s: %v", r, err)
			continue
		}
		for i, doc := range splitDocs(data) {
			if err := m.decode(doc); err != nil {
				fail("%s (document %d): %v", r, i+1, err)
			}
		}
	}
	// kustomize adds the common labels to every resource and pod template
	// (not to selectors): apply them before comparing.
	common := map[string]string{}
	for _, l := range k.Labels {
		for key, v := range l.Pairs {
			common[key] = v
			for _, msg := range validation.IsQualifiedName(key) {
				fail("kustomization.yaml: label %s: %s", key, msg)
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				fail("kustomization.yaml: label %s=%s: %s", key, v, msg)
			}
		}
	}
	if k.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(k.Namespace) {
			fail("kustomization.yaml: namespace %s: %s", k.Namespace, msg)
		}
	}
	errs = append(errs, m.check(common, k)...)
	return errs
}

// splitDocs splits a YAML stream at "---" lines, dropping empty documents.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(d []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// decode decodes one document strictly into the type of its kind.
func (m *manifests) decode(doc []byte) error {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	kinds := m.kinds()
	k, ok := kinds[tm.Kind]
	if !ok {
		return fmt.Errorf("kind %q is not one this validator knows (%s)", tm.Kind, strings.Join(slices.Sorted(maps.Keys(kinds)), ", "))
	} else if tm.APIVersion != k.apiVersion {
		return fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, k.apiVersion)
	}
	name, err := k.decode(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if name == "" {
		return fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		return fmt.Errorf("%s %s: name: %s", tm.Kind, name, msg)
	}
	return nil
}

// kind is a kind of object the kustomization may hold: its apiVersion and
// how one is decoded into the manifests.
type kind struct {
	apiVersion string
	decode     func(doc []byte) (name string, err error)
}

// kinds are the kinds the validator knows, by name.
func (m *manifests) kinds() map[string]kind {
	return map[string]kind{
		"Namespace":           {"v1", into(&m.namespaces)},
		"ServiceAccount":      {"v1", into(&m.accounts)},
		"ConfigMap":           {"v1", into(&m.configMaps)},
		"Secret":              {"v1", into(&m.secrets)},
		"Service":             {"v1", into(&m.services)},
		"StatefulSet":         {"apps/v1", into(&m.statefulSets)},
		"PodDisruptionBudget": {"policy/v1", into(&m.pdbs)},
	}
}

// into returns a decoder of one document, strictly (an unknown field is an
// error), as a T that it appends to list; it returns the object's
// metadata.name.
func into[T any, P interface {
	*T
	GetName() string
}](list *[]T) func([]byte) (string, error) {
	return func(doc []byte) (string, error) {
		var o T
		if err := yaml.UnmarshalStrict(doc, &o); err != nil {
			return "", err
		}
		*list = append(*list, o)
		return P(&o).GetName(), nil
	}
}

func (m *manifests) check(common map[string]string, k kustomization) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(m.statefulSets) != 1 {
		return append(errs, fmt.Errorf("want one StatefulSet, found %d", len(m.statefulSets)))
	}
	sts := m.statefulSets[0]
	where := "StatefulSet " + sts.Name
	podLabels := labels.Set{}
	for key, v := range sts.Spec.Template.Labels {
		podLabels[key] = v
	}
	for key, v := range common {
		podLabels[key] = v
	}
	if sts.Spec.Selector == nil || len(sts.Spec.Selector.MatchLabels) == 0 {
		fail("%s: no spec.selector.matchLabels", where)
	} else if !labels.SelectorFromSet(sts.Spec.Selector.MatchLabels).Matches(labels.Set(sts.Spec.Template.Labels)) {
		fail("%s: spec.selector %v does not match the pod template's labels %v (the API server refuses it)", where, sts.Spec.Selector.MatchLabels, sts.Spec.Template.Labels)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 2 {
		fail("%s: replicas unset or below 2: want N bridges sharing the consumer group", where)
	} else if *sts.Spec.Replicas > maxClientsPerGroup {
		fail("%s: %d replicas, above the platform's %d clients per consumer group", where, *sts.Spec.Replicas, maxClientsPerGroup)
	}
	if sts.Spec.ServiceName == "" || !slices.ContainsFunc(m.services, func(svc corev1.Service) bool { return svc.Name == sts.Spec.ServiceName }) {
		fail("%s: serviceName %q is not a Service of the kustomization", where, sts.Spec.ServiceName)
	}
	for _, svc := range m.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			fail("Service %s: selector %v does not match the pods' labels %v", svc.Name, svc.Spec.Selector, podLabels)
		}
	}
	if len(m.pdbs) == 0 {
		fail("no PodDisruptionBudget")
	}
	for _, p := range m.pdbs {
		if p.Spec.Selector == nil || !labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(podLabels) {
			fail("PodDisruptionBudget %s: selector does not match the pods' labels %v", p.Name, podLabels)
		}
		if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
			fail("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", p.Name)
		}
	}

	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		return append(errs, fmt.Errorf("%s: want one container, found %d", where, len(pod.Containers)))
	}
	c := pod.Containers[0]
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		fail("%s: want securityContext.runAsNonRoot: true and a non-zero runAsUser (the image's 65532)", where)
	}
	if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		fail("%s: container: want allowPrivilegeEscalation: false", where)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		fail("%s: container: want cpu and memory requests and a memory limit (sized from bench/README.md)", where)
	} else if c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) < 0 {
		fail("%s: container: the memory limit is below the request", where)
	}
	if !strings.Contains(c.Image, "iot-mns-bridge") {
		fail("%s: container image %q is not the bridge's", where, c.Image)
	}
	imageSet := false
	for _, img := range k.Images {
		if img.Name == c.Image && img.NewName != "" {
			imageSet = true
		}
	}
	if !imageSet {
		fail("kustomization.yaml: no images entry sets newName for the container image %q", c.Image)
	}

	// Ports and probes.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
		for _, msg := range validation.IsValidPortName(p.Name) {
			fail("%s: port name %q: %s", where, p.Name, msg)
		}
	}
	probePort := func(kind string, p *corev1.Probe, path string) int32 {
		if p == nil || p.HTTPGet == nil {
			fail("%s: no HTTP %s probe", where, kind)
			return 0
		}
		if p.HTTPGet.Path != path {
			fail("%s: %s probe path %q, want %s", where, kind, p.HTTPGet.Path, path)
		}
		port := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			var ok bool
			if port, ok = ports[p.HTTPGet.Port.StrVal]; !ok {
				fail("%s: %s probe port %q is not a container port", where, kind, p.HTTPGet.Port.StrVal)
			}
		}
		return port
	}
	lp := probePort("liveness", c.LivenessProbe, "/healthz")
	probePort("readiness", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		probePort("startup", c.StartupProbe, "/healthz")
	}
	for _, obj := range []map[string]string{sts.Spec.Template.Annotations} {
		if obj["prometheus.io/scrape"] != "true" || obj["prometheus.io/port"] != strconv.Itoa(int(lp)) {
			fail("%s: pod annotations %v: want prometheus.io/scrape \"true\" and prometheus.io/port %d", where, obj, lp)
		}
	}

	// Env, volumes and the objects they refer to.
	env := map[string]string{}
	fromPodName := map[string]bool{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			if e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
				fromPodName[e.Name] = true
				env[e.Name] = sts.Name + "-0"
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := m.secretKey(ref.Name, ref.Key)
			if !ok {
				fail("%s: env %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, t := range sts.Spec.VolumeClaimTemplates {
		volumes[t.Name] = corev1.Volume{Name: t.Name}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			fail("%s: volumeMount %s: no such volume", where, vm.Name)
			continue
		}
		mounts[vm.MountPath] = vm
		if s := v.Secret; s != nil {
			for _, it := range s.Items {
				if _, ok := m.secretKey(s.SecretName, it.Key); !ok {
					fail("%s: volume %s: Secret %s has no key %s", where, v.Name, s.SecretName, it.Key)
				}
			}
		}
		if cm := v.ConfigMap; cm != nil {
			for _, it := range cm.Items {
				if _, ok := m.configKey(cm.Name, it.Key); !ok {
					fail("%s: volume %s: ConfigMap %s has no key %s", where, v.Name, cm.Name, it.Key)
				}
			}
		}
	}
	for _, path := range []string{"/etc/iot-mns-bridge", "/run/secrets", "/var/lib/iot-mns-bridge"} {
		if _, ok := mounts[path]; !ok {
			fail("%s: nothing mounted at %s (the image's config, $CREDENTIALS_DIRECTORY and $STATE_DIRECTORY)", where, path)
		}
	}
	if vm, ok := mounts["/var/lib/iot-mns-bridge"]; ok && volumes[vm.Name].EmptyDir != nil {
		fail("%s: the state directory is an emptyDir: the spool would not survive the pod", where)
	}

	// The config itself (client id from the pod name, http.listen on the
	// probes' port, shutdown_timeout below the grace period) is loaded with
	// the bridge's config package by internal/opscheck's TestKubernetesConfig,
	// in the main module, so that this module does not depend on it.
	cfgVol, ok := volumes[mounts["/etc/iot-mns-bridge"].Name]
	if !ok || cfgVol.ConfigMap == nil {
		fail("%s: /etc/iot-mns-bridge is not a ConfigMap volume", where)
	} else if _, ok := m.configKey(cfgVol.ConfigMap.Name, "config.yaml"); !ok {
		fail("ConfigMap %s has no config.yaml", cfgVol.ConfigMap.Name)
	}
	if !fromPodName["POD_NAME"] {
		fail("%s: no env POD_NAME from metadata.name (config.yaml's client_id: ${POD_NAME})", where)
	}
	if pod.TerminationGracePeriodSeconds == nil {
		fail("%s: terminationGracePeriodSeconds unset: set it above the config's shutdown_timeout", where)
	}
	return errs
}

func (m *manifests) secretKey(name, key string) (string, bool) {
	for _, s := range m.secrets {
		if s.Name != name {
			continue
		}
		if v, ok := s.StringData[key]; ok {
			return v, true
		}
		if v, ok := s.Data[key]; ok {
			return string(v), true
		}
	}
	return "", false
}

func (m *manifests) configKey(name, key string) (string, bool) {
	for _, c := range m.configMaps {
		if c.Name == name {
			v, ok := c.Data[key]
			return v, ok
		}
	}
	return "", false
}
