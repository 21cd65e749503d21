package dispatch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/runner/kube"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// calls records the Kubernetes API calls a role's code makes, as RBAC
// names them: "verb resource" or "verb resource/subresource". It is a
// reactor of the fake clientset; against a real API server the same calls
// are checked with each role's own ServiceAccount token.
type calls struct {
	mu     sync.Mutex
	set    map[string]bool
	paused bool
}

// aside runs the test's own calls unrecorded.
func (c *calls) aside(f func()) {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.paused = false; c.mu.Unlock() }()
	f()
}

func record(h *clusterHarness) *calls {
	c := &calls{set: map[string]bool{}}
	note := func(a k8stesting.Action) {
		res := a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			res += "/" + sub
		}
		if a.GetNamespace() != ns {
			res += " in " + a.GetNamespace()
		}
		c.mu.Lock()
		if !c.paused {
			c.set[a.GetVerb()+" "+res] = true
		}
		c.mu.Unlock()
	}
	h.client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		note(a)
		return false, nil, nil
	})
	h.client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		note(a)
		return false, nil, nil
	})
	return c
}

func (c *calls) rights() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// exercises drive every code path of each role that speaks to Kubernetes.
// Each returns the calls of the role alone.
var exercises = map[string]func(t *testing.T, h *clusterHarness) *calls{
	"dispatcher": func(t *testing.T, h *clusterHarness) *calls {
		rec := record(h)
		ctx := context.Background()
		on := h.c.Handlers("dispatcher")
		queued := buildEvent(t, events.BuildQueued, "img1", 1)
		on[events.BuildQueued](ctx, queued)
		on[events.BuildQueued](ctx, queued) // redelivered: the pod exists
		h.s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Cancel("alice", time.Now()) })
		on[events.BuildCancelled](ctx, buildEvent(t, events.BuildCancelled, "img1", 1))
		// The Secret cannot be created: the pod goes again.
		newBuild(t, h)
		h.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is away"))
		})
		on[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 2))
		return rec
	},
	"reporter": func(t *testing.T, h *clusterHarness) *calls {
		ctx := context.Background()
		h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 1))
		rec := record(h) // only what the reporter does
		report := h.c.Handlers("reporter")["dev.knative.apiserver.resource.update"]
		var pod *corev1.Pod
		rec.aside(func() { pod = ended(h.pod(t, "img1-1"), corev1.PodSucceeded, 0, "Completed", h.digest) })
		if err := report(ctx, podEvent(t, pod)); err != nil {
			t.Fatal(err)
		}
		return rec
	},
	"reconciler": func(t *testing.T, h *clusterHarness) *calls {
		rec := record(h)
		ctx := context.Background()
		h.c.Grace = 0
		ping := h.c.Handlers("reconciler")["dev.knative.sources.ping"]
		ping(ctx, cloudevents.NewEvent()) // a lost build.queued: the pod is created
		// The secret cannot be created for a second lost one: the pod goes.
		h.s.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Fail(build.ReasonInternal, "x", time.Now()) })
		newBuild(t, h)
		h.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is away"))
		})
		ping(ctx, cloudevents.NewEvent())
		h.client.ReactionChain = h.client.ReactionChain[1:]
		// A running build whose pod ended unseen is settled from the pod,
		// its log read and redacted; then its pod is cleaned up.
		newBuild(t, h)
		ping(ctx, cloudevents.NewEvent())
		rec.aside(func() {
			h.client.CoreV1().Pods(ns).UpdateStatus(ctx, ended(h.pod(t, "img1-3"), corev1.PodSucceeded, 0, "Completed", h.digest), metav1.UpdateOptions{})
		})
		time.Sleep(time.Millisecond)
		ping(ctx, cloudevents.NewEvent())
		ping(ctx, cloudevents.NewEvent())
		return rec
	},
}

// newBuild queues the image's next build.
func newBuild(t *testing.T, h *clusterHarness) build.Build {
	t.Helper()
	img, err := h.s.GetImage(context.Background(), "img1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.s.CreateBuild(context.Background(), build.New("img1", img.DefinitionRev, "alice", build.TriggerManual, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoleRightsAreWhatTheirCodeCalls derives each cluster role's
// Kubernetes rights from the calls its code makes, and compares them both
// ways with the Role bound to its ServiceAccount in infra/base/rbac.yaml and
// with the table in infra/README.md: no right missing, none unused.
func TestRoleRightsAreWhatTheirCodeCalls(t *testing.T) {
	granted := infraRights(t)
	readme := readmeRights(t)
	derived := map[string][]string{}
	for role, exercise := range exercises {
		derived[role] = exercise(t, newClusterHarness(t)).rights()
	}
	derived["api"] = apiCalls(t)
	derived["receiver"] = nil // it speaks to no Kubernetes API
	for role, want := range derived {
		got := granted["slipway-"+role]
		for _, r := range want {
			if !slices.Contains(got, r) {
				t.Errorf("role %s calls %q, which infra/base/rbac.yaml does not grant it", role, r)
			}
		}
		for _, r := range got {
			if !slices.Contains(want, r) {
				t.Errorf("infra/base/rbac.yaml grants role %s %q, which its code never calls", role, r)
			}
		}
		if table := readme[role]; table != summary(want) {
			t.Errorf("infra/README.md says role %s has rights %q; its code calls %q", role, table, summary(want))
		}
	}
	for sa := range granted {
		if role, _ := strings.CutPrefix(sa, "slipway-"); derived[role] == nil && sa != "slipway-pod-watcher" {
			t.Errorf("ServiceAccount %s holds rights no role's code uses", sa)
		}
	}
}

// apiCalls are the calls of the api role: following a running build's log.
func apiCalls(t *testing.T) []string {
	h := newClusterHarness(t)
	ctx := context.Background()
	h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 1))
	h.client.CoreV1().Pods(ns).UpdateStatus(ctx, runningPod(h.pod(t, "img1-1")), metav1.UpdateOptions{})
	rec := record(h)
	var out bytes.Buffer
	if _, err := h.c.pods.(*kube.Runner).Follow(ctx, "img1-1", 0, &out); err != nil {
		t.Fatal(err)
	}
	if out.Len() == 0 {
		t.Fatal("following a running build's log wrote nothing")
	}
	return rec.rights()
}

func runningPod(p *corev1.Pod) *corev1.Pod {
	p = p.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "kaniko", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	return p
}

// summary writes rights as infra/README.md's table does: per resource, its
// verbs, "pods create/get, pods/log get"; "none" for none.
func summary(rights []string) string {
	verbs := map[string][]string{}
	for _, r := range rights {
		verb, res, _ := strings.Cut(r, " ")
		verbs[res] = append(verbs[res], verb)
	}
	if len(verbs) == 0 {
		return "none"
	}
	var parts []string
	for res, vs := range verbs {
		sort.Strings(vs)
		parts = append(parts, res+" "+strings.Join(vs, "/"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// infraRights reads infra/base/rbac.yaml: each ServiceAccount's rights in
// the build namespace, "verb resource", through its RoleBindings.
func infraRights(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "infra", "base", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]rbacv1.Role{}
	var bindings []rbacv1.RoleBinding
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(raw), -1) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			roles[r.Namespace+"/"+r.Name] = r
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			bindings = append(bindings, b)
		case "":
		default:
			t.Fatalf("rbac.yaml holds a %s", meta.Kind)
		}
	}
	out := map[string][]string{}
	for _, b := range bindings {
		r, ok := roles[b.Namespace+"/"+b.RoleRef.Name]
		if !ok || b.RoleRef.Kind != "Role" {
			t.Fatalf("RoleBinding %s binds %s %s, not a Role of rbac.yaml", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			for _, rule := range r.Rules {
				if !slices.Equal(rule.APIGroups, []string{""}) || len(rule.ResourceNames) > 0 {
					t.Errorf("Role %s: rule %v is not of the core group alone", r.Name, rule)
				}
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						right := v + " " + res
						if r.Namespace != ns {
							right += " in " + r.Namespace
						}
						if !slices.Contains(out[s.Name], right) {
							out[s.Name] = append(out[s.Name], right)
						}
					}
				}
			}
		}
	}
	return out
}

// readmeRights reads the rights column of infra/README.md's roles table.
func readmeRights(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "infra", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\| (\w+)(?: \(public\))? \| [^|]* \| ([^|]*) \|$`).FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = strings.TrimSpace(m[2])
	}
	if len(out) == 0 {
		t.Fatal("no roles table in infra/README.md")
	}
	return out
}

// TestClusterReconcilerGoesOnAfterAnError checks that one failing item
// does not stop the pass: a build whose pod cannot be read is reported, and
// the ended pod of another build is still cleaned up.
func TestClusterReconcilerGoesOnAfterAnError(t *testing.T) {
	h := newClusterHarness(t)
	h.c.Grace = 0
	ctx := context.Background()
	h.c.Handlers("dispatcher")[events.BuildQueued](ctx, buildEvent(t, events.BuildQueued, "img1", 1))
	if err := h.s.CreateImage(ctx, storetest.NewImage("img2", "ws1", "team/other")); err != nil {
		t.Fatal(err)
	}
	// An ended pod whose build is gone with its image.
	left := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "img9-1", Namespace: ns, Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy}},
		Status: corev1.PodStatus{Phase: corev1.PodFailed}}
	if _, err := h.client.CoreV1().Pods(ns).Create(ctx, left, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == "img1-1" {
			return true, nil, apierrors.NewServiceUnavailable("the API server is busy")
		}
		return false, nil, nil
	})
	time.Sleep(time.Millisecond)
	err := h.c.OnPing(ctx, cloudevents.NewEvent())
	if err == nil || !strings.Contains(err.Error(), "img1-1") {
		t.Errorf("OnPing = %v, want the error about img1-1", err)
	}
	if _, err := h.client.CoreV1().Pods(ns).Get(ctx, "img9-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the ended pod was not cleaned up after another build's error (get: %v)", err)
	}
	if b := h.build(t, 1); b.Status != build.Running {
		t.Errorf("build 1 is %s, want running still: its pod could not be read", b.Status)
	}
}
