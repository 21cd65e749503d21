package server_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/slipway-dev/slipway/internal/servertest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// TestClusterConfigIsUnderstood holds infra/ and the binary together: every
// setting the cluster's ConfigMap gives is one the server reads, and every
// role a Knative Service runs is one the server knows.
func TestClusterConfigIsUnderstood(t *testing.T) {
	raw, err := os.ReadFile(servertest.RepoRoot() + "/infra/base/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) == 0 {
		t.Fatal("no settings in infra/base/config.yaml")
	}
	for key := range cm.Data {
		if _, ok := server.EnvVars[key]; !ok {
			t.Errorf("infra sets %s, which slipway serve does not read", key)
		}
	}
	services, err := os.ReadFile(servertest.RepoRoot() + "/infra/base/services.yaml")
	if err != nil {
		t.Fatal(err)
	}
	roles := regexp.MustCompile(`args: \[serve, --role, (\w+)\]`).FindAllStringSubmatch(string(services), -1)
	if len(roles) != 5 {
		t.Fatalf("%d roles in services.yaml", len(roles))
	}
	for _, m := range roles {
		if !slices.Contains(server.Roles, m[1]) {
			t.Errorf("a Service runs role %q, which slipway serve does not know (%s)", m[1], strings.Join(server.Roles, ", "))
		}
	}
}
