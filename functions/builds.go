package functions

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// buildNumber reads the {n} path value.
func buildNumber(r *http.Request) (int, error) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 {
		return 0, errNotFound
	}
	return n, nil
}

func (a *api) createBuild(w http.ResponseWriter, r *http.Request) error {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if role != store.RoleOwner {
		return errForbidden
	}
	// The store records the image's current definition on the build.
	b := build.New(img.ID, img.DefinitionRev, subject(r.Context()), build.TriggerManual, a.Now())
	// The queued event goes to the outbox with the build (the sink's
	// copy); Publish gives it to the local handlers.
	if b, err = a.Store.CreateBuild(store.Announce(r.Context(), events.Lifecycle(a.Now)), b); err != nil {
		return err
	}
	view := b.View(a.Now())
	a.Events.Publish(events.BuildQueued, b.ID(), view)
	w.Header().Set("Location", "/api/v1/images/"+img.ID+"/builds/"+strconv.Itoa(b.Number))
	writeJSON(w, http.StatusAccepted, view)
	return nil
}

func (a *api) listBuilds(w http.ResponseWriter, r *http.Request) error {
	img, _, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	p, err := page(r, 20, 100)
	if err != nil {
		return err
	}
	bs, next, err := a.Store.ListBuilds(r.Context(), img.ID, p)
	if err != nil {
		return err
	}
	now := a.Now()
	views := make([]build.View, len(bs))
	for i, b := range bs {
		views[i] = b.View(now)
	}
	writeJSON(w, http.StatusOK, map[string]any{"builds": views, "next_page_token": next})
	return nil
}

// visibleBuild loads image {id} and its build {n} for a caller who may
// read them, with the caller's role.
func (a *api) visibleBuild(r *http.Request) (image.Image, build.Build, store.Role, error) {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return img, build.Build{}, role, err
	}
	n, err := buildNumber(r)
	if err != nil {
		return img, build.Build{}, role, err
	}
	b, err := a.Store.GetBuild(r.Context(), img.ID, n)
	return img, b, role, err
}

func (a *api) getBuild(w http.ResponseWriter, r *http.Request) error {
	_, b, _, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b.View(a.Now()))
	return nil
}

// DiffView is a unified diff between two build definitions.
type DiffView struct {
	// From and To say what was compared: "build N" or "current".
	From string `json:"from"`
	To   string `json:"to"`
	// Identical says that the two definitions are equal (Diff is "").
	Identical bool `json:"identical"`
	// Diff is the unified diff from From to To, with three lines of
	// context.
	Diff string `json:"diff"`
}

// diffBuild answers the unified diff from build {n}'s definition to the
// image's current definition (?against=current, the default) or to build
// {against}'s.
func (a *api) diffBuild(w http.ResponseWriter, r *http.Request) error {
	img, _, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	n, err := buildNumber(r)
	if err != nil {
		return err
	}
	against := r.URL.Query().Get("against")
	if against == "" {
		against = "current"
	}
	m := 0
	if against != "current" {
		if m, err = strconv.Atoi(against); err != nil || m < 1 {
			return errorf(http.StatusBadRequest, "invalid_argument", "against must be \"current\" or a build number (1, 2, ...)")
		}
	}
	from, err := a.buildDefinition(r.Context(), img.ID, n)
	if err != nil {
		return err
	}
	view := DiffView{From: "build " + strconv.Itoa(n), To: "current"}
	to := img.Definition()
	if m > 0 {
		if to, err = a.buildDefinition(r.Context(), img.ID, m); err != nil {
			return err
		}
		view.To = "build " + strconv.Itoa(m)
	}
	if view.Diff, err = build.Diff(from, to, view.From, view.To); err != nil {
		return err
	}
	view.Identical = view.Diff == ""
	writeJSON(w, http.StatusOK, view)
	return nil
}

// buildDefinition is the definition build n of an image built; 409
// no_definition for a build stored before builds kept theirs.
func (a *api) buildDefinition(ctx context.Context, imageID string, n int) (build.Definition, error) {
	b, err := a.Store.GetBuild(ctx, imageID, n)
	if err != nil {
		return build.Definition{}, err
	}
	if b.Definition == nil {
		return build.Definition{}, errorf(http.StatusConflict, "no_definition",
			"build %d was made before builds kept their definitions: there is nothing to compare", n)
	}
	return *b.Definition, nil
}

func (a *api) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	_, b, role, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	if role != store.RoleOwner {
		return errForbidden
	}
	if b, err = a.settleCancel(r, b.Image, b.Number); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, b.View(a.Now()))
	return nil
}

// settleCancel records the caller's cancellation and announces it.
func (a *api) settleCancel(r *http.Request, imageID string, n int) (build.Build, error) {
	var b build.Build
	err := a.cancelAs(r.Context(), imageID, n, subject(r.Context()), &b)
	return b, err
}

// cancelAs records a cancellation by who and announces it; the runner stops
// the build when it receives the event.
func (a *api) cancelAs(ctx context.Context, imageID string, n int, who string, out *build.Build) error {
	b, err := a.Store.UpdateBuild(store.Announce(ctx, events.Lifecycle(a.Now)), imageID, n, func(b *build.Build) error {
		return b.Cancel(who, a.Now())
	})
	if err != nil {
		return err
	}
	a.Events.Publish(events.BuildCancelled, b.ID(), b.View(a.Now()))
	if out != nil {
		*out = b
	}
	return nil
}

func isFinished(err error) bool { return errors.Is(err, build.ErrTransition) }

func (a *api) getLog(w http.ResponseWriter, r *http.Request) error {
	_, b, _, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	var offset int64
	if s := r.URL.Query().Get("offset"); s != "" {
		if offset, err = strconv.ParseInt(s, 10, 64); err != nil || offset < 0 {
			return errorf(http.StatusBadRequest, "invalid_argument", "offset must be a whole number of bytes, 0 or more")
		}
	}
	follow := r.URL.Query().Get("follow") == "true"
	ctx := r.Context()
	if b.LogPruned {
		return errorf(http.StatusGone, "log_pruned", "the log of build %d was deleted by the log retention, which keeps the logs of each image's newest builds; the build's record stays", b.Number)
	}
	// The log is read in pieces of logPart bytes, so that a reader holds
	// no more of it than that however long it is.
	first, size, err := a.Store.ReadLogPart(ctx, b.Image, b.Number, offset, logPart)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Build-Status", string(b.Status))
	if !follow {
		// The log as it was when the request came: up to its size then.
		end := max(offset, size)
		w.Header().Set("X-Next-Offset", strconv.FormatInt(end, 10))
		w.Header().Set("Content-Length", strconv.FormatInt(end-offset, 10))
		for part := first; len(part) > 0 && offset < end; {
			part = part[:min(int64(len(part)), end-offset)]
			if _, err := w.Write(part); err != nil {
				return nil
			}
			if offset += int64(len(part)); offset >= end {
				break
			}
			if part, _, err = a.Store.ReadLogPart(ctx, b.Image, b.Number, offset, min(logPart, end-offset)); err != nil {
				return nil // the status line is sent: the short body says it
			}
		}
		return nil
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	chunk := first
	for {
		for len(chunk) > 0 {
			if _, err := w.Write(chunk); err != nil {
				return nil
			}
			offset += int64(len(chunk))
			if chunk, _, err = a.Store.ReadLogPart(ctx, b.Image, b.Number, offset, logPart); err != nil {
				return nil
			}
		}
		rc.Flush()
		if !b.Status.Active() {
			return nil
		}
		if a.Live != nil && b.Status == build.Running {
			// The runner is elsewhere: its log reaches the store when the
			// build ends, so stream it from the runner meanwhile.
			n, err := a.Live.Follow(ctx, b.ID(), offset, flushing{w, rc})
			offset += n
			if err != nil && ctx.Err() == nil {
				a.Log.Warn("following a build's log", "build", b.ID(), "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.LogPoll):
		}
		if b, err = a.Store.GetBuild(ctx, b.Image, b.Number); err != nil {
			return nil
		}
		// Read after the status so that a build's last lines, written
		// before it ended, are never missed.
		if chunk, _, err = a.Store.ReadLogPart(ctx, b.Image, b.Number, offset, logPart); err != nil {
			return nil
		}
	}
}

// logPart is the most of a build's log a reader reads from the store at once.
const logPart = 256 << 10

// flushing writes to an HTTP response and flushes each write to the client.
type flushing struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushing) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// pushBody is POST .../builds/{n}/pushes: the destination to push again.
type pushBody struct {
	Reference string `json:"reference"`
}

// pushAgain pushes the image of succeeded build {n} once more to one of
// its external destinations (after its credential or registry was fixed),
// records the result on that destination's push and answers with the
// build. Owner only, as building is.
func (a *api) pushAgain(w http.ResponseWriter, r *http.Request) error {
	img, b, role, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	n := b.Number
	if role != store.RoleOwner {
		return errForbidden
	}
	var body pushBody
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Reference == "" {
		return &Error{Status: http.StatusBadRequest, Code: "invalid_argument", Message: "reference is required: the destination to push to again", Field: "reference"}
	}
	if a.Pushes == nil {
		return errorf(http.StatusNotImplemented, "not_implemented", "this server does not push to destinations")
	}
	if b.Status != build.Succeeded {
		return errorf(http.StatusConflict, "build_not_succeeded", "build %d has not succeeded (it is %s): there is no built image to push", n, b.Status)
	}
	dest, ok := pushDestination(img, b, body.Reference)
	if !ok {
		return errorf(http.StatusConflict, "no_such_destination", "%s is not one of the external destinations build %d pushed to and the image still has", body.Reference, n)
	}
	p := a.Pushes.PushAgain(r.Context(), img, b, dest)
	ctx := store.Announce(context.WithoutCancel(r.Context()), events.Pushed(a.Now))
	b, err = a.Store.UpdateBuild(ctx, img.ID, n, func(b *build.Build) error { return b.RecordPush(p) })
	switch {
	case errors.Is(err, build.ErrTransition), errors.Is(err, build.ErrNoDestination):
		return errorf(http.StatusConflict, "no_such_destination", "build %d changed while it was pushed", n)
	case err != nil:
		return err
	}
	view := b.View(a.Now())
	a.Events.Publish(events.BuildPushed, b.ID(), view)
	writeJSON(w, http.StatusOK, view)
	return nil
}

// pushDestination finds the destination ref of img that build b pushed to
// (not its first push, the internal registry's), with the credential the
// image names for it now.
func pushDestination(img image.Image, b build.Build, ref string) (image.Destination, bool) {
	pushed := false
	for i := 1; i < len(b.Pushes); i++ {
		pushed = pushed || b.Pushes[i].Reference == ref
	}
	if !pushed {
		return image.Destination{}, false
	}
	for _, d := range img.Destinations {
		if d.Reference == ref {
			return d, true
		}
	}
	return image.Destination{}, false
}
