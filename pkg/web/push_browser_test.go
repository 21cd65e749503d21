package web_test

import (
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// privateRegistry is a real registry (go-containerregistry's) on loopback
// that answers 401 without user "u" and password, as a private registry
// does.
func privateRegistry(t *testing.T, password string) string {
	t.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "u" || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestBrowserPushAgain: a build whose destination refused shows that
// destination failed, with the registry's error, and a "Push again" button
// (the owner's; a member's is disabled); once the credential is fixed, the
// button pushes the built image there and the destination shows pushed.
func TestBrowserPushAgain(t *testing.T) {
	requireBuilds(t)
	const password = "right-password-for-the-destination"
	s := startSlipway(t)
	s.announce("ws1", "alice", "bob")
	s.PushBase()
	ext := privateRegistry(t, password)
	putCred := func(pw string) {
		if code, _, body := s.call("PUT", "/api/v1/workspaces/ws1/credentials/ext", "alice",
			map[string]any{"kind": "registry", "registry": ext, "username": "u", "password": pw}); code != http.StatusNoContent {
			t.Fatalf("PUT credential: %d %v", code, body)
		}
	}
	putCred("a-wrong-password")
	dest := ext + "/team/shipped:v1"
	code, _, img := s.call("POST", "/api/v1/workspaces/ws1/images", "alice", map[string]any{
		"name": "team/shipped", "context": map[string]any{"type": "local", "dockerfile": "FROM " + s.Base() + "\nRUN echo shipped > /shipped\n"},
		"destinations": []map[string]any{{"reference": dest, "credential": "ext"}},
	})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, img)
	}
	id := img["id"].(string)
	if code, _, b := s.call("POST", "/api/v1/images/"+id+"/builds", "alice", nil); code != http.StatusAccepted {
		t.Fatalf("POST builds: %d %v", code, b)
	}
	var digest string
	for deadline := time.Now().Add(3 * time.Minute); ; {
		_, _, b := s.call("GET", "/api/v1/images/"+id+"/builds/1", "alice", nil)
		if b["status"] == "succeeded" {
			digest = b["digest"].(string)
			break
		}
		if b["status"] == "failed" || time.Now().After(deadline) {
			t.Fatalf("build 1: %v", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	row := `.build-row[data-build="1"]`
	failed := fmt.Sprintf(`%s .push[data-reference=%q][data-status="failed"]`, row, dest)
	browser := newBrowser(t)

	// A member sees the failure; the button is the owner's.
	bob := openTab(t, browser, s, "bob", "ws1", true, time.Minute)
	bob.openImage(id, "team/shipped")
	bob.click(row + " .build-toggle")
	bob.waitFor(`document.querySelector('`+failed+` [data-action="push-again"]')`, "the failed destination", 10*time.Second)
	var disabled bool
	bob.eval(`document.querySelector('`+failed+` [data-action="push-again"]').disabled`, &disabled)
	if !disabled {
		t.Error("a member's Push again button is enabled")
	}

	tb := openTab(t, browser, s, "alice", "ws1", true, time.Minute)
	tb.openImage(id, "team/shipped")
	tb.waitFor(`document.querySelector('[data-testid="status-label"]').innerText === "Built"`, "the status Built despite the refused destination", 10*time.Second)
	tb.click(row + " .build-toggle")
	tb.waitFor(`document.querySelector('`+failed+`')`, "the failed destination", 10*time.Second)
	if msg := tb.text(failed + ` [data-testid="push-error"]`); !strings.Contains(msg, "401") && !strings.Contains(strings.ToUpper(msg), "UNAUTHORIZED") {
		t.Errorf("the failed destination's error says %q, want the registry's refusal", msg)
	}
	if text := tb.text(row + " .push-list"); !strings.Contains(text, "Pushed") || !strings.Contains(text, s.RegistryHost()+"/team/shipped:latest") {
		t.Errorf("the internal push is not shown as pushed: %q", text)
	}
	tb.screenshot("build-push-failed", 1280)

	// Fixed: Push again pushes it, and the destination shows pushed.
	putCred(password)
	tb.click(failed + ` [data-action="push-again"]`)
	tb.waitFor(fmt.Sprintf(`document.querySelector('%s .push[data-reference=%q][data-status="pushed"]')`, row, dest), "the destination pushed", 30*time.Second)
	if tb.text(row+" .push-list [data-action=\"push-again\"]") != "" {
		t.Error("a Push again button remains after the push succeeded")
	}
	ref, _ := name.ParseReference(dest)
	pushed, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "u", Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pushed.Digest(); d.String() != digest {
		t.Fatalf("the destination serves %s, the build made %s", d, digest)
	}
}
