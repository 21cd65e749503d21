package functions

import (
	"context"
	"errors"
	"net/http"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/store"
)

// receive is POST /events: the platform's CloudEvents, binary or structured.
func (a *api) receive(w http.ResponseWriter, r *http.Request) error {
	if !a.isPublisher(subject(r.Context())) {
		return errorf(http.StatusForbidden, "forbidden", "only the platform's event publishers may post events")
	}
	e, err := events.ReadRequest(r)
	if errors.Is(err, events.ErrMalformed) {
		return errorf(http.StatusBadRequest, "invalid_event", "%v", err)
	}
	if err != nil {
		return err
	}
	if h, ok := a.Handlers[e.Type()]; ok {
		if err := h(r.Context(), e); err != nil {
			if errors.Is(err, events.ErrMalformed) {
				return errorf(http.StatusBadRequest, "invalid_event", "%v", err)
			}
			return err // 500: the broker redelivers
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	switch e.Type() {
	case events.ImageRebuildRequested:
		return a.rebuildEvent(w, r, e)
	case events.WorkspaceCreated, events.WorkspaceUpdated, events.WorkspaceDeleted:
		if a.IgnoreWorkspaces {
			w.WriteHeader(http.StatusAccepted)
			return nil
		}
		ws, err := events.DecodeWorkspace(e)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_event", "%v", err)
		}
		order, err := events.WorkspaceOrder(e, a.Now())
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_event", "%v", err)
		}
		deleted := e.Type() == events.WorkspaceDeleted
		if deleted {
			// Only a deletion after the workspace's last event empties it.
			last, err := a.Store.WorkspaceOrder(r.Context(), ws.ID)
			if err != nil {
				return err
			}
			if order.After(last) {
				if err := a.clearWorkspace(r.Context(), ws.ID); err != nil {
					return err
				}
			}
		}
		err = a.Store.ApplyWorkspace(r.Context(), events.Key(e), order, store.Workspace{ID: ws.ID, Owner: ws.Owner, Members: ws.Members}, deleted)
		switch {
		case errors.Is(err, store.ErrStale):
			// Acknowledged and recorded: an older event is not the sender's
			// error, and redelivering it would change nothing.
			if a.Log != nil {
				a.Log.Info("workspace event older than the workspace's last: ignored", "type", e.Type(), "source", e.Source(), "id", e.ID(), "workspace", ws.ID)
			}
		case err != nil && !errors.Is(err, store.ErrDuplicate):
			return err
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		// Unknown types are acknowledged and ignored, so a broker never retries them.
		w.WriteHeader(http.StatusAccepted)
	}
	return nil
}

// clearWorkspace cancels the active builds of a workspace about to be
// deleted, so that no runner goes on building and pushing its images, and
// removes its images' registry content while their names are still taken.
// A failure leaves the workspace in place: the event is redelivered.
func (a *api) clearWorkspace(ctx context.Context, ws string) error {
	p := store.Page{Limit: 200}
	for {
		imgs, next, err := a.Store.ListImages(ctx, ws, store.ImageFilter{}, p)
		if err != nil {
			return err
		}
		for _, img := range imgs {
			if b := img.LatestBuild; b != nil && b.Status.Active() {
				if err := a.cancelAs(ctx, img.ID, b.Number, "the platform (the workspace was deleted)", nil); err != nil && !isFinished(err) {
					return err
				}
			}
			if err := a.deleteContent(ctx, img.Name); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		p.Cursor = next
	}
}
