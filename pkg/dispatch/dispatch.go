// Package dispatch turns queued builds into runs: a FIFO queue served by a
// fixed number of slots, each build's credentials and context (prepared by
// a ContextPreparer), the run itself through a build.Runner, the copy to external
// destinations, and the settlement of the build record. Its reconciler
// settles builds whose runner is gone and re-queues builds nobody serves.
package dispatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/buildcontext"
	"github.com/slipway-dev/slipway/pkg/gitctx"
	"github.com/slipway-dev/slipway/pkg/image"
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
	Log              *slog.Logger
	Now              func() time.Time
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
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Dispatcher{o: o, running: map[string]context.CancelFunc{}, wake: make(chan struct{}, 1), ctx: ctx, stop: stop}
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
// accepts a connection and never answers is cut off by it too).
func (d *Dispatcher) executeWithin(ctx context.Context, b build.Build, log *logWriter) func(*build.Build) error {
	if d.o.Limits.Timeout <= 0 {
		return d.executeGuarded(ctx, b, log)
	}
	limited, cancel := context.WithTimeout(ctx, d.o.Limits.Timeout)
	defer cancel()
	end := d.executeGuarded(limited, b, log)
	if ctx.Err() == nil && errors.Is(limited.Err(), context.DeadlineExceeded) {
		f := build.Classify(build.Outcome{TimedOut: true}, d.o.Limits, "")
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

// execute prepares, runs and publishes a build, and returns its ending.
func (d *Dispatcher) execute(ctx context.Context, b build.Build, log *logWriter) func(*build.Build) error {
	if d.o.RunnerError != "" {
		log.Notef("%s", d.o.RunnerError)
		return d.fail(build.ReasonInternal, "%s", d.o.RunnerError)
	}
	img, err := d.o.Store.GetImage(ctx, b.Image)
	if err != nil {
		return d.fail(build.ReasonInternal, "reading the image: %v", err)
	}
	var auth *gitctx.Auth
	if g := img.Context.Git; g != nil {
		if auth, err = gitAuth(ctx, d.o, img.Workspace, *g); err != nil {
			log.Notef("%v", err)
			return d.fail(build.ReasonGit, "%v", err)
		}
	}
	bc, err := d.o.Contexts.Prepare(ctx, buildcontext.Request{ID: b.ID(), Context: img.Context, Auth: auth, Log: log})
	if f, ok := errors.AsType[*buildcontext.Failure](err); ok {
		return d.fail(f.Reason, "%s", f.Message)
	}
	if err != nil {
		return d.fail(build.ReasonInternal, "preparing the build context: %v", err)
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
			return d.fail(build.ReasonInternal, "recording the commit: %v", err)
		}
	}
	spec := baseSpec(d.o, img, b)
	spec.ContextDir, spec.Dockerfile = bc.Dir, buildcontext.DockerfileName
	dockerfile := bc.Dockerfile
	if spec.DockerConfig, err = dockerConfig(ctx, d.o, img.Workspace, image.BaseRegistries(dockerfile)); err != nil {
		return d.fail(build.ReasonInternal, "preparing registry credentials: %v", err)
	}
	if spec.DockerConfig, err = withBuildCredential(ctx, d.o, spec.DockerConfig, img, b, dockerfile); err != nil {
		return d.fail(build.ReasonInternal, "preparing the internal registry's credential: %v", err)
	}
	started := time.Now()
	outcome, err := d.o.Runner.Run(ctx, spec, log)
	if err != nil {
		log.Notef("the runner failed: %v", err)
		return d.fail(build.ReasonInternal, "the build could not run: %v", err)
	}
	log.Notef("the executor ended after %.1f s with exit code %d%s", time.Since(started).Seconds(), outcome.ExitCode, memoryNote(outcome.Memory, d.o.Limits))
	if f := build.Classify(outcome, d.o.Limits, log.Tail()); f != nil {
		return d.fail(f.Reason, "%s", f.Message)
	}
	reference := d.o.Registry + "/" + img.Name + "@" + outcome.Digest
	source, err := readBack(d.o, b, img.Name)
	if err != nil {
		return d.fail(build.ReasonInternal, "preparing the internal registry's credential: %v", err)
	}
	pushes, failed := d.push(ctx, img, reference, source, log)
	if failed != "" {
		return func(b *build.Build) error {
			return b.FailPush(outcome.Digest, reference, pushes, failed, d.o.Now())
		}
	}
	return func(b *build.Build) error { return b.Succeed(outcome.Digest, reference, pushes, d.o.Now()) }
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
	if o.Cache && b.Trigger != build.TriggerSchedule {
		spec.CacheRepo = o.Registry + "/" + image.CacheRepository(img.Name)
	}
	return spec
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

// dockerConfig holds the workspace's credentials for the registries the
// build pulls base images from, and no others: the build's own steps can
// read it, so it carries only what the build needs.
func dockerConfig(ctx context.Context, o Options, ws string, registries []string) ([]byte, error) {
	cs, err := o.Store.ListCredentials(ctx, ws)
	if err != nil {
		return nil, err
	}
	auths := map[string]map[string]string{}
	for _, c := range cs {
		if c.Kind != "registry" || !slices.Contains(registries, c.Registry) {
			continue
		}
		pw, err := o.Secrets.Open(c.Secret)
		if err != nil {
			return nil, err
		}
		auths[c.Registry] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + pw))}
	}
	if len(auths) == 0 {
		return nil, nil
	}
	return json.Marshal(map[string]any{"auths": auths})
}

// registryOf is the registry host of an image reference.
func registryOf(ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ""
	}
	return r.Context().RegistryStr()
}

// push copies the built image from the internal registry (read with
// source, its authentication) to each external destination with its
// credential, and reports each result. failed names
// the destinations that refused, "" when all took it.
func (d *Dispatcher) push(ctx context.Context, img image.Image, reference string, source remote.Option, log *logWriter) (pushes []build.Push, failed string) {
	pushes = []build.Push{{Reference: internalTag(d.o, img), Status: "pushed"}}
	if len(img.Destinations) == 0 {
		return pushes, ""
	}
	src, err := name.ParseReference(reference)
	if err != nil {
		return pushes, "the built image's reference is invalid: " + err.Error()
	}
	built, err := remote.Image(src, remote.WithContext(ctx), source)
	if err != nil {
		return pushes, "reading the built image back: " + err.Error()
	}
	var refused []string
	for _, dest := range img.Destinations {
		log.Notef("pushing to %s", dest.Reference)
		err := d.pushOne(ctx, img.Workspace, dest, built)
		p := build.Push{Reference: dest.Reference, Status: "pushed"}
		if err != nil {
			msg := err.Error()
			p.Status, p.Error = "failed", &msg
			refused = append(refused, dest.Reference)
			log.Notef("push to %s failed: %s", dest.Reference, msg)
		}
		pushes = append(pushes, p)
	}
	if len(refused) > 0 {
		return pushes, "pushing to " + strings.Join(refused, ", ") + " failed: see pushes for each error"
	}
	return pushes, ""
}

func (d *Dispatcher) pushOne(ctx context.Context, ws string, dest image.Destination, img v1.Image) error {
	ref, err := name.ParseReference(dest.Reference)
	if err != nil {
		return err
	}
	if image.SameRegistry(ref.Context().RegistryStr(), d.o.Registry) {
		// The internal registry: only the workspace's own repositories.
		own, err := store.OwnsRepository(ctx, d.o.Store, ws, ref.Context().RepositoryStr())
		if err != nil {
			return err
		}
		if !own {
			return fmt.Errorf("not pushing: %s is in the internal registry but is not an image of this workspace", dest.Reference)
		}
	}
	auth := authn.Anonymous
	if dest.Credential != "" {
		c, err := d.o.Store.GetCredential(ctx, ws, dest.Credential)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the registry credential %q does not exist in this workspace", dest.Credential)
		}
		if err != nil {
			return err
		}
		// Checked again at build time: the credential may have changed
		// since the destination was saved.
		if err := c.CheckRegistry(dest.Reference); err != nil {
			return fmt.Errorf("not pushing: %w", err)
		}
		pw, err := d.o.Secrets.Open(c.Secret)
		if err != nil {
			return err
		}
		auth = &authn.Basic{Username: c.Username, Password: pw}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	return remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(pctx))
}
