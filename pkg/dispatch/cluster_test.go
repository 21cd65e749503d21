package dispatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/rebuild"
	"github.com/slipway-dev/slipway/pkg/runner/kube"
	"github.com/slipway-dev/slipway/pkg/secret"
	"github.com/slipway-dev/slipway/pkg/store"
)

// The cluster roles run against client-go's fake clientset (no Kubernetes
// API server runs on these machines) and a real SQLite store.

// published records the events the roles emit.
type published struct {
	mu    sync.Mutex
	types []string
}

func (p *published) Publish(typ, subject string, data any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.types = append(p.types, typ)
}

func (p *published) count(typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.types {
		if t == typ {
			n++
		}
	}
	return n
}

const (
	ns      = "slipway-builds"
	extPass = "ext-registry-password-42"
)

type clusterHarness struct {
	c      *Cluster
	s      store.Store
	client *fake.Clientset
	events *published
	// internal is the internal registry, ext the destination's registry:
	// both real registries (go-containerregistry's) on loopback; ext asks
	// for the user "u" with extPass. digest is the image the build pods
	// "pushed" to internal (team/log:latest).
	internal, ext string
	extPushes     *atomic.Int32 // manifests ext accepted
	digest        string
	box           *secret.Box
}

// loopbackRegistry serves a real registry on loopback; with a password it
// answers 401 to requests without user "u" and that password, as a
// private registry does. It counts the manifests it accepted.
func loopbackRegistry(t *testing.T, password string) (host string, manifests *atomic.Int32) {
	t.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	manifests = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if password != "" {
			if u, p, ok := r.BasicAuth(); !ok || u != "u" || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && rec.Code == http.StatusCreated {
			manifests.Add(1)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), manifests
}

func newClusterHarness(t *testing.T) *clusterHarness {
	s := logStore(t) // ws1 (owner alice), image img1 "team/log" with build 1 queued
	ctx := context.Background()
	box, err := secret.LoadBox(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	internal, _ := loopbackRegistry(t, "")
	ext, extPushes := loopbackRegistry(t, extPass)
	// What a build pod would have pushed to the internal registry.
	built, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, internal+"/team/log:latest"), built); err != nil {
		t.Fatal(err)
	}
	d, _ := built.Digest()
	sealed, _ := box.Seal(extPass)
	s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "ext", Kind: "registry", Registry: ext, Username: "u", Secret: sealed})
	img, _ := s.GetImage(ctx, "img1")
	next := img
	next.Destinations = []image.Destination{{Reference: ext + "/team/log:v1", Credential: "ext"}}
	img.Edit(next, "alice", time.Now())
	if err := s.UpdateImage(ctx, img, 1); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	pods, err := kube.New(client, kube.Options{Namespace: ns, KanikoImage: "kaniko:v1", InitImage: "slipway:v1"})
	if err != nil {
		t.Fatal(err)
	}
	get := func(ctx context.Context, id string) (*corev1.Pod, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, id, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return p, err
	}
	ev := &published{}
	c := NewCluster(Options{
		Store: s, Events: ev, Secrets: box, Registry: internal,
		Limits: build.Limits{MemoryBytes: 1 << 30, Timeout: time.Hour}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, pods, get)
	return &clusterHarness{c: c, s: s, client: client, events: ev, internal: internal, ext: ext, extPushes: extPushes, digest: d.String(), box: box}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func buildEvent(t *testing.T, typ, imageID string, n int) cloudevents.Event {
	e, err := events.New(typ, imageID, map[string]any{"image": imageID, "number": n})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func podEvent(t *testing.T, pod *corev1.Pod) cloudevents.Event {
	e, err := events.New("dev.knative.apiserver.resource.update", pod.Name, pod)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (h *clusterHarness) pod(t *testing.T, id string) *corev1.Pod {
	p, err := h.client.CoreV1().Pods(ns).Get(context.Background(), id, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("pod %s: %v", id, err)
	}
	return p
}

func (h *clusterHarness) build(t *testing.T, n int) build.Build {
	b, err := h.s.GetBuild(context.Background(), "img1", n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ended(p *corev1.Pod, phase corev1.PodPhase, exit int32, reason, msg string) *corev1.Pod {
	p = p.DeepCopy()
	p.Status.Phase = phase
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "kaniko", State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: reason, Message: msg}}}}
	return p
}

func TestClusterBuildLifecycle(t *testing.T) {
	h := newClusterHarness(t)
	ctx := context.Background()
	handlers := h.c.Handlers("dispatcher")
	queued := buildEvent(t, events.BuildQueued, "img1", 1)
	for range 2 { // delivered twice: one start, one pod
		if err := handlers[events.BuildQueued](ctx, queued); err != nil {
			t.Fatal(err)
		}
	}
	if b := h.build(t, 1); b.Status != build.Running || h.events.count(events.BuildStarted) != 1 {
		t.Fatalf("after queued: %s, %d started events", b.Status, h.events.count(events.BuildStarted))
	}
	pod := h.pod(t, "img1-1")
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--destination "+h.internal+"/team/log:latest") || strings.Contains(args, h.ext) {
		t.Fatalf("kaniko args: the pod pushes to the internal registry alone: %s", args)
	}
	// No destination credential is in the pod's docker config (the build's
	// Secret) nor in its spec: the reporter pushes to the destination.
	sec, err := h.client.CoreV1().Secrets(ns).Get(ctx, "img1-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("build secret: %v", err)
	}
	if cfg := string(sec.Data[corev1.DockerConfigJsonKey]); strings.Contains(cfg, h.ext) || strings.Contains(cfg, extPass) ||
		strings.Contains(cfg, base64.StdEncoding.EncodeToString([]byte("u:"+extPass))) {
		t.Fatalf("the build's docker config holds the destination's credential: %s", cfg)
	}
	raw, _ := json.Marshal(pod)
	if strings.Contains(string(raw), extPass) || strings.Contains(string(raw), h.ext) {
		t.Fatal("the pod spec names the destination or carries its password")
	}
	// The pod succeeds: the reporter pushes to the destination and settles
	// the build, once, though the event comes twice.
	done := ended(pod, corev1.PodSucceeded, 0, "Completed", h.digest)
	report := h.c.Handlers("reporter")["dev.knative.apiserver.resource.update"]
	for range 2 {
		if err := report(ctx, podEvent(t, done)); err != nil {
			t.Fatal(err)
		}
	}
	b := h.build(t, 1)
	if b.Status != build.Succeeded || *b.Digest != h.digest || *b.Reference != h.internal+"/team/log@"+h.digest || len(b.Pushes) != 2 ||
		b.Pushes[1].Reference != h.ext+"/team/log:v1" || b.Pushes[1].Status != build.PushPushed || b.Pushes[1].At == nil {
		t.Fatalf("after the pod succeeded: %+v", b)
	}
	if h.events.count(events.BuildSucceeded) != 1 || h.extPushes.Load() != 1 {
		t.Fatalf("%d succeeded events, %d pushes to the destination for one build", h.events.count(events.BuildSucceeded), h.extPushes.Load())
	}
	pushed, err := remote.Image(mustRef(t, h.ext+"/team/log:v1"), remote.WithAuth(&authn.Basic{Username: "u", Password: extPass}))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pushed.Digest(); d.String() != h.digest {
		t.Fatalf("the destination has %s, the build made %s", d, h.digest)
	}
	// Build 1 was queued before the destination was added: destinations
	// are not part of the build definition, so the image is built, with a
	// reference.
	img, _ := h.s.GetImage(ctx, "img1")
	if img.Status() != image.StatusBuilt || img.Reference != *b.Reference || img.Built == nil {
		t.Fatalf("image after the build: %s %s", img.Status(), img.Reference)
	}
	if log, _ := h.s.ReadLog(ctx, "img1", 1, 0); !strings.HasPrefix(string(log), "fake logs") || strings.Count(string(log), "[slipway] pushing to "+h.ext) != 1 {
		t.Fatalf("build log %q, want the pod's and one push", log)
	}

	// Build 2 runs out of memory.
	if _, err := h.s.CreateBuild(ctx, build.New("img1", img.DefinitionRev, "alice", build.TriggerManual, time.Now())); err != nil {
		t.Fatal(err)
	}
	handlers[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 2))
	report(ctx, podEvent(t, ended(h.pod(t, "img1-2"), corev1.PodFailed, 137, "OOMKilled", "")))
	if b := h.build(t, 2); b.Status != build.Failed || b.Failure.Reason != build.ReasonOOM {
		t.Fatalf("OOM build: %+v", b.Failure)
	}
	if img, _ := h.s.GetImage(ctx, "img1"); img.Reference != *h.build(t, 1).Reference {
		t.Fatal("a failed build changed the image's reference")
	}

	// Build 3 is cancelled: its pod goes.
	h.s.CreateBuild(ctx, build.New("img1", img.DefinitionRev, "alice", build.TriggerManual, time.Now()))
	handlers[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 3))
	h.s.UpdateBuild(ctx, "img1", 3, func(b *build.Build) error { return b.Cancel("alice", time.Now()) })
	if err := handlers[events.BuildCancelled](ctx, buildEvent(t, events.BuildCancelled, "img1", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CoreV1().Pods(ns).Get(ctx, "img1-3", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the cancelled build's pod: %v", err)
	}
}

func TestClusterReconciler(t *testing.T) {
	h := newClusterHarness(t)
	h.c.Grace = 0
	ctx := context.Background()
	ping := h.c.Handlers("reconciler")["dev.knative.sources.ping"]
	// A queued build whose event was lost is dispatched.
	if err := ping(ctx, cloudevents.NewEvent()); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 1); b.Status != build.Running {
		t.Fatalf("lost queued build: %s", b.Status)
	}
	h.pod(t, "img1-1")
	// Its pod is deleted by someone, and the delete event is lost: interrupted.
	h.client.CoreV1().Pods(ns).Delete(ctx, "img1-1", metav1.DeleteOptions{})
	time.Sleep(time.Millisecond)
	if err := ping(ctx, cloudevents.NewEvent()); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 1); b.Status != build.Failed || b.Failure.Reason != build.ReasonInterrupted {
		t.Fatalf("build without a pod: %+v", b.Failure)
	}
	// A pod that ended while its event was lost is settled from the pod.
	img, _ := h.s.GetImage(ctx, "img1")
	h.s.CreateBuild(ctx, build.New("img1", img.DefinitionRev, "alice", build.TriggerManual, time.Now()))
	h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 2))
	p := ended(h.pod(t, "img1-2"), corev1.PodSucceeded, 0, "Completed", h.digest)
	h.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	time.Sleep(time.Millisecond)
	if err := ping(ctx, cloudevents.NewEvent()); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 2); b.Status != build.Succeeded {
		t.Fatalf("build whose pod ended unseen: %s", b.Status)
	}
	// The next ping deletes the settled build's pod.
	if err := ping(ctx, cloudevents.NewEvent()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CoreV1().Pods(ns).Get(ctx, "img1-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("ended pod of a settled build: %v", err)
	}
}

func TestClusterMalformedEvents(t *testing.T) {
	h := newClusterHarness(t)
	bad, _ := events.New(events.BuildQueued, "x", map[string]any{"nothing": true})
	if err := h.c.OnQueued(context.Background(), bad); err == nil {
		t.Fatal("a queued event without a build was accepted")
	}
	notPod, _ := events.New("dev.knative.apiserver.resource.update", "x", "not a pod")
	if err := h.c.OnPod(context.Background(), notPod); err == nil {
		t.Fatal("a pod event without a pod was accepted")
	}
}

// TestClusterReporterPublishes: the reporter's pushes to an external
// destination, with a real destination registry on loopback. A destination
// that refuses leaves the build succeeded with that push failed; pushes
// another reporter has claimed are not pushed again until the claim lapses;
// a destination that never answers is cut off at the reporter's bound.
func TestClusterReporterPublishes(t *testing.T) {
	h := newClusterHarness(t)
	ctx := context.Background()
	wrong, _ := h.box.Seal("not-the-password")
	h.s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "ext", Kind: "registry", Registry: h.ext, Username: "u", Secret: wrong})
	dispatch := h.c.Handlers("dispatcher")[events.BuildQueued]
	report := h.c.Handlers("reporter")["dev.knative.apiserver.resource.update"]
	dispatch(ctx, buildEvent(t, events.BuildQueued, "img1", 1))
	done := podEvent(t, ended(h.pod(t, "img1-1"), corev1.PodSucceeded, 0, "Completed", h.digest))

	// Another reporter (an earlier delivery of the same event) is pushing.
	now := time.Now().UTC()
	if _, err := h.s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error {
		return b.ClaimPushes([]build.Push{{Reference: h.internal + "/team/log:latest"}, {Reference: h.ext + "/team/log:v1"}}, time.Hour, now)
	}); err != nil {
		t.Fatal(err)
	}
	if err := report(ctx, done); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 1); b.Status != build.Running || b.Pushes[1].Status != build.PushPushing || h.events.count(events.BuildSucceeded) != 0 {
		t.Fatalf("a redelivered event pushed or settled while the pushes were claimed: %+v", b)
	}
	// That reporter died: once its claim lapses, the next report (the
	// reconciler's) pushes and settles.
	h.c.o.Now = func() time.Time { return time.Now().UTC().Add(h.c.PushBound + 2*time.Minute) }
	if err := report(ctx, done); err != nil {
		t.Fatal(err)
	}
	b := h.build(t, 1)
	if b.Status != build.Succeeded || b.Failure != nil || *b.Digest != h.digest || len(b.Pushes) != 2 || b.Pushes[0].Status != build.PushPushed ||
		b.Pushes[1].Status != build.PushFailed || b.Pushes[1].Error == nil || !strings.Contains(*b.Pushes[1].Error, "401 Unauthorized") {
		msg := ""
		if b.Pushes[1].Error != nil {
			msg = *b.Pushes[1].Error
		}
		t.Fatalf("build whose destination refused: %+v %s", b, msg)
	}
	if strings.Contains(*b.Pushes[1].Error, "not-the-password") {
		t.Fatal("the push error shows the credential")
	}
	if img, _ := h.s.GetImage(ctx, "img1"); img.Reference != *b.Reference || img.Built == nil {
		t.Fatalf("the image after a refused destination: %+v", img)
	}
	if err := report(ctx, done); err != nil || h.events.count(events.BuildSucceeded) != 1 || h.extPushes.Load() != 0 {
		t.Fatalf("redelivered after settling: %v, %d succeeded events, %d manifests pushed", err, h.events.count(events.BuildSucceeded), h.extPushes.Load())
	}

	// A destination that accepts connections and never answers.
	h.c.o.Now = func() time.Time { return time.Now().UTC() }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	img, _ := h.s.GetImage(ctx, "img1")
	next := img
	next.Destinations = []image.Destination{{Reference: ln.Addr().String() + "/team/log:v1"}}
	was := img.Version
	img.Edit(next, "alice", time.Now())
	if err := h.s.UpdateImage(ctx, img, was); err != nil {
		t.Fatal(err)
	}
	newBuild(t, h)
	dispatch(ctx, buildEvent(t, events.BuildQueued, "img1", 2))
	h.c.PushBound = 2 * time.Second
	begun := time.Now()
	if err := report(ctx, podEvent(t, ended(h.pod(t, "img1-2"), corev1.PodSucceeded, 0, "Completed", h.digest))); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begun)
	b = h.build(t, 2)
	if b.Status != build.Succeeded || b.Pushes[1].Status != build.PushFailed || !strings.Contains(*b.Pushes[1].Error, "time limit") {
		t.Fatalf("build whose destination hangs: %+v", b)
	}
	t.Logf("the hanging destination was cut off after %s (bound %s)", took.Round(100*time.Millisecond), h.c.PushBound)
}

// A git build's Dockerfile is read in its pod only: its init container
// says the bases (kube.BasesOf), and the reporter records them with the
// digests they have in the (real, loopback) registry while the build runs,
// once; a line that is not a reference is left out.
func TestClusterRecordsThePodsBases(t *testing.T) {
	h := newClusterHarness(t)
	ctx := context.Background()
	queued := buildEvent(t, events.BuildQueued, "img1", 1)
	if err := h.c.Handlers("dispatcher")[events.BuildQueued](ctx, queued); err != nil {
		t.Fatal(err)
	}
	h.c.o.Bases = &rebuild.Registry{Store: h.s, Secrets: h.box, Internal: h.internal, InsecureInternal: true}
	pod := h.pod(t, "img1-1").DeepCopy()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "fetch-context", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Message: "commit " + strings.Repeat("a", 40) + "\nbase " + h.internal + "/team/log:latest\nbase NOT/A/REF!\n"}}}}
	report := h.c.Handlers("reporter")["dev.knative.apiserver.resource.update"]
	if err := report(ctx, podEvent(t, pod)); err != nil {
		t.Fatal(err)
	}
	want := []build.Base{{Ref: h.internal + "/team/log:latest", Digest: h.digest}}
	if b := h.build(t, 1); b.Status != build.Running || !slices.Equal(b.Bases, want) {
		t.Fatalf("after the init container ended: %s, bases %+v, want %+v", b.Status, b.Bases, want)
	}
	// The base moves; the pod ends: the bases recorded at the start stay.
	moved, _ := random.Image(128, 1)
	if err := remote.Write(mustRef(t, h.internal+"/team/log:latest"), moved); err != nil {
		t.Fatal(err)
	}
	done := ended(pod, corev1.PodSucceeded, 0, "Completed", h.digest)
	done.Status.InitContainerStatuses = pod.Status.InitContainerStatuses
	if err := report(ctx, podEvent(t, done)); err != nil {
		t.Fatal(err)
	}
	if b := h.build(t, 1); b.Status != build.Succeeded || !slices.Equal(b.Bases, want) {
		t.Fatalf("after the pod ended: %s, bases %+v, want %+v", b.Status, b.Bases, want)
	}
}
