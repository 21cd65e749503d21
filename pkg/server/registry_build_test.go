package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/server"
)

// attackDockerfile is a build whose RUN step reads the build's registry
// credential from /kaniko/.docker/config.json and tries, with busybox's
// wget against the registry on the host network, to go beyond its own
// repository. It records each answer's status in /results, and keeps the
// credential and a token it asked delete rights with for the test to try
// more with.
const attackDockerfile = `FROM HOST/library/busybox
RUN mkdir /results; cp /kaniko/.docker/config.json /results/config.json; \
  auth=$(sed -n 's/.*"HOST":{"auth":"\([^"]*\)".*/\1/p' /kaniko/.docker/config.json); \
  tok() { busybox wget -q -O - --header "Authorization: Basic $auth" "http://HOST/auth/token?service=slipway-registry&scope=$1" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p'; }; \
  st() { busybox wget -S -O /dev/null "$@" 2>&1 | sed -n 's/^ *HTTP\/1\.[01] \([0-9]*\).*/\1/p' | tail -n 1; }; \
  accept="Accept: application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"; \
  t=$(tok repository:other/b:pull); st --header "$accept" --header "Authorization: Bearer $t" http://HOST/v2/other/b/manifests/latest > /results/pull-other; \
  t=$(tok repository:library/busybox:pull); st --header "$accept" --header "Authorization: Bearer $t" http://HOST/v2/library/busybox/manifests/latest > /results/pull-library; \
  t=$(tok repository:other/b:pull,push); st --post-data '' --header "Authorization: Bearer $t" http://HOST/v2/other/b/blobs/uploads/ > /results/push-other; \
  t=$(tok repository:library/busybox:pull,push); st --post-data '' --header "Authorization: Bearer $t" http://HOST/v2/library/busybox/blobs/uploads/ > /results/push-library; \
  t=$(tok repository:team/attacker:pull,push); st --post-data '' --header "Authorization: Bearer $t" http://HOST/v2/team/attacker/blobs/uploads/ > /results/push-own; \
  st --header "Authorization: Basic $auth" http://HOST/v2/other/b/tags/list > /results/basic-other; \
  tok "repository:library/busybox:delete&scope=repository:team/attacker:pull,push,delete&scope=repository:other/b:delete" > /results/delete-token; \
  echo done > /results/ran
`

// TestBuildCredentialConfinesTheBuild: a RUN step holding the build's
// credential can neither pull another workspace's private image, nor push
// to another repository or to library/, nor delete anything; the build's
// own push succeeds.
func TestBuildCredentialConfinesTheBuild(t *testing.T) {
	e, _, refB := registryEnv(t)
	host := e.srv.RegistryHost()
	ctx := context.Background()
	baseBefore, err := remote.Head(mustRef(t, e.base()+":latest"), e.ts.RegistryAs(nodePool))
	if err != nil {
		t.Fatal(err)
	}
	ref := e.buildAs("ws1", "alice", "team/attacker", strings.ReplaceAll(attackDockerfile, "HOST", host))
	fs := files(t, e.pull("alice", ref))
	if fs["/results/ran"] != "done\n" {
		t.Fatalf("the attack did not run: %v", fs)
	}
	for file, want := range map[string]string{
		"/results/pull-other":   "401", // ws2's private image
		"/results/push-other":   "401", // another workspace's repository
		"/results/push-library": "401", // the shared bases
		"/results/basic-other":  "401", // the credential itself is no registry token
		"/results/pull-library": "200", // what the build may do works from RUN too
		"/results/push-own":     "202",
	} {
		if got := strings.TrimSpace(fs[file]); got != want {
			t.Errorf("%s: HTTP %q, want %s", file, got, want)
		}
	}
	// The token the step asked delete rights with has none.
	delTok := strings.TrimSpace(fs["/results/delete-token"])
	granted := accessClaim(t, delTok)
	if len(granted) != 1 {
		t.Errorf("the build's token for delete scopes grants %+v, want pull,push on team/attacker alone", granted)
	}
	for _, a := range granted {
		if a.Name != "team/attacker" || strings.Join(a.Actions, ",") != "pull,push" {
			t.Errorf("the build's token grants %+v", a)
		}
	}
	for _, target := range []string{e.base() + "@" + baseBefore.Digest.String(), ref} {
		r := mustRef(t, target)
		req, _ := http.NewRequest("DELETE", "http://"+host+"/v2/"+r.Context().RepositoryStr()+"/manifests/"+r.Identifier(), nil)
		req.Header.Set("Authorization", "Bearer "+delTok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("DELETE %s with the build's token: %d, want 401", target, res.StatusCode)
		}
	}
	// The credential the step copied out, tried from outside with a real
	// client once the build has ended: good for nothing, not even its own
	// repository.
	var cfg struct {
		Auths map[string]struct{ Auth string }
	}
	if err := json.Unmarshal([]byte(fs["/results/config.json"]), &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	userPass, _ := base64.StdEncoding.DecodeString(cfg.Auths[host].Auth)
	user, pass, _ := strings.Cut(string(userPass), ":")
	stolen := remote.WithAuth(&authn.Basic{Username: user, Password: pass})
	if _, err := remote.Image(mustRef(t, ref), stolen); !refusal(err) {
		t.Errorf("pull the build's own image with its credential after the build: %v", err)
	}
	if _, err := remote.Image(mustRef(t, refB), stolen); !refusal(err) {
		t.Errorf("pull other/b with the build's credential: %v", err)
	}
	for _, target := range []string{host + "/other/b:stolen", host + "/library/busybox:stolen", host + "/library/new:1", host + "/team/a:stolen"} {
		img, _ := random.Image(64, 1)
		if err := remote.Write(mustRef(t, target), img, stolen); !refusal(err) {
			t.Errorf("push %s with the build's credential: %v", target, err)
		}
	}
	for _, target := range []string{ref, refB, e.base() + "@" + baseBefore.Digest.String()} {
		if err := remote.Delete(mustRef(t, target), stolen); !refusal(err) {
			t.Errorf("delete %s with the build's credential: %v", target, err)
		}
	}
	reg, _ := name.NewRegistry(host)
	if repos, err := remote.Catalog(ctx, reg, stolen); !refusal(err) {
		t.Errorf("catalog with the build's credential: %v, %v", repos, err)
	}
	// Nothing changed: the base is the same, other/b and the build resolve.
	if now, err := remote.Head(mustRef(t, e.base()+":latest"), e.ts.RegistryAs(nodePool)); err != nil || now.Digest != baseBefore.Digest {
		t.Fatalf("library/busybox changed: %v, %v", now, err)
	}
	for _, r := range []string{refB, ref} {
		if _, err := remote.Head(mustRef(t, r), e.ts.RegistryAs(nodePool)); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, pass) {
		t.Fatal("the build's credential is in the server log")
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBuildCacheThroughTokenFlow: with Kaniko's layer cache on, the build's
// credential covers its cache repository: the first build fills it, the
// rebuild of the same definition uses it, and members cannot read it.
func TestBuildCacheThroughTokenFlow(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildCache = true; c.RegistryPullers = []string{nodePool} })
	img := e.newImage(localImage("team/cached", "FROM "+e.base()+"\nRUN echo cached > /c\n"))
	for n := 1; n <= 2; n++ {
		if b := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); b.Status != "succeeded" {
			t.Fatalf("build %d: %+v\n%s", n, b, e.buildLog(img.ID, n))
		}
	}
	if log := e.buildLog(img.ID, 2); !strings.Contains(log, "Found cached layer") && !strings.Contains(log, "Using caching version") {
		t.Fatalf("the rebuild did not use the cache:\n%s", log)
	}
	cache := mustRef(t, e.srv.RegistryHost()+"/slipway-cache/team/cached").Context()
	if tags, err := remote.List(cache, e.ts.RegistryAs(nodePool)); err != nil || len(tags) == 0 {
		t.Fatalf("the cache repository: %v, %v", tags, err)
	}
	if _, err := remote.List(cache, e.ts.RegistryAs("alice")); !refusal(err) {
		t.Fatalf("the owner lists the cache repository: %v", err)
	}
}
