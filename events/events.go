// Package events defines the CloudEvents Slipway consumes and emits: their
// types, their data, and the Publisher that sends them to K_SINK and to the
// process's own handlers.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Source is the source attribute of every event Slipway emits.
const Source = "/slipway"

// Event types consumed from the platform.
const (
	WorkspaceCreated = "platform.workspace.created"
	WorkspaceUpdated = "platform.workspace.updated"
	WorkspaceDeleted = "platform.workspace.deleted"
	// ImageRebuildRequested asks for a build of an image (RebuildRequest).
	ImageRebuildRequested = "platform.image.rebuild.requested"
)

// RebuildRequest is the data of platform.image.rebuild.requested: the
// image by id or name, and why.
type RebuildRequest struct {
	Image  string `json:"image"`
	Reason string `json:"reason"`
}

// DecodeRebuild reads and checks a rebuild request's data.
func DecodeRebuild(e cloudevents.Event) (RebuildRequest, error) {
	var r RebuildRequest
	if !utf8.Valid(e.Data()) {
		return r, fmt.Errorf("%w: data is not valid UTF-8", ErrMalformed)
	}
	if err := e.DataAs(&r); err != nil {
		return r, fmt.Errorf("%w: data is not a rebuild request: %v", ErrMalformed, err)
	}
	r.Image = strings.TrimSpace(r.Image)
	switch {
	case r.Image == "":
		return r, fmt.Errorf("%w: data has no image (its id or name)", ErrMalformed)
	case len(r.Image) > 256 || len(r.Reason) > 1024:
		return r, fmt.Errorf("%w: image is longer than 256 or reason than 1024 bytes", ErrMalformed)
	case strings.ContainsRune(r.Image+r.Reason, utf8.RuneError):
		return r, fmt.Errorf("%w: data has a string that is not valid UTF-8", ErrMalformed)
	}
	return r, nil
}

// Event types Slipway emits.
const (
	ImageCreated   = "dev.slipway.image.created"
	ImageUpdated   = "dev.slipway.image.updated"
	ImageDeleted   = "dev.slipway.image.deleted"
	BuildQueued    = "dev.slipway.build.queued"
	BuildStarted   = "dev.slipway.build.started"
	BuildSucceeded = "dev.slipway.build.succeeded"
	BuildFailed    = "dev.slipway.build.failed"
	BuildCancelled = "dev.slipway.build.cancelled"
	// BuildPushed: a succeeded build was pushed again to a destination
	// (its pushes changed); data is the build.
	BuildPushed = "dev.slipway.build.pushed"
)

// Emitted lists every type Slipway emits.
var Emitted = []string{ImageCreated, ImageUpdated, ImageDeleted, BuildQueued, BuildStarted, BuildSucceeded, BuildFailed, BuildCancelled, BuildPushed}

// Workspace is the data of the platform's workspace events.
type Workspace struct {
	ID      string   `json:"id"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
}

// ErrMalformed marks an event that cannot be understood: the receiver
// answers 400.
var ErrMalformed = errors.New("malformed event")

// DecodeWorkspace reads and checks a workspace event's data.
func DecodeWorkspace(e cloudevents.Event) (Workspace, error) {
	var ws Workspace
	if !utf8.Valid(e.Data()) {
		return ws, fmt.Errorf("%w: data is not valid UTF-8", ErrMalformed)
	}
	if err := e.DataAs(&ws); err != nil {
		return ws, fmt.Errorf("%w: data is not a workspace: %v", ErrMalformed, err)
	}
	ws.ID = strings.TrimSpace(ws.ID)
	if ws.ID == "" {
		return ws, fmt.Errorf("%w: data has no workspace id", ErrMalformed)
	}
	if e.Type() != WorkspaceDeleted && strings.TrimSpace(ws.Owner) == "" {
		return ws, fmt.Errorf("%w: data has no owner", ErrMalformed)
	}
	for _, m := range ws.Members {
		if strings.TrimSpace(m) == "" {
			return ws, fmt.Errorf("%w: data has an empty member", ErrMalformed)
		}
	}
	// encoding/json turns escapes of lone surrogates into U+FFFD: no
	// workspace id or user id holds one.
	for _, s := range append([]string{ws.ID, ws.Owner}, ws.Members...) {
		if strings.ContainsRune(s, utf8.RuneError) {
			return ws, fmt.Errorf("%w: data has a string that is not valid UTF-8", ErrMalformed)
		}
	}
	return ws, nil
}

// WorkspaceOrder is where a workspace event stands in the platform's
// order (see store.Order): its `sequence` extension (any CloudEvents type,
// read as its canonical string) and its `time`. An event with neither (both
// are optional in CloudEvents) is placed at received, the time Slipway got
// it: senders that stamp nothing are applied in arrival order, as before
// orders existed. An empty sequence is ErrMalformed.
func WorkspaceOrder(e cloudevents.Event, received time.Time) (store.Order, error) {
	o := store.Order{Time: e.Time()}
	if v, ok := e.Extensions()["sequence"]; ok {
		seq, err := types.Format(v)
		if err != nil || seq == "" {
			return o, fmt.Errorf("%w: the sequence extension must be a non-empty string", ErrMalformed)
		}
		o.Sequence = seq
	}
	if o.IsZero() {
		o.Time = received
	}
	return o, nil
}

// ReadRequest reads a CloudEvent from an HTTP request in binary or
// structured mode and validates it; failures wrap ErrMalformed.
func ReadRequest(r *http.Request) (cloudevents.Event, error) {
	e, err := cloudevents.NewEventFromHTTPRequest(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return cloudevents.Event{}, err
		}
		return cloudevents.Event{}, fmt.Errorf("%w: not a CloudEvent: %v", ErrMalformed, err)
	}
	if err := e.Validate(); err != nil {
		return cloudevents.Event{}, fmt.Errorf("%w: not a valid CloudEvent: %v", ErrMalformed, err)
	}
	return *e, nil
}

// Key identifies an event for at-least-once deduplication: source and id.
func Key(e cloudevents.Event) string {
	return e.Source() + "\x00" + e.ID()
}

// New returns an event of Slipway's with subject and JSON data.
func New(typ, subject string, data any) (cloudevents.Event, error) {
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetSource(Source)
	e.SetType(typ)
	e.SetSubject(subject)
	e.SetTime(time.Now().UTC())
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return e, err
	}
	return e, nil
}

// Lifecycle is the store.Announcement of a build's lifecycle: a change
// that leaves a build queued, running, succeeded, failed or cancelled is
// announced as build.queued, started, succeeded, failed or cancelled, with
// the build's view at now as data. Attach it (store.Announce) to the
// changes that move a build on, not to those that record a detail.
func Lifecycle(now func() time.Time) store.Announcement {
	return func(changed any) []store.Event {
		b, ok := changed.(build.Build)
		if !ok {
			return nil
		}
		typ := map[build.Status]string{
			build.Queued: BuildQueued, build.Running: BuildStarted, build.Succeeded: BuildSucceeded,
			build.Failed: BuildFailed, build.Cancelled: BuildCancelled,
		}[b.Status]
		if typ == "" {
			return nil
		}
		return []store.Event{{Type: typ, Subject: b.ID(), Data: b.View(now())}}
	}
}

// Pushed is the store.Announcement of a push again: build.pushed, with the
// build's view at now as data.
func Pushed(now func() time.Time) store.Announcement {
	return func(changed any) []store.Event {
		b, ok := changed.(build.Build)
		if !ok {
			return nil
		}
		return []store.Event{{Type: BuildPushed, Subject: b.ID(), Data: b.View(now())}}
	}
}

// ImageChange is the store.Announcement of an image change: an event of
// type typ about the image, with view(image) as data.
func ImageChange(typ string, view func(image.Image) any) store.Announcement {
	return func(changed any) []store.Event {
		img, ok := changed.(image.Image)
		if !ok {
			return nil
		}
		return []store.Event{{Type: typ, Subject: img.ID, Data: view(img)}}
	}
}

// ImageTypes lists the types of image changes.
var ImageTypes = []string{ImageCreated, ImageUpdated, ImageDeleted}

// Handler consumes an event in-process. Returning an error asks for
// redelivery.
type Handler func(ctx context.Context, e cloudevents.Event) error

// Publisher delivers Slipway's events at least once to its local handlers
// and, when a sink is configured, to the sink. Local handlers must be quick:
// their first attempt runs inside Publish. Delivery to the sink and retries
// are asynchronous; Close waits for them.
type Publisher struct {
	sink     cloudevents.Client // nil without K_SINK
	sinkURL  string
	log      *slog.Logger
	mu       sync.RWMutex
	handlers map[string][]Handler
	wg       sync.WaitGroup
	ctx      context.Context
	stop     context.CancelFunc
	notify   func()
	outboxed map[string]bool
}

// BuildLifecycle lists the types Lifecycle announces.
var BuildLifecycle = []string{BuildQueued, BuildStarted, BuildSucceeded, BuildFailed, BuildCancelled}

// ViaOutbox marks types whose events reach the sink through the store's
// outbox (a relay, see package outbox): Publish gives them to the local
// handlers only.
func (p *Publisher) ViaOutbox(types ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.outboxed == nil {
		p.outboxed = map[string]bool{}
	}
	for _, t := range types {
		p.outboxed[t] = true
	}
}

// OnPublish has f called after each Publish: an outbox relay's Notify, so
// that the event a change wrote to the outbox goes out at once.
func (p *Publisher) OnPublish(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = f
}

// NewPublisher returns a Publisher sending to sinkURL ("" for none).
func NewPublisher(sinkURL string, log *slog.Logger) (*Publisher, error) {
	ctx, stop := context.WithCancel(context.Background())
	p := &Publisher{sinkURL: sinkURL, log: log, handlers: map[string][]Handler{}, ctx: ctx, stop: stop}
	if sinkURL != "" {
		c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(sinkURL))
		if err != nil {
			stop()
			return nil, fmt.Errorf("events sink %s: %w", sinkURL, err)
		}
		p.sink = c
	}
	return p, nil
}

// Subscribe registers h for events of type typ.
func (p *Publisher) Subscribe(typ string, h Handler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handlers[typ] = append(p.handlers[typ], h)
}

// Publish announces a change: an event of type typ about subject with data.
func (p *Publisher) Publish(typ, subject string, data any) {
	e, err := New(typ, subject, data)
	if err != nil {
		p.log.Error("event not built", "type", typ, "subject", subject, "error", err)
		return
	}
	p.Deliver(e)
	p.mu.RLock()
	notify := p.notify
	p.mu.RUnlock()
	if notify != nil {
		notify()
	}
}

// Deliver hands e to the local handlers and, unless its type goes
// ViaOutbox, the sink. Local handlers get
// the first attempt before Deliver returns, so they see events in the order
// they were published (the build queue is FIFO by it); a failed attempt is
// retried in the background, like every delivery to the sink.
func (p *Publisher) Deliver(e cloudevents.Event) {
	p.mu.RLock()
	hs := p.handlers[e.Type()]
	toSink := p.sink != nil && !p.outboxed[e.Type()]
	p.mu.RUnlock()
	for _, h := range hs {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		err := p.handle(ctx, h, e)
		cancel()
		if err == nil || errors.Is(err, errPanicked) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.retry(e, "local", func(ctx context.Context) error { return p.handle(ctx, h, e) })
		}()
	}
	if toSink {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.retry(e, p.sinkURL, func(ctx context.Context) error {
				if res := p.sink.Send(ctx, e); !cloudevents.IsACK(res) {
					return res
				}
				return nil
			})
		}()
	}
}

// errPanicked is what handle returns for a handler that panicked: it is
// logged, and not retried (it would panic again).
var errPanicked = errors.New("the event handler panicked")

// handle runs h on e; a panic of h is recovered and logged, so that an event
// never takes down the goroutine that publishes it.
func (p *Publisher) handle(ctx context.Context, h Handler, e cloudevents.Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("event handler panicked", "type", e.Type(), "id", e.ID(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = errPanicked
		}
	}()
	return h(ctx, e)
}

// retry delivers with exponential backoff, up to five attempts; the
// reconciler repairs what is lost past that.
func (p *Publisher) retry(e cloudevents.Event, to string, send func(context.Context) error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		err := send(ctx)
		cancel()
		if err == nil {
			return
		}
		if attempt == 5 || p.ctx.Err() != nil {
			p.log.Error("event not delivered", "type", e.Type(), "id", e.ID(), "to", to, "attempts", attempt, "error", err)
			return
		}
		select {
		case <-time.After(backoff):
		case <-p.ctx.Done():
		}
		backoff *= 4
	}
}

// Close waits up to timeout for deliveries under way, then abandons them.
func (p *Publisher) Close(timeout time.Duration) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	p.stop()
	<-done
}
