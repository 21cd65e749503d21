// Package dispatch turns queued builds into runs: a FIFO queue served by a
// fixed number of slots, each build's credentials and context (prepared by
// a ContextPreparer), the run itself through a build.Runner, the copy to
// external destinations (by a Pusher, package publish), and the settlement
// of the build record. Its reconciler
// settles builds whose runner is gone and re-queues builds nobody serves.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/google/go-containerregistry/pkg/name"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/build/steps"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/publish"
	"github.com/slipway-dev/slipway/pkg/pullauth"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Publisher announces build transitions.
type Publisher interface {
	Publish(typ, subject string, data any)
}

// Opener opens sealed credentials.
type Opener interface {
	Open(sealed string) (string, error)
}

// ContextPreparer prepares a build's context (buildcontext.Preparer): its
// errors are *buildcontext.Failure, and the build fails with their reason.
type ContextPreparer interface {
	Prepare(ctx context.Context, r buildcontext.Request) (*buildcontext.Context, error)
}

// Gate keeps the internal registry's garbage collection away from builds:
// a running build holds it shared (see package gate).
type Gate interface {
	Shared() (release func())
}

// Pusher copies a built image to external destinations (publish.Publisher):
// one result per destination, bounded by ctx.
type Pusher interface {
	Publish(ctx context.Context, img image.Image, b build.Build, digest string, dests []image.Destination, log publish.Log) []build.Push
}

// cleaner is the optional capability of runners and context preparers that
// leave state behind on a crash (the runc runner's containers and bundles,
// a build's prepared context).
type cleaner interface {
	Leftovers() ([]string, error)
	Cleanup(id string) error
}

// Options configure a Dispatcher. Store, Runner, Events, Secrets and
// Registry are required.
type Options struct {
	Store    store.Store
	Runner   build.Runner
	Events   Publisher
	Secrets  Opener
	Contexts ContextPreparer // local builds' contexts
	Registry string          // the internal registry, HOST:PORT
	// InsecureRegistry: the internal registry speaks plain HTTP (the
	// embedded one on loopback).
	InsecureRegistry bool
	Slots            int          // builds run at once
	Limits           build.Limits // per build
	LogCap           int64        // bytes of log kept per build
	LogKeep          int          // logs kept per image (its newest builds'); 0 keeps all
	Cache            bool         // Kaniko's layer cache in the internal registry, for all but scheduled builds
	// Reproducible runs Kaniko with --reproducible: no timestamps in the
	// image, so equal inputs give an equal digest.
	Reproducible bool
	// ExecutorVersion identifies the executor in each build's inputs
	// digest (Kaniko's version, or the build pods' executor image).
	ExecutorVersion string
	Log             *slog.Logger
	Now             func() time.Time
	// RunnerError, when set, fails every build with this message: the
	// runner could not be set up (runc or the executor is missing).
	RunnerError string
	// RegistryTokens, when set, mints each build's credential for the
	// internal registry (the embedded one's token flow); nil when the
	// internal registry authenticates builds otherwise.
	RegistryTokens RegistryTokens
	// Gate, when set, is held while a build runs, so that the registry
	// is not collected under its pushes.
	Gate Gate
	// PullAuth trades the workspace's credentials of private base
	// registries for the pull tokens a build gets instead; nil is
	// pullauth.TokenFlow{}.
	PullAuth pullauth.Exchanger
	// Pushes copies built images to their external destinations; nil: a
	// publish.Publisher of these options' store, secrets, registry and
	// registry tokens.
	Pushes Pusher
	// Registerer gets the build metrics (see metrics); none when nil.
	Registerer prometheus.Registerer
	// Bases, when set, resolves the digests of a build's FROMs when it
	// starts, which the build records (the rebuild policy watches them).
	Bases BaseResolver

	metrics *metrics // made by New and NewCluster from Registerer
}

// BaseResolver resolves the digests a build's bases have now, as a
// workspace reads them (rebuild.Registry).
type BaseResolver interface {
	Resolve(ctx context.Context, ws string, bases []name.Reference) ([]build.Base, error)
}

// withDefaults fills in what o leaves unset.
func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	if o.Pushes == nil {
		var tokens publish.PullTokens
		if o.RegistryTokens != nil {
			tokens = o.RegistryTokens
		}
		o.Pushes = publish.New(publish.Options{Store: o.Store, Secrets: o.Secrets, Registry: o.Registry, Tokens: tokens, Now: o.Now})
	}
	return o
}

// ref identifies a build.
type ref struct {
	Image  string `json:"image"`
	Number int    `json:"number"`
}

func (r ref) id() string { return fmt.Sprintf("%s-%d", r.Image, r.Number) }

// Dispatcher runs builds locally.
type Dispatcher struct {
	o       Options
	mu      sync.Mutex
	queue   []ref
	running map[string]context.CancelFunc
	wake    chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	stop    context.CancelFunc
}

// New returns a Dispatcher; Start starts its slots.
func New(o Options) *Dispatcher {
	if o.Slots < 1 {
		o.Slots = 1
	}
	o = o.withDefaults()
	o.metrics = newMetrics(o.Registerer)
	ctx, stop := context.WithCancel(context.Background())
	d := &Dispatcher{o: o, running: map[string]context.CancelFunc{}, wake: make(chan struct{}, 1), ctx: ctx, stop: stop}
	d.registerQueue(o.Registerer)
	return d
}

// Subscribe registers the dispatcher's handlers for build events.
func (d *Dispatcher) Subscribe(p interface {
	Subscribe(typ string, h events.Handler)
}) {
	p.Subscribe(events.BuildQueued, d.onQueued)
	p.Subscribe(events.BuildCancelled, d.onCancelled)
}

// Start reconciles once, then starts the slots and a reconciler that runs
// every interval.
func (d *Dispatcher) Start(interval time.Duration) error {
	if err := d.Reconcile(d.ctx); err != nil {
		return fmt.Errorf("reconciling builds: %w", err)
	}
	for range d.o.Slots {
		d.wg.Add(1)
		go d.slot()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-d.ctx.Done():
				return
			case <-t.C:
				if err := d.Reconcile(d.ctx); err != nil && d.ctx.Err() == nil {
					d.o.Log.Error("reconciling builds", "error", err)
				}
			}
		}
	}()
	return nil
}

// Close stops the slots; running builds are stopped and settled as
// interrupted by the next start's reconciler if they could not be settled.
func (d *Dispatcher) Close() {
	d.stop()
	d.wg.Wait()
}

func decodeRef(e cloudevents.Event) (ref, error) {
	var r ref
	if err := json.Unmarshal(e.Data(), &r); err != nil || r.Image == "" || r.Number < 1 {
		return r, fmt.Errorf("%w: build event without image and number", events.ErrMalformed)
	}
	return r, nil
}

func (d *Dispatcher) onQueued(_ context.Context, e cloudevents.Event) error {
	r, err := decodeRef(e)
	if err != nil {
		return nil // nothing to retry
	}
	d.enqueue(r)
	return nil
}

// observeCancelled counts a cancellation, which the API settles (the
// build.cancelled event's data is the build).
func (o Options) observeCancelled(e cloudevents.Event) {
	var b build.Build
	if err := json.Unmarshal(e.Data(), &b); err == nil {
		o.metrics.observe(b)
	}
}

// enqueue adds r unless it is queued or running already (events arrive at
// least once, and the reconciler re-queues what it finds).
func (d *Dispatcher) enqueue(r ref) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[r.id()]; ok || slices.Contains(d.queue, r) {
		return
	}
	d.queue = append(d.queue, r)
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) onCancelled(_ context.Context, e cloudevents.Event) error {
	r, err := decodeRef(e)
	if err != nil {
		return nil
	}
	d.o.observeCancelled(e)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue = slices.DeleteFunc(d.queue, func(q ref) bool { return q == r })
	if cancel, ok := d.running[r.id()]; ok {
		cancel()
	}
	return nil
}

// next pops the oldest queued build and marks it running. The store's
// queued_at orders the queue: it is stamped in the transaction that
// queues a build, while the events that bring builds here arrive in any
// order (concurrent requests publish after their commits, in whatever order
// they get to it), so the store is asked which queued build came first,
// and a build whose event has not arrived yet is taken in its turn.
func (d *Dispatcher) next() (ref, context.Context, bool) {
	d.mu.Lock()
	empty := len(d.queue) == 0
	d.mu.Unlock()
	if empty {
		return ref{}, nil, false
	}
	active, err := d.o.Store.ListActiveBuilds(d.ctx)
	if err != nil && d.ctx.Err() == nil {
		d.o.Log.Warn("listing queued builds; serving them in arrival order", "error", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.order(active)
	}
	if len(d.queue) == 0 {
		return ref{}, nil, false
	}
	r := d.queue[0]
	d.queue = d.queue[1:]
	ctx, cancel := context.WithCancel(d.ctx)
	d.running[r.id()] = cancel
	if len(d.queue) > 0 {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return r, ctx, true
}

// order sorts the queue by the store's queue order (active: oldest
// first) and adds the store's queued builds it lacks; builds the store
// does not list as queued (ended meanwhile) go last, where starting them
// finds out. d.mu is held.
func (d *Dispatcher) order(active []build.Build) {
	rank := map[ref]int{}
	for _, b := range active {
		if b.Status != build.Queued {
			continue
		}
		r := ref{b.Image, b.Number}
		rank[r] = len(rank)
		if _, ok := d.running[r.id()]; !ok && !slices.Contains(d.queue, r) {
			d.queue = append(d.queue, r)
		}
	}
	slices.SortStableFunc(d.queue, func(a, b ref) int {
		ra, oka := rank[a]
		rb, okb := rank[b]
		switch {
		case oka && okb:
			return ra - rb
		case oka:
			return -1
		case okb:
			return 1
		}
		return 0
	})
}

func (d *Dispatcher) slot() {
	defer d.wg.Done()
	for {
		r, ctx, ok := d.next()
		if !ok {
			select {
			case <-d.ctx.Done():
				return
			case <-d.wake:
				continue
			}
		}
		d.runGuarded(ctx, r)
		d.mu.Lock()
		d.running[r.id()]()
		delete(d.running, r.id())
		d.mu.Unlock()
	}
}

// Reconcile repairs what events missed: queued builds nobody serves are
// queued here, running builds with no runner here are settled as
// interrupted, and runner state left by a crash is cleaned up.
func (d *Dispatcher) Reconcile(ctx context.Context) error {
	active, err := d.o.Store.ListActiveBuilds(ctx)
	if err != nil {
		return err
	}
	for _, b := range active {
		r := ref{b.Image, b.Number}
		d.mu.Lock()
		_, mine := d.running[r.id()]
		d.mu.Unlock()
		switch {
		case mine:
		case b.Status == build.Queued:
			d.enqueue(r)
		case b.Status == build.Running:
			settle(ctx, d.o, r, func(b *build.Build) error {
				return b.Fail(build.ReasonInterrupted, "the build was interrupted: the server stopped while it ran; build again", d.o.Now())
			})
		}
	}
	for _, part := range []any{d.o.Runner, d.o.Contexts} {
		c, ok := part.(cleaner)
		if !ok {
			continue
		}
		left, err := c.Leftovers()
		if err != nil {
			return err
		}
		for _, id := range left {
			d.mu.Lock()
			_, mine := d.running[id]
			d.mu.Unlock()
			if !mine {
				if err := c.Cleanup(id); err != nil {
					d.o.Log.Warn("cleaning up what a build left", "build", id, "error", err)
				}
			}
		}
	}
	return nil
}

// settle applies an ending to a build and announces it: to the outbox in
// the change's transaction, then to the local handlers. A build that has
// ended already (cancelled meanwhile) keeps its ending.
func settle(ctx context.Context, o Options, r ref, end func(*build.Build) error) {
	ctx = store.Announce(context.WithoutCancel(ctx), events.Lifecycle(o.Now))
	b, err := o.Store.UpdateBuild(ctx, r.Image, r.Number, end)
	switch {
	case errors.Is(err, build.ErrTransition), errors.Is(err, store.ErrNotFound):
		return
	case err != nil:
		o.Log.Error("settling build", "build", r.id(), "error", err)
		return
	}
	o.metrics.observe(b)
	typ := map[build.Status]string{build.Succeeded: events.BuildSucceeded, build.Failed: events.BuildFailed, build.Cancelled: events.BuildCancelled}[b.Status]
	o.Events.Publish(typ, b.ID(), b.View(o.Now()))
	o.Log.Info("build ended", "build", b.ID(), "status", b.Status, "reason", failureReason(b))
	// The log retention: a build that ended may push an older one's log
	// out of the image's newest LogKeep.
	if o.LogKeep > 0 {
		if _, err := o.Store.PruneLogs(ctx, r.Image, o.LogKeep); err != nil && !errors.Is(err, store.ErrNotFound) {
			o.Log.Warn("pruning old build logs", "image", r.Image, "error", err)
		}
	}
}

func failureReason(b build.Build) string {
	if b.Failure == nil {
		return ""
	}
	return string(b.Failure.Reason)
}

// run executes one build from start to settlement.
func (d *Dispatcher) run(ctx context.Context, r ref) {
	b, err := d.o.Store.UpdateBuild(store.Announce(ctx, events.Lifecycle(d.o.Now)), r.Image, r.Number, func(b *build.Build) error { return b.Start(d.o.Now()) })
	if err != nil {
		if !errors.Is(err, build.ErrTransition) && !errors.Is(err, store.ErrNotFound) {
			d.o.Log.Error("starting build", "build", r.id(), "error", err)
		}
		return
	}
	d.o.Events.Publish(events.BuildStarted, b.ID(), b.View(d.o.Now()))
	log := newLogWriter(d.o.Store, r.Image, r.Number, d.o.LogCap, 200*time.Millisecond)
	release := func() {}
	if d.o.Gate != nil {
		release = d.o.Gate.Shared()
	}
	end := d.executeWithin(ctx, b, log)
	release()
	// A build deleted with its image or workspace has nowhere to log to.
	if err := log.Close(); err != nil && !errors.Is(err, store.ErrNotFound) {
		d.o.Log.Error("writing build log", "build", r.id(), "error", err)
	}
	settle(ctx, d.o, r, end)
}

// executeWithin runs execute under the build's time limit, which covers
// everything the build does: fetching its context, the run, reading the
// image back and the pushes to external destinations (a destination that
// accepts a connection and never answers is cut off by it too). A build
// whose image reached the internal registry has succeeded: a destination
// the limit cut off is a failed push, not a timed-out build.
func (d *Dispatcher) executeWithin(ctx context.Context, b build.Build, log *logWriter) func(*build.Build) error {
	if d.o.Limits.Timeout <= 0 {
		end, _ := d.executeGuarded(ctx, b, log)
		return end
	}
	limited, cancel := context.WithTimeout(ctx, d.o.Limits.Timeout)
	defer cancel()
	end, built := d.executeGuarded(limited, b, log)
	if !built && ctx.Err() == nil && errors.Is(limited.Err(), context.DeadlineExceeded) {
		f := build.Classify(build.Outcome{TimedOut: true}, d.o.Limits, "", nil)
		log.Notef("%s", f.Message)
		return d.fail(f.Reason, "%s", f.Message)
	}
	return end
}

// fail returns an ending that fails a build with reason and message.
func (d *Dispatcher) fail(reason build.Reason, format string, args ...any) func(*build.Build) error {
	msg := fmt.Sprintf(format, args...)
	return func(b *build.Build) error { return b.Fail(reason, msg, d.o.Now()) }
}

// execute prepares, runs and publishes a build, and returns its ending;
// built says that its image reached the internal registry.
func (d *Dispatcher) execute(ctx context.Context, b build.Build, log *logWriter) (end func(*build.Build) error, built bool) {
	if d.o.RunnerError != "" {
		log.Notef("%s", d.o.RunnerError)
		return d.fail(build.ReasonInternal, "%s", d.o.RunnerError), false
	}
	img, err := d.o.Store.GetImage(ctx, b.Image)
	if err != nil {
		return d.fail(build.ReasonInternal, "reading the image: %v", err), false
	}
	img = asBuilt(img, b)
	var auth *gitctx.Auth
	if g := img.Context.Git; g != nil {
		if auth, err = gitAuth(ctx, d.o, img.Workspace, *g); err != nil {
			log.Notef("%v", err)
			return d.fail(build.ReasonGit, "%v", err), false
		}
	}
	phase := time.Now()
	bc, err := d.o.Contexts.Prepare(ctx, buildcontext.Request{ID: b.ID(), Context: img.Context, Auth: auth, Log: log})
	d.o.metrics.phase("context", phase)
	if f, ok := errors.AsType[*buildcontext.Failure](err); ok {
		return d.fail(f.Reason, "%s", f.Message), false
	}
	if err != nil {
		return d.fail(build.ReasonInternal, "preparing the build context: %v", err), false
	}
	defer bc.Close()
	if bc.Commit != "" {
		if _, err := d.o.Store.UpdateBuild(ctx, b.Image, b.Number, func(b *build.Build) error {
			if !b.Status.Active() {
				return build.ErrTransition
			}
			b.SetCommit(bc.Commit)
			return nil
		}); err != nil && !errors.Is(err, build.ErrTransition) {
			return d.fail(build.ReasonInternal, "recording the commit: %v", err), false
		}
	}
	phase = time.Now()
	spec := baseSpec(d.o, img, b)
	spec.ContextDir, spec.Dockerfile = bc.Dir, buildcontext.DockerfileName
	dockerfile := bc.Dockerfile
	// What SAVE checks of a local Dockerfile, checked again on the one
	// fetched (a git context's is seen here first): the executor would
	// drop or mis-build what this refuses.
	if err := image.CheckDockerfile(dockerfile, img.Inputs()); err != nil {
		reason := build.ReasonDockerfile
		if errors.Is(err, image.ErrParserPanic) {
			reason = build.ReasonInternal
		}
		log.Notef("the Dockerfile cannot be built: %s", dockerfileProblem(err))
		return d.fail(reason, "%s", dockerfileProblem(err)), false
	}
	secrets, problem, err := buildSecrets(ctx, d.o, img)
	switch {
	case err != nil:
		return d.fail(build.ReasonInternal, "opening the build's secrets: %v", err), false
	case problem != "":
		log.Notef("%s", problem)
		return d.fail(build.ReasonDockerfile, "%s", problem), false
	}
	spec.Secrets = secrets
	bases := image.BaseImagesWith(dockerfile, img.BuildArgs)
	recordBases(ctx, d.o, img.Workspace, b, bases)
	spec.DockerConfig, err = basePulls(ctx, d.o, img.Workspace, bases, log)
	if bpe, ok := errors.AsType[*basePullError](err); ok {
		log.Notef("%v", bpe)
		return d.fail(build.ReasonBaseImage, "%v", bpe), false
	}
	if err != nil {
		return d.fail(build.ReasonInternal, "preparing registry credentials: %v", err), false
	}
	if spec.DockerConfig, err = withBuildCredential(ctx, d.o, spec.DockerConfig, img, b, dockerfile); err != nil {
		return d.fail(build.ReasonInternal, "preparing the internal registry's credential: %v", err), false
	}
	// The steps parser reads the executor's whole output as it comes, so
	// that the failure names the instruction that failed, whatever the log
	// cap and the tail keep.
	plan, _ := steps.ParsePlan(dockerfile) // nil when it does not parse: the log alone then
	parser := steps.NewParser(plan)
	d.o.metrics.phase("inputs", phase)
	started := time.Now()
	outcome, err := d.o.Runner.Run(ctx, spec, io.MultiWriter(log, parser))
	d.o.metrics.phase("executor", started)
	if err != nil {
		log.Notef("the runner failed: %v", err)
		return d.fail(build.ReasonInternal, "the build could not run: %v", err), false
	}
	log.Notef("the executor ended after %.1f s with exit code %d%s", time.Since(started).Seconds(), outcome.ExitCode, memoryNote(outcome.Memory, d.o.Limits))
	parser.Flush()
	if f := build.Classify(outcome, d.o.Limits, log.Tail(), parser.Failure()); f != nil {
		return d.fail(f.Reason, "%s", f.Message), false
	}
	reference := d.o.Registry + "/" + img.Name + "@" + outcome.Digest
	phase = time.Now()
	pushes := append([]build.Push{{Reference: internalTag(d.o, img), Status: build.PushPushed}},
		d.o.Pushes.Publish(ctx, img, b, outcome.Digest, img.Destinations, log)...)
	d.o.metrics.phase("publish", phase)
	return d.o.built(img, func(b *build.Build) error { return b.Succeed(outcome.Digest, reference, pushes, d.o.Now()) }), true
}

// asBuilt is img as build b builds it: the definition b was created with
// (its context, build arguments, secrets and target), or, for a build
// stored before builds kept theirs, img as it is.
func asBuilt(img image.Image, b build.Build) image.Image {
	if b.Definition != nil {
		return img.AsBuilt(*b.Definition)
	}
	return img
}

// built wraps the ending of a build that produced an image: after end, the
// build records its inputs digest and whether it reproduced the digest img
// already had (the last successful build's, read before this one ran: one
// build of an image is active at a time).
func (o Options) built(img image.Image, end func(*build.Build) error) func(*build.Build) error {
	_, previous, _ := strings.Cut(img.Reference, "@")
	return func(b *build.Build) error {
		if err := end(b); err != nil {
			return err
		}
		b.NoteUnchanged(previous)
		b.RecordInputs(b.Inputs(o.ExecutorVersion))
		return nil
	}
}

// recordBases records on build b, of workspace ws, the digests its bases
// (its FROMs, after its build arguments) resolve to now.
func recordBases(ctx context.Context, o Options, ws string, b build.Build, refs []name.Reference) {
	if o.Bases == nil || len(refs) == 0 {
		return
	}
	bases, err := o.Bases.Resolve(ctx, ws, refs)
	if err != nil {
		o.Log.Warn("resolving the build's bases", "build", b.ID(), "error", err)
	}
	if len(bases) == 0 {
		return
	}
	if _, err := o.Store.UpdateBuild(ctx, b.Image, b.Number, func(b *build.Build) error {
		if !b.Status.Active() {
			return build.ErrTransition
		}
		b.SetBases(bases)
		return nil
	}); err != nil && !errors.Is(err, build.ErrTransition) {
		o.Log.Warn("recording the build's base digests", "build", b.ID(), "error", err)
	}
}

// memoryNote says how much memory the build's largest process used, of
// its limit, where the runner measured it.
func memoryNote(m build.Memory, l build.Limits) string {
	if m.MaxRSS <= 0 {
		return ""
	}
	if l.MemoryBytes > 0 {
		return fmt.Sprintf("; its largest process peaked at %d MiB of the %d MiB limit (--%s)", m.MaxRSS>>20, l.MemoryBytes>>20, build.MemoryFlag)
	}
	return fmt.Sprintf("; its largest process peaked at %d MiB", m.MaxRSS>>20)
}

// baseSpec is what every runner gets for build b of img: its ID, limits,
// the internal destination and the layer cache. A scheduled build is
// cold: it is meant to pick up what changed upstream (new packages behind
// an unchanged RUN line), which cached layers would hide; every other
// build uses the cache when it is on.
func baseSpec(o Options, img image.Image, b build.Build) build.Spec {
	spec := build.Spec{
		ID: b.ID(), Dockerfile: "Dockerfile", Limits: o.Limits,
		Destinations: []string{internalTag(o, img)},
	}
	if o.InsecureRegistry {
		spec.InsecureRegistries = []string{o.Registry}
	}
	spec.Reproducible = o.Reproducible
	if o.Cache && b.Trigger != build.TriggerSchedule {
		spec.CacheRepo = o.Registry + "/" + image.CacheRepository(img.Name)
	}
	for _, k := range slices.Sorted(maps.Keys(img.BuildArgs)) {
		spec.BuildArgs = append(spec.BuildArgs, k+"="+img.BuildArgs[k])
	}
	spec.Target = img.Target
	return spec
}

// buildSecrets opens the workspace's secret credentials that img names,
// by name: a build mounts them. One missing, or of another kind, fails the
// build before anything runs, with problem saying why.
func buildSecrets(ctx context.Context, o Options, img image.Image) (secrets map[string][]byte, problem string, err error) {
	if len(img.Secrets) == 0 {
		return nil, "", nil
	}
	out := make(map[string][]byte, len(img.Secrets))
	for _, n := range img.Secrets {
		c, err := o.Store.GetCredential(ctx, img.Workspace, n)
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Sprintf("the image's secret %q does not exist in this workspace: store it as a credential of kind secret", n), nil
		}
		if err != nil {
			return nil, "", err
		}
		if err := c.CheckSecret(); err != nil {
			return nil, fmt.Sprintf("not mounting the image's secret %q: %v", n, err), nil
		}
		v, err := o.Secrets.Open(c.Secret)
		if err != nil {
			return nil, "", err
		}
		out[n] = []byte(v)
	}
	return out, "", nil
}

// dockerfileProblem is a CheckDockerfile error as a build's failure
// message: "Dockerfile line N: ...".
func dockerfileProblem(err error) string {
	if inv, ok := errors.AsType[*image.InvalidError](err); ok && inv.Line > 0 {
		return fmt.Sprintf("Dockerfile line %d: %s", inv.Line, inv.Message)
	}
	return err.Error()
}

func internalTag(o Options, img image.Image) string { return o.Registry + "/" + img.Name + ":latest" }

// gitAuth opens the workspace's git credential that g names (nil for
// none), after checking that it belongs to g's host: the credential may
// have changed since the definition was saved, and a credential of another
// host fails the fetch before anything is sent.
func gitAuth(ctx context.Context, o Options, ws string, g image.Git) (*gitctx.Auth, error) {
	cred := g.Credential
	if cred == "" {
		return nil, nil
	}
	c, err := o.Store.GetCredential(ctx, ws, cred)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("the git credential %q does not exist in this workspace", cred)
	}
	if err != nil {
		return nil, err
	}
	if err := c.CheckGit(g.URL); err != nil {
		return nil, fmt.Errorf("not fetching: %w", err)
	}
	token, err := o.Secrets.Open(c.Secret)
	if err != nil {
		return nil, err
	}
	return &gitctx.Auth{Username: c.Username, Token: token}, nil
}
