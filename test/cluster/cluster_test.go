package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/slipway-dev/slipway/pkg/gitctx/gittest"
)

// buildNS is where build pods run (infra/'s ConfigMap says so too).
const buildNS = "slipway-builds"

// TestCluster runs Slipway's cluster column on the cluster, in order: infra/
// applied, the roles deployed from it, builds through them, and last the
// RBAC checked against every call the roles made.
func TestCluster(t *testing.T) {
	needCluster(t)
	var objs []*unstructured.Unstructured
	if !t.Run("infra applies with strict server-side validation", func(t *testing.T) { objs = testInfra(t) }) {
		return
	}
	start := time.Now()
	d := deploy(t, objs)
	defer d.stop()
	t.Logf("the five roles deployed in %.1fs", time.Since(start).Seconds())
	defer func() {
		if t.Failed() {
			for _, r := range roleNames {
				log := d.roleLog("slipway-" + r)
				if len(log) > 6000 {
					log = log[len(log)-6000:]
				}
				t.Logf("---- slipway-%s (tail)\n%s", r, log)
			}
		}
	}()
	a := &apiClient{t: t, d: d}
	a.token = a.issue("alice")
	d.publish("platform.workspace.created", map[string]any{"id": "ws1", "owner": "alice", "members": []string{}})
	a.eventually("the receiver stores the workspace", 30*time.Second, func() bool {
		code, _ := a.do("GET", "/api/v1/workspaces/ws1/images", nil)
		return code == http.StatusOK
	})
	base := env.cluster.Registry + "/" + baseRepo

	t.Run("a local build succeeds and is pulled back", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/local", local("FROM "+base+"\nRUN echo hello > /hello\n"))
		b := a.buildAndWait(id, 2*time.Minute)
		a.wantStatus(b, "succeeded", "")
		a.pull(b)
		if log := a.log(id, b); !strings.Contains(log, "RUN echo hello") {
			t.Errorf("the build log does not show the RUN step:\n%s", log)
		}
		a.wantBases(b, base)
		a.noPodLeft(id, b, time.Minute)
	})

	t.Run("a git build succeeds and records its commit", func(t *testing.T) {
		a := a.with(t)
		root := t.TempDir()
		fx := gittest.NewFixture(t, filepath.Join(root, "repo.git"))
		fx.AllowReachableSHA1InWant()
		u := gittest.ServeGit(t, root)
		port := portOf(t, u)
		if err := env.cluster.AddRelay(port); err != nil {
			t.Fatal(err)
		}
		id := a.image("team/git", map[string]any{"type": "git", "git": map[string]any{"url": u + "repo.git", "ref": "main", "dir": "docker"}})
		b := a.buildAndWait(id, 2*time.Minute)
		a.wantStatus(b, "succeeded", "")
		a.pull(b)
		if got, _ := b["commit"].(string); got != fx.Third {
			t.Errorf("commit %q, want main's tip %s", got, fx.Third)
		}

		// Its Dockerfile is read in the pod only: the init container says
		// its bases, after the build's arguments, and the reporter records
		// them.
		t.Run("a git build records its bases", func(t *testing.T) {
			a := a.with(t)
			r := gittest.NewRepo(t, filepath.Join(root, "bases.git"))
			r.Commit(map[string]string{"Dockerfile": "ARG BASE=nothing.invalid/none\nFROM ${BASE}\nRUN echo git > /git\n"}, "bases")
			code, m := a.do("POST", "/api/v1/workspaces/ws1/images", map[string]any{"name": "team/git-bases", "description": "cluster test",
				"context": map[string]any{"type": "git", "git": map[string]any{"url": u + "bases.git"}}, "build_args": map[string]string{"BASE": base}})
			if code != http.StatusCreated {
				t.Fatalf("creating the image: %d %v", code, m)
			}
			id := m["id"].(string)
			b := a.buildAndWait(id, 2*time.Minute)
			a.wantStatus(b, "succeeded", "")
			a.wantBases(b, base)
		})

		t.Run("a failing git fetch fails with reason git", func(t *testing.T) {
			a := a.with(t)
			id := a.image("team/git-missing", map[string]any{"type": "git", "git": map[string]any{"url": u + "missing.git", "ref": "main"}})
			b := a.buildAndWait(id, 2*time.Minute)
			a.wantStatus(b, "failed", "git")
		})
	})

	t.Run("an unpullable base fails with reason base_image", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/nobase", local("FROM "+env.cluster.Registry+"/library/missing:none\nRUN true\n"))
		b := a.buildAndWait(id, 2*time.Minute)
		a.wantStatus(b, "failed", "base_image")
	})

	t.Run("a duplicated completion event changes nothing", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/dup", local("FROM "+base+"\nRUN echo dup > /dup\n"))
		b := a.buildAndWait(id, 2*time.Minute)
		a.wantStatus(b, "succeeded", "")
		n := int(b["number"].(float64))
		before := d.router.deliveries()
		resent := d.router.resend(func(dl delivery) bool {
			return strings.HasPrefix(dl.Type, "dev.knative.apiserver.resource.") && strings.HasSuffix(dl.Subject, "/"+id+"-"+strconv.Itoa(n))
		})
		if resent == 0 {
			t.Fatal("no pod event of the build was delivered to resend")
		}
		a.eventually("the resent events are delivered", 30*time.Second, func() bool { return len(d.router.deliveries()) >= len(before)+resent })
		for _, dl := range d.router.deliveries()[len(before):] {
			if dl.Status >= 300 {
				t.Errorf("redelivery of %s to %s answered %d", dl.Type, dl.Trigger, dl.Status)
			}
		}
		again := a.build(id, n)
		for _, k := range []string{"status", "finished_at", "digest", "reference"} {
			if fmt.Sprint(again[k]) != fmt.Sprint(b[k]) {
				t.Errorf("%s changed from %v to %v", k, b[k], again[k])
			}
		}
	})

	t.Run("cancel stops the pod and ends the build cancelled", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/cancel", local("FROM "+base+"\nRUN sleep 300\n"))
		b := a.startBuild(id)
		n := int(b["number"].(float64))
		a.waitPodRunning(id, n, 2*time.Minute)
		// A redelivered build.queued finds the pod there and leaves it be.
		before := len(d.router.deliveries())
		if !d.router.resendLast("dev.slipway.build.queued") {
			t.Fatal("no build.queued was delivered")
		}
		a.eventually("the redelivery", 30*time.Second, func() bool { return len(d.router.deliveries()) > before })
		if dl := d.router.deliveries()[before]; dl.Status >= 300 {
			t.Errorf("the redelivered build.queued answered %d", dl.Status)
		}
		code, body := a.do("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", id, n), nil)
		if code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", code, body)
		}
		b = a.waitBuild(id, n, time.Minute)
		a.wantStatus(b, "cancelled", "")
		a.noPodLeft(id, b, time.Minute)
	})

	t.Run("a pod deleted mid-build ends the build", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/deleted", local("FROM "+base+"\nRUN sleep 300\n"))
		b := a.startBuild(id)
		n := int(b["number"].(float64))
		a.waitPodRunning(id, n, 2*time.Minute)
		if err := env.cluster.Client.CoreV1().Pods(buildNS).Delete(context.Background(), fmt.Sprintf("%s-%d", id, n), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		b = a.waitBuildPinging(id, n, 2*time.Minute)
		// Failed, saying why: the runner reports it (reason internal), or
		// the reconciler finds the pod gone (reason interrupted).
		a.wantStatus(b, "failed", "")
		if f, _ := b["failure"].(map[string]any); f == nil || !strings.Contains(fmt.Sprint(f["message"]), "gone") && !strings.Contains(fmt.Sprint(f["message"]), "deleted") {
			t.Errorf("the failure does not say the pod went away: %v", b["failure"])
		}
	})

	t.Run("a lost build.queued is recovered by the reconciler", func(t *testing.T) {
		a := a.with(t)
		id := a.image("team/lost", local("FROM "+base+"\nRUN echo lost > /lost\n"))
		d.router.drop("dev.slipway.build.queued", 1)
		b := a.startBuild(id)
		n := int(b["number"].(float64))
		time.Sleep(5 * time.Second)
		if b := a.build(id, n); b["status"] != "queued" {
			t.Fatalf("with build.queued dropped the build is %v, want queued", b["status"])
		}
		b = a.waitBuildPinging(id, n, 4*time.Minute)
		a.wantStatus(b, "succeeded", "")
	})

	t.Run("limits", func(t *testing.T) {
		// The dispatcher makes the pods and the reporter classifies their
		// ends with the same limits: both restart with these.
		restart := func(vars map[string]string) {
			d.startRole("slipway-dispatcher", vars)
			d.startRole("slipway-reporter", vars)
		}
		defer restart(nil)

		t.Run("OOM fails with reason oom", func(t *testing.T) {
			a := a.with(t)
			restart(map[string]string{"SLIPWAY_BUILD_MEMORY": "200Mi"})
			id := a.image("team/oom", local("FROM "+base+"\nRUN head -c 400000000 /dev/zero | tr '\\0' a | sort > /dev/null\n"))
			b := a.buildAndWait(id, 2*time.Minute)
			a.wantStatus(b, "failed", "oom")
		})
		t.Run("the deadline fails with reason timeout", func(t *testing.T) {
			a := a.with(t)
			restart(map[string]string{"SLIPWAY_BUILD_TIMEOUT": "25s"})
			id := a.image("team/slow", local("FROM "+base+"\nRUN sleep 300\n"))
			b := a.buildAndWait(id, 2*time.Minute)
			a.wantStatus(b, "failed", "timeout")
		})
		t.Run("an unschedulable pod fails with a clear reason within its deadline", func(t *testing.T) {
			a := a.with(t)
			// Build pods request what they need, not their limit: ask for
			// more memory than any node has.
			restart(map[string]string{"SLIPWAY_BUILD_TIMEOUT": "30s", "SLIPWAY_BUILD_MEMORY": "1000Gi", "SLIPWAY_BUILD_MEMORY_REQUEST": "1000Gi"})
			id := a.image("team/huge", local("FROM "+base+"\nRUN true\n"))
			start := time.Now()
			b := a.buildAndWaitPinging(id, 2*time.Minute)
			a.wantStatus(b, "failed", "")
			msg := fmt.Sprint(b["failure"])
			if !strings.Contains(strings.ToLower(msg), "schedul") {
				t.Errorf("the failure does not say the pod could not be scheduled: %s", msg)
			}
			if took := time.Since(start); took > 30*time.Second+90*time.Second {
				t.Errorf("it failed after %s, long past its 30s deadline", took)
			}
		})
	})

	t.Run("RBAC: every call of every role is allowed, every right is used", func(t *testing.T) {
		checkRBAC(t, d)
	})
}

func local(dockerfile string) map[string]any {
	return map[string]any{"type": "local", "dockerfile": dockerfile}
}

func portOf(t *testing.T, raw string) int {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// apiClient speaks to the api role as a user.
type apiClient struct {
	t     *testing.T
	d     *deployment
	token string
}

func (a *apiClient) with(t *testing.T) *apiClient { c := *a; c.t = t; return &c }

func (a *apiClient) issue(subject string) string {
	tok, err := a.d.issuer.Issue(subject, 2*time.Hour)
	if err != nil {
		a.t.Fatal(err)
	}
	return tok
}

func (a *apiClient) do(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.d.serviceURL("slipway-api")+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	if m == nil {
		m = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, m
}

func (a *apiClient) image(name string, ctx map[string]any) string {
	a.t.Helper()
	code, m := a.do("POST", "/api/v1/workspaces/ws1/images", map[string]any{"name": name, "description": "cluster test", "context": ctx})
	if code != http.StatusCreated {
		a.t.Fatalf("creating image %s: %d %v", name, code, m)
	}
	return m["id"].(string)
}

func (a *apiClient) startBuild(id string) map[string]any {
	a.t.Helper()
	code, m := a.do("POST", "/api/v1/images/"+id+"/builds", nil)
	if code != http.StatusAccepted {
		a.t.Fatalf("building %s: %d %v", id, code, m)
	}
	return m
}

func (a *apiClient) build(id string, n int) map[string]any {
	a.t.Helper()
	code, m := a.do("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", id, n), nil)
	if code != http.StatusOK {
		a.t.Fatalf("build %s/%d: %d %v", id, n, code, m)
	}
	return m
}

func ended(b map[string]any) bool {
	s := b["status"]
	return s == "succeeded" || s == "failed" || s == "cancelled"
}

func (a *apiClient) waitBuild(id string, n int, d time.Duration) map[string]any {
	a.t.Helper()
	return a.waitBuildEvery(id, n, d, false)
}

// waitBuildPinging waits as waitBuild does, sending the PingSource's event
// every 10 seconds meanwhile (its schedule is every minute).
func (a *apiClient) waitBuildPinging(id string, n int, d time.Duration) map[string]any {
	a.t.Helper()
	return a.waitBuildEvery(id, n, d, true)
}

func (a *apiClient) waitBuildEvery(id string, n int, d time.Duration, ping bool) map[string]any {
	a.t.Helper()
	deadline := time.Now().Add(d)
	lastPing := time.Now()
	for {
		b := a.build(id, n)
		if ended(b) {
			return b
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("build %s/%d still %v after %s: %v\npod: %s", id, n, b["status"], d, b, a.podState(id, n))
		}
		if ping && time.Since(lastPing) > 10*time.Second {
			a.d.ping()
			lastPing = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (a *apiClient) buildAndWait(id string, d time.Duration) map[string]any {
	a.t.Helper()
	b := a.startBuild(id)
	return a.waitBuild(id, int(b["number"].(float64)), d)
}

func (a *apiClient) buildAndWaitPinging(id string, d time.Duration) map[string]any {
	a.t.Helper()
	b := a.startBuild(id)
	return a.waitBuildPinging(id, int(b["number"].(float64)), d)
}

// wantBases checks that build b recorded base as its one base, with a
// digest.
func (a *apiClient) wantBases(b map[string]any, base string) {
	a.t.Helper()
	ref, err := name.ParseReference(base)
	if err != nil {
		a.t.Fatal(err)
	}
	bases, _ := b["bases"].([]any)
	if len(bases) != 1 {
		a.t.Fatalf("bases %v, want %s", b["bases"], ref.Name())
	}
	got, _ := bases[0].(map[string]any)
	if d, _ := got["digest"].(string); got["ref"] != ref.Name() || !strings.HasPrefix(d, "sha256:") {
		a.t.Errorf("base %v, want %s with its digest", got, ref.Name())
	}
}

func (a *apiClient) wantStatus(b map[string]any, status, reason string) {
	a.t.Helper()
	if b["status"] != status {
		a.t.Fatalf("build ended %v, want %s: %v", b["status"], status, b)
	}
	if reason == "" {
		return
	}
	f, _ := b["failure"].(map[string]any)
	if f == nil || f["reason"] != reason {
		a.t.Fatalf("build failed with %v, want reason %s", b["failure"], reason)
	}
}

func (a *apiClient) log(id string, b map[string]any) string {
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/images/%s/builds/%v/log", a.d.serviceURL("slipway-api"), id, b["number"]), nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

// pull pulls the build's image back from the platform's registry and checks
// that it is the digest the build recorded.
func (a *apiClient) pull(b map[string]any) {
	a.t.Helper()
	ref, _ := b["reference"].(string)
	digest, _ := b["digest"].(string)
	if ref == "" || digest == "" {
		a.t.Fatalf("a succeeded build without reference or digest: %v", b)
	}
	tr, err := env.cluster.RegistryTransport()
	if err != nil {
		a.t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		a.t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithTransport(tr))
	if err != nil {
		a.t.Fatalf("pulling %s: %v", ref, err)
	}
	got, err := img.Digest()
	if err != nil || got.String() != digest {
		a.t.Fatalf("pulled %s, want %s (%v)", got, digest, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) < 1 {
		a.t.Fatalf("pulled %s: %d layers, %v", ref, len(layers), err)
	}
}

func (a *apiClient) podState(id string, n int) string {
	pod, err := env.cluster.Client.CoreV1().Pods(buildNS).Get(context.Background(), fmt.Sprintf("%s-%d", id, n), metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	b, _ := json.Marshal(pod.Status)
	return string(b)
}

func (a *apiClient) waitPodRunning(id string, n int, d time.Duration) {
	a.t.Helper()
	a.eventually("the build pod runs", d, func() bool {
		pod, err := env.cluster.Client.CoreV1().Pods(buildNS).Get(context.Background(), fmt.Sprintf("%s-%d", id, n), metav1.GetOptions{})
		return err == nil && pod.Status.Phase == "Running"
	})
}

// noPodLeft waits for the build's pod and Secret to be gone: deleted once
// the build is settled (its Secret collected with it).
func (a *apiClient) noPodLeft(id string, b map[string]any, d time.Duration) {
	a.t.Helper()
	name := fmt.Sprintf("%s-%v", id, b["number"])
	a.eventually("the build's pod and Secret are gone", d, func() bool {
		_, perr := env.cluster.Client.CoreV1().Pods(buildNS).Get(context.Background(), name, metav1.GetOptions{})
		_, serr := env.cluster.Client.CoreV1().Secrets(buildNS).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(perr) && apierrors.IsNotFound(serr) {
			return true
		}
		a.d.ping() // the reconciler deletes ended pods of settled builds
		time.Sleep(2 * time.Second)
		return false
	})
}

func (a *apiClient) eventually(what string, d time.Duration, f func() bool) {
	a.t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
