package dispatch

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
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
	digest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	extPass = "ext-registry-password-42"
)

type clusterHarness struct {
	c      *Cluster
	s      store.Store
	client *fake.Clientset
	events *published
}

func newClusterHarness(t *testing.T) *clusterHarness {
	s := logStore(t) // ws1 (owner alice), image img1 "team/log" with build 1 queued
	ctx := context.Background()
	box, err := secret.LoadBox(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := box.Seal(extPass)
	s.PutCredential(ctx, store.Credential{Workspace: "ws1", Name: "ext", Kind: "registry", Registry: "ext.example.com", Username: "u", Secret: sealed})
	img, _ := s.GetImage(ctx, "img1")
	next := img
	next.Destinations = []image.Destination{{Reference: "ext.example.com/team/log:v1", Credential: "ext"}}
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
		Store: s, Events: ev, Secrets: box, Registry: "registry.example.com",
		Limits: build.Limits{MemoryBytes: 1 << 30, Timeout: time.Hour}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, pods, get)
	return &clusterHarness{c: c, s: s, client: client, events: ev}
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
	if !strings.Contains(args, "--destination registry.example.com/team/log:latest") || !strings.Contains(args, "--destination ext.example.com/team/log:v1") {
		t.Fatalf("kaniko args: %s", args)
	}
	// The per-build secret carries the destination's credential; the pod spec does not.
	sec, err := h.client.CoreV1().Secrets(ns).Get(ctx, "img1-1", metav1.GetOptions{})
	if err != nil || !strings.Contains(string(sec.Data[corev1.DockerConfigJsonKey]), "ext.example.com") {
		t.Fatalf("build secret: %v %v", sec, err)
	}
	raw, _ := json.Marshal(pod)
	if strings.Contains(string(raw), extPass) {
		t.Fatal("the pod spec carries a registry password")
	}
	// The pod succeeds: the reporter settles the build, once.
	done := ended(pod, corev1.PodSucceeded, 0, "Completed", digest)
	report := h.c.Handlers("reporter")["dev.knative.apiserver.resource.update"]
	for range 2 {
		if err := report(ctx, podEvent(t, done)); err != nil {
			t.Fatal(err)
		}
	}
	b := h.build(t, 1)
	if b.Status != build.Succeeded || *b.Digest != digest || *b.Reference != "registry.example.com/team/log@"+digest || len(b.Pushes) != 2 {
		t.Fatalf("after the pod succeeded: %+v", b)
	}
	if h.events.count(events.BuildSucceeded) != 1 {
		t.Fatalf("%d succeeded events for one build", h.events.count(events.BuildSucceeded))
	}
	// Build 1 was queued before the destination was added: destinations
	// are not part of the build definition, so the image is built, with a
	// reference.
	img, _ := h.s.GetImage(ctx, "img1")
	if img.Status() != image.StatusBuilt || img.Reference != *b.Reference || img.Built == nil {
		t.Fatalf("image after the build: %s %s", img.Status(), img.Reference)
	}
	if log, _ := h.s.ReadLog(ctx, "img1", 1, 0); string(log) != "fake logs" {
		t.Fatalf("build log %q, want the pod's", log)
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
	p := ended(h.pod(t, "img1-2"), corev1.PodSucceeded, 0, "Completed", digest)
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
