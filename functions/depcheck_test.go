package functions_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoConcreteBackends holds the boundary the design draws: the handlers
// speak to interfaces, and the composition in pkg/server picks backends.
func TestNoConcreteBackends(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/slipway-dev/slipway/pkg/store/", "github.com/slipway-dev/slipway/pkg/runner/",
			"github.com/slipway-dev/slipway/pkg/server", "github.com/slipway-dev/slipway/pkg/dispatch",
			"github.com/slipway-dev/slipway/pkg/registry", "github.com/slipway-dev/slipway/pkg/publish", "github.com/distribution/distribution/",
			"modernc.org/sqlite", "cloud.google.com/go/firestore", "k8s.io/client-go",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("functions imports %s: handlers must not depend on a concrete backend", dep)
			}
		}
	}
}
