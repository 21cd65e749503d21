package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/build/steps"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/runner/kube"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Pods is what the cluster roles need of the Kubernetes runner.
type Pods interface {
	Create(ctx context.Context, spec build.Spec, src kube.ContextSource) error
	Cancel(ctx context.Context, id string) error
	Report(ctx context.Context, pod *corev1.Pod) (id string, o build.Outcome, log []byte, done bool, err error)
	Leftovers() ([]string, error)
	Cleanup(id string) error
}

// PodGetter finds a build's pod; nil, nil when there is none.
type PodGetter func(ctx context.Context, id string) (*corev1.Pod, error)

// Cluster runs builds as Kaniko pods, statelessly: the dispatcher role
// creates and deletes pods on build events, the reporter role settles builds
// from the pods' change events, and the reconciler role, on each ping,
// repairs what lost events left behind. Every handler is idempotent, as
// Knative Eventing delivers at least once.
type Cluster struct {
	o    Options
	pods Pods
	get  PodGetter
	// Grace is how long a build may stay queued, or running without a pod,
	// before the reconciler acts.
	Grace time.Duration
	// PushBound bounds the reporter's pushes to a build's external
	// destinations (see publish).
	PushBound time.Duration
}

// DefaultPushBound is Cluster.PushBound's default: under Knative's default
// request timeout of 300 s, with time left to settle.
const DefaultPushBound = 4 * time.Minute

// NewCluster returns the cluster roles' handlers.
func NewCluster(o Options, pods Pods, get PodGetter) *Cluster {
	o = o.withDefaults()
	o.metrics = newMetrics(o.Registerer)
	return &Cluster{o: o, pods: pods, get: get, Grace: time.Minute, PushBound: DefaultPushBound}
}

// Handlers returns the event handlers of a role.
func (c *Cluster) Handlers(role string) map[string]events.Handler {
	switch role {
	case "dispatcher":
		return map[string]events.Handler{events.BuildQueued: c.OnQueued, events.BuildCancelled: c.OnCancelled}
	case "reporter":
		return map[string]events.Handler{
			"dev.knative.apiserver.resource.add": c.OnPod, "dev.knative.apiserver.resource.update": c.OnPod,
			"dev.knative.apiserver.resource.delete": c.OnPod,
		}
	case "reconciler":
		return map[string]events.Handler{"dev.knative.sources.ping": c.OnPing}
	}
	return nil
}

// OnQueued starts a queued build: its record, then its pod.
func (c *Cluster) OnQueued(ctx context.Context, e cloudevents.Event) error {
	r, err := decodeRef(e)
	if err != nil {
		return err
	}
	return c.dispatch(ctx, r)
}

func (c *Cluster) dispatch(ctx context.Context, r ref) error {
	b, err := c.o.Store.UpdateBuild(store.Announce(ctx, events.Lifecycle(c.o.Now)), r.Image, r.Number, func(b *build.Build) error { return b.Start(c.o.Now()) })
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case errors.Is(err, build.ErrTransition):
		// Redelivered: (re)create the pod of a running build, idempotently.
		if b, err = c.o.Store.GetBuild(ctx, r.Image, r.Number); err != nil || b.Status != build.Running {
			return err
		}
	case err != nil:
		return err
	default:
		c.o.Events.Publish(events.BuildStarted, b.ID(), b.View(c.o.Now()))
	}
	spec, src, err := c.prepare(ctx, b)
	if err == nil {
		err = c.pods.Create(ctx, spec, src)
	}
	if d, ok := errors.AsType[*definitionError](err); ok {
		c.settle(ctx, r, func(b *build.Build) error { return b.Fail(build.ReasonDockerfile, d.msg, c.o.Now()) })
		return nil
	}
	if err != nil {
		c.settle(ctx, r, func(b *build.Build) error {
			if bpe, ok := errors.AsType[*basePullError](err); ok {
				return b.Fail(build.ReasonBaseImage, bpe.Error(), c.o.Now())
			}
			return b.Fail(build.ReasonInternal, "the build pod could not be created: "+err.Error(), c.o.Now())
		})
	}
	return nil
}

// definitionError is a build that cannot run as defined: its Dockerfile
// or a secret it names (reason dockerfile).
type definitionError struct{ msg string }

func (e *definitionError) Error() string { return e.msg }

// prepare is the cluster's build spec: Kaniko pushes to the internal
// registry alone, with the build's own credential; the docker config holds
// that and pull tokens for private bases (basePulls), never a destination's
// credential (the reporter pushes to the external destinations after the pod).
func (c *Cluster) prepare(ctx context.Context, b build.Build) (build.Spec, kube.ContextSource, error) {
	img, err := c.o.Store.GetImage(ctx, b.Image)
	if err != nil {
		return build.Spec{}, kube.ContextSource{}, err
	}
	spec := baseSpec(c.o, img, b)
	var src kube.ContextSource
	var bases []name.Reference
	img = asBuilt(img, b)
	def := img.Context
	switch def.Type {
	case image.ContextLocal:
		// SAVE checked it; a definition saved before a check existed
		// is checked here. A git context's Dockerfile is fetched by the
		// pod itself, so only SAVE's checks of its inputs apply there.
		if err := image.CheckDockerfile(def.Dockerfile, img.Inputs()); err != nil {
			return spec, src, &definitionError{dockerfileProblem(err)}
		}
		src.Dockerfile = def.Dockerfile
		bases = image.BaseImagesWith(def.Dockerfile, img.BuildArgs)
		// A git context's Dockerfile is only read in its pod: its init
		// container says its bases, recorded by the reporter (podBases).
		recordBases(ctx, c.o, img.Workspace, b, bases)
	case image.ContextGit:
		g := *def.Git
		src.Git = &g
		auth, err := gitAuth(ctx, c.o, img.Workspace, g)
		if err != nil {
			return spec, src, err
		}
		if auth != nil {
			src.GitToken = auth.Token
		}
	}
	secrets, problem, err := buildSecrets(ctx, c.o, img)
	switch {
	case err != nil:
		return spec, src, err
	case problem != "":
		return spec, src, &definitionError{problem}
	}
	spec.Secrets = secrets
	// Private bases: pull tokens, never the credential.
	pulls, err := basePulls(ctx, c.o, img.Workspace, bases, nopNotes{})
	if err != nil {
		return spec, src, err
	}
	if spec.DockerConfig, err = mergeAuths(spec.DockerConfig, pulls); err != nil {
		return spec, src, err
	}
	spec.DockerConfig, err = withBuildCredential(ctx, c.o, spec.DockerConfig, img, b, src.Dockerfile)
	return spec, src, err
}

// OnCancelled deletes a cancelled build's pod.
func (c *Cluster) OnCancelled(ctx context.Context, e cloudevents.Event) error {
	r, err := decodeRef(e)
	if err != nil {
		return err
	}
	c.o.observeCancelled(e)
	return c.pods.Cancel(ctx, r.id())
}

// OnPod settles a build when its pod has ended (an ApiServerSource event
// whose data is the pod).
func (c *Cluster) OnPod(ctx context.Context, e cloudevents.Event) error {
	var pod corev1.Pod
	if err := json.Unmarshal(e.Data(), &pod); err != nil {
		return fmt.Errorf("%w: data is not a pod: %v", events.ErrMalformed, err)
	}
	return c.report(ctx, &pod)
}

func (c *Cluster) report(ctx context.Context, pod *corev1.Pod) error {
	id, o, log, done, err := c.pods.Report(ctx, pod)
	c.podBases(ctx, id, pod)
	if !done {
		return err // nil while the pod runs; an error asks for redelivery
	}
	imageID, n, perr := kube.ParseID(id)
	if perr != nil {
		return nil
	}
	b, gerr := c.o.Store.GetBuild(ctx, imageID, n)
	if gerr != nil || !b.Status.Active() {
		return nil // settled already: a duplicate event
	}
	r := ref{imageID, n}
	record := func(b *build.Build) {
		if o.Commit != "" {
			b.SetCommit(o.Commit)
		}
	}
	img, ierr := c.o.Store.GetImage(ctx, imageID)
	if f := build.Classify(o, c.o.Limits, string(log), failedStep(img, b, log)); f != nil {
		if len(log) > 0 {
			if err := c.o.Store.AppendLog(ctx, imageID, n, log); err != nil {
				return err
			}
		}
		c.settle(ctx, r, func(b *build.Build) error { record(b); return b.Fail(f.Reason, f.Message, c.o.Now()) })
		return nil
	}
	if ierr != nil {
		return nil
	}
	return c.publish(ctx, r, b, img, o, log, record)
}

// podBases records the bases a git build's init container read in the
// fetched Dockerfile (kube.BasesOf), resolved to their digests as soon as
// the reporter sees them: the pod event of the init container's end comes
// as the executor starts pulling. A build that has its bases already (a
// local context's, recorded when its pod was made) is left as it is.
func (c *Cluster) podBases(ctx context.Context, id string, pod *corev1.Pod) {
	names := kube.BasesOf(pod)
	if len(names) == 0 || c.o.Bases == nil {
		return
	}
	imageID, n, err := kube.ParseID(id)
	if err != nil {
		return
	}
	b, err := c.o.Store.GetBuild(ctx, imageID, n)
	if err != nil || !b.Status.Active() || len(b.Bases) > 0 {
		return
	}
	img, err := c.o.Store.GetImage(ctx, imageID)
	if err != nil {
		return
	}
	var refs []name.Reference
	for _, s := range names {
		if r, err := name.ParseReference(s); err == nil {
			refs = append(refs, r)
		}
	}
	recordBases(ctx, c.o, img.Workspace, b, refs)
}

// publish pushes a build whose pod succeeded to its external destinations,
// then settles it as succeeded (the internal push decides that; each
// destination keeps its own result). It first claims the pushes on the
// build record, so that a redelivered pod event, or the reconciler, finding
// them under way pushes nothing: the claim lapses after PushBound and a
// minute, when its claimant has died, and whoever reports next pushes.
// The pushes stop at PushBound, or at the build's time limit when that
// comes first, so that they end within the reporter's request (Knative
// cancels it at the Service's timeoutSeconds, 300 s by default).
func (c *Cluster) publish(ctx context.Context, r ref, b build.Build, img image.Image, o build.Outcome, log []byte, record func(*build.Build)) error {
	internal := build.Push{Reference: internalTag(c.o, img), Status: build.PushPushed}
	claim := []build.Push{internal}
	for _, d := range img.Destinations {
		claim = append(claim, build.Push{Reference: d.Reference})
	}
	_, err := c.o.Store.UpdateBuild(ctx, r.Image, r.Number, func(b *build.Build) error {
		return b.ClaimPushes(claim, c.PushBound+time.Minute, c.o.Now())
	})
	switch {
	case errors.Is(err, build.ErrClaimed), errors.Is(err, build.ErrTransition), errors.Is(err, store.ErrNotFound):
		return nil // under way elsewhere, or settled meanwhile
	case err != nil:
		return err
	}
	deadline := c.o.Now().Add(c.PushBound)
	if b.StartedAt != nil && c.o.Limits.Timeout > 0 {
		if limit := b.StartedAt.Add(c.o.Limits.Timeout); limit.Before(deadline) {
			deadline = limit
		}
	}
	pctx, cancel := context.WithDeadline(ctx, deadline)
	var notes notes
	pushes := append([]build.Push{internal}, c.o.Pushes.Publish(pctx, img, b, o.Digest, img.Destinations, &notes)...)
	cancel()
	ctx = context.WithoutCancel(ctx)
	if out := append(log, notes...); len(out) > 0 {
		if err := c.o.Store.AppendLog(ctx, r.Image, r.Number, out); err != nil && !errors.Is(err, store.ErrNotFound) {
			c.o.Log.Error("writing build log", "build", r.id(), "error", err)
		}
	}
	reference := c.o.Registry + "/" + img.Name + "@" + o.Digest
	c.settle(ctx, r, c.o.built(img, func(b *build.Build) error { record(b); return b.Succeed(o.Digest, reference, pushes, c.o.Now()) }))
	return nil
}

// notes collects the publisher's notes for the build log.
type notes []byte

func (n *notes) Notef(format string, args ...any) {
	*n = fmt.Appendf(*n, "[slipway] "+format+"\n", args...)
}

func (c *Cluster) settle(ctx context.Context, r ref, end func(*build.Build) error) {
	settle(ctx, c.o, r, end)
}

// OnPing reconciles: queued builds nobody started are dispatched again,
// running builds whose pod is gone are settled as interrupted (or from the
// pod, when its end was missed), and ended pods of settled builds go. Each
// build and each pod is handled on its own: an error is logged and the pass
// goes on, and the errors, joined, ask for redelivery at the end.
func (c *Cluster) OnPing(ctx context.Context, _ cloudevents.Event) error {
	var errs []error
	fail := func(what, id string, err error) {
		c.o.Log.Error("reconciling", "step", what, "build", id, "error", err)
		errs = append(errs, fmt.Errorf("%s %s: %w", what, id, err))
	}
	active, err := c.o.Store.ListActiveBuilds(ctx)
	if err != nil {
		fail("listing active builds", "", err)
	}
	now := c.o.Now()
	for _, b := range active {
		r := ref{b.Image, b.Number}
		switch {
		case b.Status == build.Queued && now.Sub(b.QueuedAt) > c.Grace:
			if err := c.dispatch(ctx, r); err != nil {
				fail("dispatching", r.id(), err)
			}
		case b.Status == build.Running && b.StartedAt != nil && now.Sub(*b.StartedAt) > c.Grace:
			pod, err := c.get(ctx, b.ID())
			switch {
			case err != nil:
				fail("reading the pod of", r.id(), err)
			case pod == nil:
				c.settle(ctx, r, func(b *build.Build) error {
					return b.Fail(build.ReasonInterrupted, "the build's pod is gone; build again", c.o.Now())
				})
			default:
				if err := c.report(ctx, pod); err != nil {
					fail("reporting", r.id(), err)
				}
			}
		}
	}
	left, err := c.pods.Leftovers()
	if err != nil {
		fail("listing ended pods", "", err)
	}
	for _, id := range left {
		imageID, n, err := kube.ParseID(id)
		if err != nil {
			continue
		}
		if b, err := c.o.Store.GetBuild(ctx, imageID, n); err == nil && b.Status.Active() {
			continue // the reporter has not settled it yet
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			fail("reading the build of pod", id, err)
			continue
		}
		if err := c.pods.Cleanup(id); err != nil {
			fail("deleting the ended pod", id, err)
		}
	}
	return errors.Join(errs...)
}

// failedStep reads a pod's whole log against the Dockerfile of b, when the
// image still holds it (a local context), for where the executor failed.
func failedStep(img image.Image, b build.Build, log []byte) *steps.Failure {
	var plan *steps.Plan
	if df, ok := b.Dockerfile(); ok {
		plan, _ = steps.ParsePlan(df)
	}
	return steps.Parse(log, plan).Failure()
}
