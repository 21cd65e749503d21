// Package dispatch turns queued builds into runs: a FIFO queue served by a
// fixed number of slots, the preparation of each build's context and
// credentials, the run itself through a build.Runner, the copy to external
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
	"os"
	"path/filepath"
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

// GitFetcher fetches a Git build context into dest.
type GitFetcher interface {
	Fetch(ctx context.Context, g image.Git, auth *gitctx.Auth, dest string) (commit, contextDir string, err error)
}

// cleaner is the optional capability of runners that leave state behind on
// a crash (the runc runner's containers and bundles).
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
	Git      GitFetcher
	Registry string // the internal registry, HOST:PORT
	// InsecureRegistry: the internal registry speaks plain HTTP (the
	// embedded one on loopback).
	InsecureRegistry bool
	Slots            int          // builds run at once
	Limits           build.Limits // per build
	LogCap           int64        // bytes of log kept per build
	Cache            bool         // Kaniko's layer cache in the internal registry
	WorkDir          string       // where build contexts are prepared
	Log              *slog.Logger
	Now              func() time.Time
	// RunnerError, when set, fails every build with this message: the
	// runner could not be set up (runc or the executor is missing).
	RunnerError string
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

// next pops the oldest queued build and marks it running.
func (d *Dispatcher) next() (ref, context.Context, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
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
		d.run(ctx, r)
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
	c, ok := d.o.Runner.(cleaner)
	if !ok {
		return nil
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
				d.o.Log.Warn("cleaning up a build's runner state", "build", id, "error", err)
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
	end := d.execute(ctx, b, log)
	// A build deleted with its image or workspace has nowhere to log to.
	if err := log.Close(); err != nil && !errors.Is(err, store.ErrNotFound) {
		d.o.Log.Error("writing build log", "build", r.id(), "error", err)
	}
	settle(ctx, d.o, r, end)
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
	work := filepath.Join(d.o.WorkDir, b.ID())
	os.RemoveAll(work)
	defer os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return d.fail(build.ReasonInternal, "preparing the build context: %v", err)
	}
	spec := baseSpec(d.o, img, b)
	switch img.Context.Type {
	case image.ContextLocal:
		spec.ContextDir = filepath.Join(work, "context")
		if err := os.MkdirAll(spec.ContextDir, 0o700); err != nil {
			return d.fail(build.ReasonInternal, "preparing the build context: %v", err)
		}
		if err := os.WriteFile(filepath.Join(spec.ContextDir, "Dockerfile"), []byte(img.Context.Dockerfile), 0o600); err != nil {
			return d.fail(build.ReasonInternal, "preparing the build context: %v", err)
		}
	case image.ContextGit:
		g := *img.Context.Git
		log.Notef("fetching %s at %s", g.URL, orDefault(g.Ref, "the default branch"))
		auth, err := gitAuth(ctx, d.o, img.Workspace, g.Credential)
		if err != nil {
			log.Notef("%v", err)
			return d.fail(build.ReasonGit, "%v", err)
		}
		commit, dir, err := d.o.Git.Fetch(ctx, g, auth, filepath.Join(work, "repo"))
		if err != nil {
			if ctx.Err() != nil {
				return d.fail(build.ReasonCancelled, "the build was cancelled")
			}
			log.Notef("%v", err)
			return d.fail(build.ReasonGit, "%v", err)
		}
		log.Notef("building commit %s", commit)
		if _, err := d.o.Store.UpdateBuild(ctx, b.Image, b.Number, func(b *build.Build) error {
			if !b.Status.Active() {
				return build.ErrTransition
			}
			b.SetCommit(commit)
			return nil
		}); err != nil && !errors.Is(err, build.ErrTransition) {
			return d.fail(build.ReasonInternal, "recording the commit: %v", err)
		}
		spec.ContextDir = dir
	}
	dockerfile, err := os.ReadFile(filepath.Join(spec.ContextDir, spec.Dockerfile))
	if err != nil {
		log.Notef("there is no Dockerfile in the build context")
		return d.fail(build.ReasonDockerfile, "there is no Dockerfile in the build context (%s)", orDefault(gitDir(img), "the repository root"))
	}
	if err := image.ValidateDockerfile(string(dockerfile)); err != nil {
		log.Notef("%v", err)
		return d.fail(build.ReasonDockerfile, "%v", err)
	}
	if spec.DockerConfig, err = dockerConfig(ctx, d.o, img.Workspace, image.BaseRegistries(string(dockerfile))); err != nil {
		return d.fail(build.ReasonInternal, "preparing registry credentials: %v", err)
	}
	started := time.Now()
	outcome, err := d.o.Runner.Run(ctx, spec, log)
	if err != nil {
		log.Notef("the runner failed: %v", err)
		return d.fail(build.ReasonInternal, "the build could not run: %v", err)
	}
	log.Notef("the executor ended after %.1f s with exit code %d", time.Since(started).Seconds(), outcome.ExitCode)
	if f := build.Classify(outcome, d.o.Limits, log.Tail()); f != nil {
		return d.fail(f.Reason, "%s", f.Message)
	}
	reference := d.o.Registry + "/" + img.Name + "@" + outcome.Digest
	pushes, failed := d.push(ctx, img, reference, log)
	if failed != "" {
		return func(b *build.Build) error {
			return b.FailPush(outcome.Digest, reference, pushes, failed, d.o.Now())
		}
	}
	return func(b *build.Build) error { return b.Succeed(outcome.Digest, reference, pushes, d.o.Now()) }
}

// baseSpec is what every runner gets for build b of img: its ID, limits,
// the internal destination and the layer cache.
func baseSpec(o Options, img image.Image, b build.Build) build.Spec {
	spec := build.Spec{
		ID: b.ID(), Dockerfile: "Dockerfile", Limits: o.Limits,
		Destinations: []string{internalTag(o, img)},
	}
	if o.InsecureRegistry {
		spec.InsecureRegistries = []string{o.Registry}
	}
	if o.Cache {
		spec.CacheRepo = o.Registry + "/" + image.ReservedPrefix + "/" + img.Name
	}
	return spec
}

func internalTag(o Options, img image.Image) string { return o.Registry + "/" + img.Name + ":latest" }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// gitAuth opens a workspace's git credential by name (nil for none).
func gitAuth(ctx context.Context, o Options, ws, cred string) (*gitctx.Auth, error) {
	if cred == "" {
		return nil, nil
	}
	c, err := o.Store.GetCredential(ctx, ws, cred)
	if errors.Is(err, store.ErrNotFound) || (err == nil && c.Kind != "git") {
		return nil, fmt.Errorf("the git credential %q does not exist in this workspace", cred)
	}
	if err != nil {
		return nil, err
	}
	token, err := o.Secrets.Open(c.Secret)
	if err != nil {
		return nil, err
	}
	return &gitctx.Auth{Username: c.Username, Token: token}, nil
}

func gitDir(img image.Image) string {
	if img.Context.Git == nil {
		return ""
	}
	return img.Context.Git.Dir
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

// push copies the built image from the internal registry to each external
// destination with its credential, and reports each result. failed names
// the destinations that refused, "" when all took it.
func (d *Dispatcher) push(ctx context.Context, img image.Image, reference string, log *logWriter) (pushes []build.Push, failed string) {
	pushes = []build.Push{{Reference: internalTag(d.o, img), Status: "pushed"}}
	if len(img.Destinations) == 0 {
		return pushes, ""
	}
	src, err := name.ParseReference(reference)
	if err != nil {
		return pushes, "the built image's reference is invalid: " + err.Error()
	}
	built, err := remote.Image(src, remote.WithContext(ctx))
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
	auth := authn.Anonymous
	if dest.Credential != "" {
		c, err := d.o.Store.GetCredential(ctx, ws, dest.Credential)
		if errors.Is(err, store.ErrNotFound) || (err == nil && c.Kind != "registry") {
			return fmt.Errorf("the registry credential %q does not exist in this workspace", dest.Credential)
		}
		if err != nil {
			return err
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
