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

// visibleBuild loads build {n} of image {id} for a caller who may read it.
func (a *api) visibleBuild(r *http.Request) (build.Build, store.Role, error) {
	img, role, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return build.Build{}, role, err
	}
	n, err := buildNumber(r)
	if err != nil {
		return build.Build{}, role, err
	}
	b, err := a.Store.GetBuild(r.Context(), img.ID, n)
	return b, role, err
}

func (a *api) getBuild(w http.ResponseWriter, r *http.Request) error {
	b, _, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b.View(a.Now()))
	return nil
}

func (a *api) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	b, role, err := a.visibleBuild(r)
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
	b, _, err := a.visibleBuild(r)
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
