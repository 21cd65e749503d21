package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestRegistryLogLevels: a client sent for a token (401) or asking for
// what is not there (404) is routine: logged at debug, in a short line,
// never as a warning, and without the token.
func TestRegistryLogLevels(t *testing.T) {
	e := start(t, serverConfig(t))
	host := e.srv.RegistryHost()
	missing, _ := name.ParseReference(host + "/library/nothing:1")
	if _, err := remote.Image(missing); !refusal(err) {
		t.Fatalf("anonymous pull: %v", err)
	}
	if _, err := remote.Image(missing, e.ts.RegistryAs("alice")); err == nil {
		t.Fatal("pulled what is not there")
	}
	var registryLines int
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var entry struct {
			Level, Msg, Code string
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		// The request lines; the collector's own lines (garbage
		// collected, uploads purged) are not about requests.
		if !strings.HasPrefix(entry.Msg, "registry") || strings.HasPrefix(entry.Msg, "registry: garbage") || strings.HasPrefix(entry.Msg, "registry: purge") {
			continue
		}
		registryLines++
		if entry.Level != "DEBUG" || len(line) > 600 {
			t.Errorf("registry log line at %s, %d bytes: %s", entry.Level, len(line), line)
		}
		if strings.Contains(line, e.token("alice")) || strings.Contains(line, "Bearer") {
			t.Errorf("a credential in the log: %s", line)
		}
	}
	if registryLines == 0 || !strings.Contains(e.logs.String(), `"code":"MANIFEST_UNKNOWN"`) {
		t.Fatalf("the 401 and the 404 were not logged at all:\n%s", e.logs.String())
	}
}
