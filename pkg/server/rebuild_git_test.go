package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	neturl "net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
	"github.com/slipway-dev/slipway/pkg/server"
)

// checkNow runs a rebuild pass with base images and git refs checked now.
func (e *env) checkNow() {
	e.t.Helper()
	if err := e.srv.Rebuilds.CheckNow(context.Background()); err != nil {
		e.t.Fatalf("rebuild pass: %v", err)
	}
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// A new commit on the followed branch of a real repository served on
// loopback rebuilds exactly once, seen by polling or by a push webhook
// signed as GitHub, GitLab or Gitea sign; a bad signature or a replay
// changes nothing.
func TestGitCommitRebuilds(t *testing.T) {
	root := t.TempDir()
	repo := gittest.NewFixture(t, filepath.Join(root, "app.git"))
	url := strings.TrimSuffix(gittest.ServeGit(t, root), "/") + "/app.git"
	// The daily window keeps the server's own ticker from checking the
	// ref under the test (it checks every window; the test checks now).
	e := buildEnv(t, func(c *server.Config) { c.RebuildCheckInterval = 24 * time.Hour })
	img := e.newImage(map[string]any{"name": "team/from-git", "context": map[string]any{"type": "git",
		"git": map[string]any{"url": url, "ref": "main", "dir": "docker"}}, "rebuild": map[string]any{"on_git_commit": true}})
	first := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended)
	if first.Status != "succeeded" || *first.Commit != repo.Third {
		t.Fatalf("first build %+v", first)
	}
	// Unchanged: no build, and the image says it is up to date.
	e.checkNow()
	got, _ := e.getPolicy(img.ID, "alice")
	if n := len(e.buildsOf(img.ID)); n != 1 || !got.Rebuild.UpToDate || got.Rebuild.CheckedAt == nil {
		t.Fatalf("unchanged ref: %d builds, policy %+v", n, got.Rebuild)
	}

	// Polling: a new commit builds once, however often it is seen.
	c4 := repo.Commit(map[string]string{gittest.AppFile: "fourth\n"}, "fourth")
	e.checkNow()
	e.checkNow()
	bs := e.buildsOf(img.ID)
	if len(bs) != 2 || bs[0].Trigger != "git" || bs[0].RequestedBy != "alice" || bs[0].Cause == nil ||
		bs[0].Cause.Commit != c4 || bs[0].Cause.Prev != repo.Third || bs[0].Cause.Via != "poll" {
		t.Fatalf("after a new commit: %+v, cause %+v", bs, bs[0].Cause)
	}
	if b := e.waitFor(img.ID, bs[0].Number, 2*time.Minute, ended); b.Status != "succeeded" || *b.Commit != c4 {
		t.Fatalf("the git build: %+v\n%s", b, e.buildLog(img.ID, b.Number))
	}
	e.checkNow()
	if n := len(e.buildsOf(img.ID)); n != 2 {
		t.Fatalf("after the commit was built: %d builds", n)
	}

	// Webhooks.
	var hook struct{ URL, Secret string }
	want(t, e.call("POST", "/api/v1/images/"+img.ID+"/webhook", "alice", nil, &hook), 201, "")
	builds := 2
	// GitHub and Gitea send a form (payload=JSON) unless told otherwise.
	for _, host := range []string{"github", "gitlab", "gitea", "github-form", "gitea-form"} {
		c := repo.Commit(map[string]string{gittest.AppFile: host + "\n"}, host)
		body, _ := json.Marshal(map[string]any{"ref": "refs/heads/main", "before": "x", "after": c})
		var good, bad []string
		switch host {
		case "github-form", "gitea-form":
			body = []byte("payload=" + neturl.QueryEscape(string(body)))
			form := "application/x-www-form-urlencoded"
			if host == "github-form" {
				good = []string{"Content-Type", form, "X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=" + sign(hook.Secret, body)}
			} else {
				good = []string{"Content-Type", form, "X-Gitea-Event", "push", "X-Gitea-Signature", sign(hook.Secret, body)}
			}
			bad = []string{"Content-Type", form, "X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=" + sign("wrong", body)}
		case "github":
			good = []string{"X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=" + sign(hook.Secret, body)}
			bad = []string{"X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=" + sign("wrong", body)}
		case "gitlab":
			good = []string{"X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hook.Secret}
			bad = []string{"X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hook.Secret[1:]}
		case "gitea":
			good = []string{"X-Gitea-Event", "push", "X-Gitea-Signature", sign(hook.Secret, body)}
			bad = []string{"X-Gitea-Event", "push", "X-Gitea-Signature", sign(hook.Secret, append(body, ' '))}
		}
		if res, _ := e.postHook(img.ID, body, bad...); res.StatusCode != 401 {
			t.Fatalf("%s: a bad signature: %d, want 401", host, res.StatusCode)
		}
		if res, _ := e.postHook(img.ID, body); res.StatusCode != 401 {
			t.Fatalf("%s: no signature: %d, want 401", host, res.StatusCode)
		}
		if n := len(e.buildsOf(img.ID)); n != builds {
			t.Fatalf("%s: %d builds after refused deliveries, want %d", host, n, builds)
		}
		res, out := e.postHook(img.ID, body, good...)
		if res.StatusCode != 202 || out["triggered"] != true {
			t.Fatalf("%s: a signed delivery: %d %v", host, res.StatusCode, out)
		}
		builds++
		// Replayed, while the build runs and after: nothing.
		if res, out := e.postHook(img.ID, body, good...); res.StatusCode != 200 || out["triggered"] != false {
			t.Fatalf("%s: replay: %d %v", host, res.StatusCode, out)
		}
		bs := e.buildsOf(img.ID)
		if len(bs) != builds || bs[0].Trigger != "git" || bs[0].Cause.Via != "webhook" || bs[0].Cause.Commit != c {
			t.Fatalf("%s: builds %d (want %d), newest %+v", host, len(bs), builds, bs[0].Cause)
		}
		if b := e.waitFor(img.ID, bs[0].Number, 2*time.Minute, ended); b.Status != "succeeded" || *b.Commit != c {
			t.Fatalf("%s: the build %+v", host, b)
		}
		if res, out := e.postHook(img.ID, body, good...); res.StatusCode != 200 || out["reason"] != "up_to_date" {
			t.Fatalf("%s: replay after the build: %d %v", host, res.StatusCode, out)
		}
	}
	// A push to another branch builds nothing.
	repo.Checkout("dev")
	repo.Commit(map[string]string{gittest.AppFile: "dev2\n"}, "dev2")
	body := []byte(`{"ref":"refs/heads/dev","after":"` + repo.Rev("dev") + `"}`)
	if res, out := e.postHook(img.ID, body, "X-Hub-Signature-256", "sha256="+sign(hook.Secret, body)); res.StatusCode != 200 || out["reason"] != "not_tracked" {
		t.Fatalf("push to dev: %d %v", res.StatusCode, out)
	}
	if n := len(e.buildsOf(img.ID)); n != builds {
		t.Fatalf("%d builds, want %d", n, builds)
	}
}
