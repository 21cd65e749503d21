package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Event is an event that a change announces: the store writes it to its
// outbox in the change's own transaction, so that a change is never
// without its event nor an event without its change.
type Event struct {
	Type    string
	Subject string
	Data    any // encoded as JSON
}

// OutboxEvent is an event in the outbox, waiting to be delivered.
type OutboxEvent struct {
	ID      string // unique, assigned when it is written
	Type    string
	Subject string
	Time    time.Time
	// Sequence orders the events of one subject: it increases with each
	// event of the subject, in the order of the changes (not by one).
	Sequence int64
	Data     json.RawMessage
}

// Announcement makes the events that announce a change from what the change
// stored: a build.Build (CreateBuild, UpdateBuild) or an image.Image
// (CreateImage, UpdateImage, and DeleteImage with the image it deleted);
// none when the change announces nothing.
type Announcement func(changed any) []Event

type announceKey struct{}

// Announce returns ctx carrying a: the changes of builds and images made
// with it append a's events to the outbox in their transaction.
func Announce(ctx context.Context, a Announcement) context.Context {
	return context.WithValue(ctx, announceKey{}, a)
}

// Announced returns the events that ctx's Announcement makes of changed,
// ready for the outbox, stamped at now; nil when ctx carries none. Backends
// call it inside the change's transaction.
func Announced(ctx context.Context, changed any, now time.Time) ([]OutboxEvent, error) {
	a, _ := ctx.Value(announceKey{}).(Announcement)
	if a == nil {
		return nil, nil
	}
	var out []OutboxEvent
	for _, e := range a(changed) {
		data, err := json.Marshal(e.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, OutboxEvent{ID: uuid.NewString(), Type: e.Type, Subject: e.Subject, Time: now.UTC(), Data: data})
	}
	return out, nil
}

// Outbox is the store's side of event delivery: a relay reads the events
// waiting in the outbox and removes them once delivered.
type Outbox interface {
	// PendingEvents returns up to limit undelivered events, in the order
	// they were written (so each subject's in Sequence order).
	PendingEvents(ctx context.Context, limit int) ([]OutboxEvent, error)
	// DeliveredEvents removes delivered events from the outbox; unknown ids
	// are no error.
	DeliveredEvents(ctx context.Context, ids ...string) error
}
