// Package kube is the cluster's build runner: each build is one Kaniko pod
// in the build namespace, created with client-go.
//
// A build pod is named after its build (spec.ID), so creating it again is a
// no-op, and labelled LabelManagedBy=ManagedBy, LabelImage and LabelBuild.
// What it must not show in its spec — registry credentials, a git token, the
// Dockerfile of a local context — lives in a per-build Secret of the same
// name, owned by the pod, so that deleting the pod garbage-collects it.
//
// The pod runs Kaniko as root with a handful of capabilities, no privilege
// escalation, the runtime's default seccomp profile, no service account
// token, no service links and no host namespaces; it requests
// Options.CPURequest and Options.MemoryRequest (at most its limits), is
// limited to Limits.MemoryBytes and Limits.CPUs, and its life to
// Limits.Timeout (activeDeadlineSeconds from its start on a node; a pod
// that no node takes fails too, see OutcomeOf). A git context is fetched
// by an init container (InitImage, `slipway fetch-context`) into the emptyDir
// /workspace; that container writes the commit it fetched to its
// termination message. A local context is its Dockerfile alone, mounted
// from the Secret. Kaniko writes the image's digest to its termination
// message. OutcomeOf reads both.
//
// Two ways to follow a build: Run (and RunWith) create the pod, watch it
// until it ends, copy its log and delete it, like the runc runner; or Create
// starts it, and Report, called on every change of the pod that the
// cluster's ApiServerSource delivers, tells when it has ended and how.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/secret"
)

// Defaults of Options.
const (
	DefaultNamespace    = "slipway-builds"
	DefaultStartTimeout = 2 * time.Minute
	DefaultLogCap       = 4 << 20
	// DefaultCPURequest and DefaultMemoryRequest are what a build pod
	// requests of a node, at most its limits: a quarter of a core and
	// 512 MiB place a build on a small node; it may use up to its limits
	// there when the node has them free.
	DefaultCPURequest    = 0.25
	DefaultMemoryRequest = 512 << 20
)

const (
	// apiTimeout bounds the API calls made without a caller's context
	// (Leftovers, Cleanup) or after it ended (deleting a cancelled build).
	apiTimeout = 30 * time.Second
	// watchTimeout is how long one watch of a build pod lasts before Run
	// looks at the pod afresh: a start that takes too long is noticed even
	// when the pod does not change.
	watchTimeout = time.Minute
)

// Options configure a Runner.
type Options struct {
	// Namespace holds the build pods; DefaultNamespace when empty.
	Namespace string
	// KanikoImage is the Kaniko executor's image (built from the tools
	// module's pin).
	KanikoImage string
	// InitImage is Slipway's own image, whose init container fetches git
	// contexts (`slipway fetch-context`).
	InitImage string
	// StartTimeout is how long a container of a build pod may keep failing
	// to start (its image cannot be pulled, say) before OutcomeOf gives the
	// build up with an Outcome.Problem; DefaultStartTimeout when zero.
	StartTimeout time.Duration
	// LogCap bounds the log Report returns, in bytes; DefaultLogCap when
	// zero.
	LogCap int
	// CPURequest (cores) and MemoryRequest (bytes) are what each container
	// of a build pod requests, each at most the build's limit;
	// DefaultCPURequest and DefaultMemoryRequest when zero.
	CPURequest    float64
	MemoryRequest int64
}

// Runner runs builds as pods. Its methods are safe for concurrent use.
type Runner struct {
	client kubernetes.Interface
	opts   Options
	now    func() time.Time
}

var _ build.Runner = (*Runner)(nil)

// New returns a Runner that creates build pods with client.
func New(client kubernetes.Interface, opts Options) (*Runner, error) {
	if client == nil {
		return nil, errors.New("kube: no Kubernetes client")
	}
	if opts.KanikoImage == "" {
		return nil, errors.New("kube: no Kaniko image given")
	}
	if opts.InitImage == "" {
		return nil, errors.New("kube: no init image (Slipway's) given")
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.LogCap <= 0 {
		opts.LogCap = DefaultLogCap
	}
	if opts.CPURequest <= 0 {
		opts.CPURequest = DefaultCPURequest
	}
	if opts.MemoryRequest <= 0 {
		opts.MemoryRequest = DefaultMemoryRequest
	}
	return &Runner{client: client, opts: opts, now: time.Now}, nil
}

// Create starts spec's build from src: it creates the build pod, then the
// build's Secret owned by it. Creating the pod first lets the Secret carry
// its owner from the start, so no Secret is ever left without one, and
// needs no right to update Secrets; the kubelet waits for the Secret the
// pod mounts. A pod or Secret that exists already is taken as created, so
// Create is idempotent. When the Secret cannot be created, Create deletes
// the pod again.
func (r *Runner) Create(ctx context.Context, spec build.Spec, src ContextSource) error {
	b, err := r.newBuildPod(spec, src)
	if err != nil {
		return err
	}
	pods := r.client.CoreV1().Pods(r.opts.Namespace)
	pod, err := pods.Create(ctx, b.pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		pod, err = pods.Get(ctx, spec.ID, metav1.GetOptions{})
		if err == nil && pod.Labels[LabelManagedBy] != ManagedBy {
			return fmt.Errorf("kube: build %s: pod %s exists and is not a build pod", spec.ID, spec.ID)
		}
	}
	if err != nil {
		return fmt.Errorf("kube: build %s: create pod: %w", spec.ID, err)
	}
	if b.secret == nil {
		return nil
	}
	b.secret.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
	}}
	_, err = r.client.CoreV1().Secrets(r.opts.Namespace).Create(ctx, b.secret, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return errors.Join(fmt.Errorf("kube: build %s: create secret: %w", spec.ID, err), r.Cleanup(spec.ID))
	}
	return nil
}

// Cancel deletes build id's pod, which stops the build within seconds and
// garbage-collects its Secret. A pod that does not exist is no error.
func (r *Runner) Cancel(ctx context.Context, id string) error {
	err := r.client.CoreV1().Pods(r.opts.Namespace).Delete(ctx, id, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kube: delete pod %s: %w", id, err)
	}
	return nil
}

// Run implements build.Runner for the contexts that the dispatcher prepares
// on its own disk today: spec.ContextDir must hold spec.Dockerfile and no
// other file, and that Dockerfile becomes the pod's local context. Other
// contexts, git ones in particular, go through RunWith.
func (r *Runner) Run(ctx context.Context, spec build.Spec, log io.Writer) (build.Outcome, error) {
	src, err := dirSource(spec)
	if err != nil {
		return build.Outcome{}, err
	}
	return r.RunWith(ctx, spec, src, log)
}

// RunWith runs spec's build from src and returns when its pod has ended: it
// creates the pod, watches it, writes the log of the container that ended
// it (Kaniko's, or the init container's when fetching the context failed)
// to log with the credentials of the build replaced by "[redacted]", and
// deletes the pod. The Outcome is OutcomeOf's, and tells how the build
// ended, the runner's own failures (Outcome.Problem) included: a pod that
// someone else deleted, say. When ctx is done first, it deletes the pod and
// returns Outcome{Cancelled: true}. An error means the runner could not do
// its part: create the pod, follow it, copy its log or delete it.
func (r *Runner) RunWith(ctx context.Context, spec build.Spec, src ContextSource, log io.Writer) (build.Outcome, error) {
	if log == nil {
		log = io.Discard
	}
	secrets, err := credentials(spec.DockerConfig, src.GitToken, slices.Collect(maps.Values(spec.Secrets))...)
	if err != nil {
		return build.Outcome{}, fmt.Errorf("kube: build %s: %w", spec.ID, err)
	}
	if ctx.Err() != nil {
		return build.Outcome{Cancelled: true}, nil
	}
	cancelled := func() (build.Outcome, error) {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
		defer cancel()
		return build.Outcome{Cancelled: true}, r.Cancel(stopCtx, spec.ID)
	}
	if err := r.Create(ctx, spec, src); err != nil {
		if ctx.Err() != nil {
			return cancelled()
		}
		return build.Outcome{}, err
	}
	pod, err := r.wait(ctx, spec.ID)
	if ctx.Err() != nil {
		return cancelled()
	}
	if errors.Is(err, errDeleted) {
		return build.Outcome{ExitCode: -1, Problem: deletedProblem(spec.ID)}, r.Cleanup(spec.ID)
	}
	if err != nil {
		return build.Outcome{}, errors.Join(err, r.Cleanup(spec.ID))
	}
	o, _ := r.OutcomeOf(pod)
	var logErr error
	if c := logContainer(pod); c != "" {
		red := secret.NewRedactor(log, secrets...)
		logErr = errors.Join(r.copyLog(ctx, pod.Name, c, red), red.Flush())
	}
	return o, errors.Join(logErr, r.Cleanup(spec.ID))
}

// wait watches build id's pod until OutcomeOf says it has ended, and
// returns it then, or errDeleted when the pod vanished first. Each watch
// starts from a fresh look at the pod and lasts at most watchTimeout.
func (r *Runner) wait(ctx context.Context, id string) (*corev1.Pod, error) {
	pods := r.client.CoreV1().Pods(r.opts.Namespace)
	for {
		pod, err := pods.Get(ctx, id, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, errDeleted
		}
		if err != nil {
			return nil, fmt.Errorf("kube: get pod %s: %w", id, err)
		}
		if _, done := r.OutcomeOf(pod); done {
			return pod, nil
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", id).String(),
			ResourceVersion: pod.ResourceVersion,
			TimeoutSeconds:  ptr(int64(watchTimeout / time.Second)),
		})
		if err != nil {
			return nil, fmt.Errorf("kube: watch pod %s: %w", id, err)
		}
		pod, err = r.watchPod(ctx, w, id)
		w.Stop()
		if pod != nil || err != nil {
			return pod, err
		}
	}
}

// watchPod returns build id's pod once it has ended, or nil when the watch
// ends first.
func (r *Runner) watchPod(ctx context.Context, w watch.Interface, id string) (*corev1.Pod, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			pod, isPod := ev.Object.(*corev1.Pod)
			switch {
			case ev.Type == watch.Error:
				return nil, nil // the resource version expired, say: look again
			case !isPod || pod.Name != id:
			case ev.Type == watch.Deleted:
				return nil, errDeleted
			default:
				if _, done := r.OutcomeOf(pod); done {
					return pod, nil
				}
			}
		}
	}
}

// errDeleted is wait's error for a build pod that vanished before it ended.
var errDeleted = errors.New("kube: the build pod was deleted")

// Leftovers returns the IDs of the builds whose pods have ended, or never
// will (OutcomeOf says they are done: a pod no node takes, say), but are
// still there: the builds to Cleanup once their results are recorded
// (Cleanup deletes the log with the pod). Running pods are not included:
// they end on their own, within their deadline.
func (r *Runner) Leftovers() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	list, err := r.client.CoreV1().Pods(r.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy}).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("kube: list build pods: %w", err)
	}
	var ids []string
	for _, p := range list.Items {
		if _, done := r.OutcomeOf(&p); done {
			ids = append(ids, p.Name)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Cleanup deletes build id's pod, and so its Secret. It is a no-op for a
// build that has none.
func (r *Runner) Cleanup(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	return r.Cancel(ctx, id)
}

// dirSource reads the Dockerfile of a context directory that holds nothing
// else.
func dirSource(spec build.Spec) (ContextSource, error) {
	dockerfile, err := cleanRelative(spec.Dockerfile)
	if err != nil || spec.ContextDir == "" {
		return ContextSource{}, fmt.Errorf("kube: build %s: no context directory with a Dockerfile", spec.ID)
	}
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	err = filepath.WalkDir(spec.ContextDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if rel, _ := filepath.Rel(spec.ContextDir, p); filepath.ToSlash(rel) != dockerfile {
			return fmt.Errorf("kube: build %s: the context holds more than its Dockerfile (%s): use RunWith", spec.ID, rel)
		}
		return nil
	})
	if err != nil {
		return ContextSource{}, err
	}
	b, err := os.ReadFile(filepath.Join(spec.ContextDir, filepath.FromSlash(dockerfile)))
	if err != nil {
		return ContextSource{}, fmt.Errorf("kube: build %s: %w", spec.ID, err)
	}
	return ContextSource{Dockerfile: string(b)}, nil
}
