package rebuild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// DefaultInterval is how often base images and git refs are checked when
// Options.Interval is zero (`--rebuild-check-interval`).
const DefaultInterval = 10 * time.Minute

// Publisher gives events to the process's own handlers (the local build
// queue); the store's outbox carries them to the sink.
type Publisher interface {
	Publish(typ, subject string, data any)
}

// Bases resolves base image references to digests. A Lookup answers each
// reference once (per workspace credential): one pass over every image
// makes one registry request per distinct base.
type Bases interface {
	Lookup() Lookup
}

// Lookup resolves references for one pass.
type Lookup interface {
	// Digest is the manifest digest ref has now in its registry, as
	// workspace ws may read it.
	Digest(ctx context.Context, ws, ref string) (string, error)
}

// Commits tells the commit an image's git ref names now.
type Commits interface {
	Head(ctx context.Context, ws string, g image.Git) (string, error)
}

// Options configure a Rebuilder; Store and Events are required.
type Options struct {
	Store  store.Store
	Events Publisher
	// Bases and Commits watch base images and git refs; nil: not watched.
	Bases   Bases
	Commits Commits
	// Interval is how often base images and git refs are checked
	// (DefaultInterval when zero). Checks fall in windows of Interval
	// aligned to the clock, so that every replica and every image is
	// checked in the same pass, sharing its registry requests.
	Interval time.Duration
	Now      func() time.Time
	Log      *slog.Logger
}

// Rebuilder requests the builds that images' rebuild policies call for.
type Rebuilder struct {
	o Options
}

// New returns a Rebuilder.
func New(o Options) *Rebuilder {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Rebuilder{o: o}
}

// Outcome is what a build request did: created Build, kept it pending
// behind the image's active build, or nothing (Duplicate: its key was
// handled before; neither: nothing changed).
type Outcome struct {
	Build     *build.Build
	Pending   bool
	Duplicate bool
	// Reason says why no build was requested ("up_to_date", ...).
	Reason string
}

// Request asks for a build of img by trigger, once per key: requested in
// the name of who set the policy (by when nobody did), with cause, and
// change applied to the image's rebuild state in the same transaction.
func (r *Rebuilder) Request(ctx context.Context, img image.Image, key string, trigger build.Trigger, by string, cause *build.Cause, change func(*image.RebuildState)) (Outcome, error) {
	if s := img.RebuildState.SetBy; s != nil && trigger != build.TriggerEvent {
		by = s.By
	}
	b := build.New(img.ID, img.DefinitionRev, by, trigger, r.o.Now())
	b.Cause = cause
	created, pending, err := r.o.Store.RequestBuild(store.Announce(ctx, events.Lifecycle(r.o.Now)), key, b, change)
	switch {
	case errors.Is(err, store.ErrDuplicate):
		return Outcome{Duplicate: true, Reason: "duplicate"}, nil
	case err != nil:
		return Outcome{}, err
	case pending:
		r.o.Log.Info("rebuild coalesced behind the active build", "image", img.ID, "trigger", trigger)
		return Outcome{Pending: true, Reason: "coalesced"}, nil
	}
	r.o.Events.Publish(events.BuildQueued, created.ID(), created.View(r.o.Now()))
	r.o.Log.Info("rebuild requested", "build", created.ID(), "trigger", trigger)
	return Outcome{Build: &created}, nil
}

// Tick is one pass: each image's pending build whose active build has
// ended starts, each due schedule slot builds, and, once per Interval
// window, base images and git refs are checked.
func (r *Rebuilder) Tick(ctx context.Context) error { return r.pass(ctx, false) }

// CheckNow is Tick with the base images and git refs checked now, whatever
// the window.
func (r *Rebuilder) CheckNow(ctx context.Context) error { return r.pass(ctx, true) }

// OnPing is Tick as an event handler: the cluster's PingSource.
func (r *Rebuilder) OnPing(ctx context.Context, _ cloudevents.Event) error { return r.Tick(ctx) }

func (r *Rebuilder) pass(ctx context.Context, force bool) error {
	now := r.o.Now()
	window := now.Truncate(r.o.Interval)
	var lookup Lookup
	if r.o.Bases != nil {
		lookup = r.o.Bases.Lookup()
	}
	var errs []error
	p := store.Page{Limit: 200}
	for {
		imgs, next, err := r.o.Store.ListAutomatic(ctx, p)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, img := range imgs {
			if err := r.image(ctx, img, now, window, force, lookup); err != nil {
				r.o.Log.Error("rebuild check", "image", img.ID, "error", err)
				errs = append(errs, fmt.Errorf("image %s: %w", img.ID, err))
			}
		}
		if next == "" {
			return errors.Join(errs...)
		}
		p.Cursor = next
	}
}

func (r *Rebuilder) image(ctx context.Context, img image.Image, now, window time.Time, force bool, lookup Lookup) error {
	if img.RebuildState.Pending != nil && !active(img) {
		if _, err := r.StartPending(ctx, img.ID); err != nil {
			return err
		}
		return nil // the next pass sees the image with its new build
	}
	var errs []error
	if img.Rebuild.Schedule != nil {
		errs = append(errs, r.schedule(ctx, img, now))
	}
	watched := (img.Rebuild.OnBaseImageUpdate && lookup != nil) || (img.Rebuild.OnGitCommit && r.o.Commits != nil)
	checked := img.RebuildState.CheckedAt
	if watched && (force || checked == nil || checked.Before(window)) {
		errs = append(errs, r.watch(ctx, img, now, lookup))
	}
	return errors.Join(errs...)
}

func active(img image.Image) bool { return img.LatestBuild != nil && img.LatestBuild.Status.Active() }

// StartPending creates img's pending build once no build of it is active.
func (r *Rebuilder) StartPending(ctx context.Context, imageID string) (*build.Build, error) {
	b, err := r.o.Store.StartPending(store.Announce(ctx, events.Lifecycle(r.o.Now)), imageID)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrBuildActive) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.o.Events.Publish(events.BuildQueued, b.ID(), b.View(r.o.Now()))
	r.o.Log.Info("coalesced rebuild started", "build", b.ID(), "trigger", b.Trigger)
	return &b, nil
}

// OnBuildEnded starts the pending build of the image whose build ended
// (the data of build.succeeded, failed and cancelled events).
func (r *Rebuilder) OnBuildEnded(ctx context.Context, e cloudevents.Event) error {
	var b struct {
		Image string `json:"image"`
	}
	if err := json.Unmarshal(e.Data(), &b); err != nil || b.Image == "" {
		return nil // nothing to retry
	}
	_, err := r.StartPending(ctx, b.Image)
	return err
}

// schedule requests the build of the latest due slot: one build however
// many slots passed since the last one handled (a downtime's catch-up).
// The slot's key makes it one build across replicas.
func (r *Rebuilder) schedule(ctx context.Context, img image.Image, now time.Time) error {
	sched, err := ParseSchedule(*img.Rebuild.Schedule)
	if err != nil {
		return err
	}
	after := img.Created.At
	if s := img.RebuildState.SetBy; s != nil {
		after = s.At
	}
	if l := img.RebuildState.LastSlot; l != nil && l.After(after) {
		after = *l
	}
	slot, missed, ok := sched.Due(after, now)
	if !ok {
		return nil
	}
	slot = slot.UTC()
	_, err = r.Request(ctx, img, "schedule/"+img.ID+"/"+slot.Format(time.RFC3339), build.TriggerSchedule, img.Created.By,
		&build.Cause{Slot: &slot, MissedSlots: missed}, func(s *image.RebuildState) { s.LastSlot = &slot })
	return err
}

// watch checks img's base images and git ref, requests a build when one
// moved, and records the check.
func (r *Rebuilder) watch(ctx context.Context, img image.Image, now time.Time, lookup Lookup) error {
	upToDate := true
	var errs []error
	if img.Rebuild.OnBaseImageUpdate && lookup != nil {
		out, err := r.checkBases(ctx, img, lookup)
		if err != nil {
			errs = append(errs, err)
		}
		upToDate = upToDate && err == nil && out.Reason == "up_to_date"
	}
	if img.Rebuild.OnGitCommit && r.o.Commits != nil {
		out, err := r.CheckGit(ctx, img, "poll")
		if err != nil {
			errs = append(errs, err)
		}
		upToDate = upToDate && err == nil && out.Reason == "up_to_date"
	}
	if err := r.o.Store.UpdateRebuildState(ctx, img.ID, func(s *image.RebuildState) error {
		s.CheckedAt, s.UpToDate = &now, upToDate
		return nil
	}); err != nil && !errors.Is(err, store.ErrNotFound) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// baseline returns the bases recorded by img's newest build that has
// some; ok is false while a build is active (it records the bases of now).
func (r *Rebuilder) baseline(ctx context.Context, img image.Image) ([]build.Base, bool, error) {
	latest := img.LatestBuild
	switch {
	case latest == nil:
		return nil, true, nil
	case latest.Status.Active():
		return nil, false, nil
	case len(latest.Bases) > 0:
		return latest.Bases, true, nil
	}
	bs, _, err := r.o.Store.ListBuilds(ctx, img.ID, store.Page{Limit: 20})
	if err != nil {
		return nil, false, err
	}
	for _, b := range bs {
		if len(b.Bases) > 0 {
			return b.Bases, true, nil
		}
	}
	return nil, true, nil
}

// checkBases requests a build of img when a base its last build used has
// another digest now; once per new digest.
func (r *Rebuilder) checkBases(ctx context.Context, img image.Image, lookup Lookup) (Outcome, error) {
	bases, ok, err := r.baseline(ctx, img)
	if err != nil || !ok {
		return Outcome{Reason: "build_active"}, err
	}
	var changes []build.BaseChange
	var errs []error
	for _, b := range bases {
		if strings.Contains(b.Ref, "@") {
			continue // pinned by digest: it never moves
		}
		d, err := lookup.Digest(ctx, img.Workspace, b.Ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolving base %s: %w", b.Ref, err))
			continue
		}
		if d != b.Digest {
			changes = append(changes, build.BaseChange{Ref: b.Ref, Old: b.Digest, New: d})
		}
	}
	if len(changes) == 0 {
		if len(errs) > 0 {
			return Outcome{}, errors.Join(errs...)
		}
		return Outcome{Reason: "up_to_date"}, nil
	}
	key := []string{"base", img.ID}
	for _, c := range changes {
		key = append(key, c.Ref+"@"+c.New)
	}
	return r.Request(ctx, img, strings.Join(key, "/"), build.TriggerBaseImage, img.Created.By, &build.Cause{Bases: changes}, nil)
}

// CheckGit requests a build of img when its git ref names another commit
// than the one built last (or, before any build recorded one, the one a
// git trigger acted on last): once per change of commit, however often a
// poll or a webhook delivery sees it. via says which did ("poll",
// "webhook").
func (r *Rebuilder) CheckGit(ctx context.Context, img image.Image, via string) (Outcome, error) {
	g := img.Context.Git
	if g == nil || r.o.Commits == nil {
		return Outcome{Reason: "not_git"}, nil
	}
	latest := img.LatestBuild
	if latest != nil && latest.Status.Active() && latest.Commit == nil {
		return Outcome{Reason: "build_active"}, nil // it builds the ref's commit of now
	}
	head, err := r.o.Commits.Head(ctx, img.Workspace, *g)
	if err != nil {
		return Outcome{}, err
	}
	if head == "" {
		return Outcome{Reason: "up_to_date"}, nil // a short SHA: nothing to follow
	}
	prev := img.RebuildState.Commit
	if latest != nil && latest.Commit != nil {
		prev = *latest.Commit
	}
	switch {
	case head == prev:
		return Outcome{Reason: "up_to_date"}, nil
	case prev == "" && latest == nil:
		// Never built: remember where the ref is, build when it moves.
		err := r.o.Store.UpdateRebuildState(ctx, img.ID, func(s *image.RebuildState) error { s.Commit = head; return nil })
		return Outcome{Reason: "up_to_date"}, err
	}
	return r.Request(ctx, img, "git/"+img.ID+"/"+prev+".."+head, build.TriggerGit, img.Created.By,
		&build.Cause{Commit: head, Previous: prev, Via: via}, func(s *image.RebuildState) { s.Commit = head })
}

// Run ticks every interval until ctx is done: the local server's driver.
func (r *Rebuilder) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
				r.o.Log.Warn("rebuild pass", "error", err)
			}
		}
	}
}

// BuildEnded lists the event types after which a pending build may start.
var BuildEnded = []string{events.BuildSucceeded, events.BuildFailed, events.BuildCancelled}
