package opscheck

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// TestKubernetesConfig loads the config in deploy/kubernetes/configmap.yaml
// with the bridge's config package, the way a pod of the StatefulSet would
// (POD_NAME from the pod name, the key id from the Secret, the secret file
// from the Secret's mount), and checks it against the manifests: the client
// id is the pod name, http.listen is on the probes' port and not loopback,
// shutdown_timeout is below terminationGracePeriodSeconds, the spool is on,
// an instance's endpoint comes with its iot_instance_id,
// and replicas x connections stay within the platform's 64 clients per
// consumer group. deploy/kubernetes/validate checks the manifests against
// the Kubernetes API types (scripts/ops-check.sh, step kube).
func TestKubernetesConfig(t *testing.T) {
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	var secret struct {
		StringData map[string]string `yaml:"stringData"`
	}
	var sts struct {
		Metadata struct{ Name string } `yaml:"metadata"`
		Spec     struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
					Containers                    []struct {
						Ports []struct {
							Name          string `yaml:"name"`
							ContainerPort int    `yaml:"containerPort"`
						} `yaml:"ports"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	for file, v := range map[string]any{"configmap.yaml": &cm, "secret.yaml": &secret, "statefulset.yaml": &sts} {
		if err := yaml.Unmarshal([]byte(readRepoFile(t, "deploy/kubernetes/"+file)), v); err != nil {
			t.Fatalf("deploy/kubernetes/%s: %v", file, err)
		}
	}
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatal("deploy/kubernetes/configmap.yaml has no config.yaml")
	}
	creds := t.TempDir()
	testfile.Write(t, creds, "access_key_secret", secret.StringData["access_key_secret"])
	podName := sts.Metadata.Name + "-2"
	env := map[string]string{"POD_NAME": podName, "ALIBABA_CLOUD_ACCESS_KEY_ID": secret.StringData["access_key_id"],
		"CREDENTIALS_DIRECTORY": creds, "STATE_DIRECTORY": t.TempDir()}
	cfg, err := config.Parse([]byte(text), "deploy/kubernetes/configmap.yaml:config.yaml", func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatalf("the ConfigMap's config does not load: %v", err)
	}
	if cfg.Source.ClientID != podName {
		t.Errorf("source.client_id = %q in pod %s, want the pod name (${POD_NAME}): each replica its own client of the group", cfg.Source.ClientID, podName)
	}
	if n := sts.Spec.Replicas * cfg.Source.Connections; sts.Spec.Replicas < 2 || n > source.MaxConnections {
		t.Errorf("%d replicas x %d connections: want at least 2 replicas and at most the platform's %d clients per consumer group", sts.Spec.Replicas, cfg.Source.Connections, source.MaxConnections)
	}
	// The validator is its own module, without the bridge: its copy of the
	// platform's limit must be the bridge's.
	want := "const maxClientsPerGroup = " + strconv.Itoa(source.MaxConnections) + "\n"
	if v := readRepoFile(t, "deploy/kubernetes/validate/validate.go"); !strings.Contains(v, want) {
		t.Errorf("deploy/kubernetes/validate/validate.go lacks %q: its limit of clients per consumer group is not source.MaxConnections", strings.TrimSpace(want))
	}
	host, port, _ := strings.Cut(cfg.HTTP.Listen, ":")
	if host == "127.0.0.1" || host == "localhost" {
		t.Errorf("http.listen %q: the kubelet's probes and Prometheus cannot reach loopback", cfg.HTTP.Listen)
	}
	if c := sts.Spec.Template.Spec.Containers; len(c) != 1 || len(c[0].Ports) == 0 || strconv.Itoa(c[0].Ports[0].ContainerPort) != port {
		t.Errorf("http.listen %q is not the container port the probes use (%+v)", cfg.HTTP.Listen, c)
	}
	if grace := time.Duration(sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %v is not above shutdown_timeout %v: the kubelet would SIGKILL a draining bridge", grace, cfg.ShutdownTimeout)
	}
	// An endpoint ${iotInstanceId}.amqp.iothub.aliyuncs.com is an
	// instance's: a login must name the instance (iotInstanceId), or the
	// platform refuses it. The ConfigMap had such an endpoint and no
	// iot_instance_id, and README's "Edit configmap.yaml" did not name it
	// (walk7).
	if host, _, _ := strings.Cut(cfg.Source.Endpoint, ":"); strings.HasSuffix(host, ".amqp.iothub.aliyuncs.com") {
		if id, _, _ := strings.Cut(host, "."); cfg.Source.IotInstanceID != id {
			t.Errorf("source.iot_instance_id %q with the endpoint %s of instance %s: want %q (a login must name the instance)", cfg.Source.IotInstanceID, host, id, id)
		}
	}
	if cfg.Spool.Dir == "" || !strings.HasPrefix(cfg.Spool.Dir, env["STATE_DIRECTORY"]) {
		t.Errorf("spool.dir %q: want it on the pod's volume ($STATE_DIRECTORY)", cfg.Spool.Dir)
	}
}
