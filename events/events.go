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
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
)

// Source is the source attribute of every event Slipway emits.
const Source = "/slipway"

// Event types consumed from the platform.
const (
	WorkspaceCreated = "platform.workspace.created"
	WorkspaceUpdated = "platform.workspace.updated"
	WorkspaceDeleted = "platform.workspace.deleted"
)

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
)

// Emitted lists every type Slipway emits.
var Emitted = []string{ImageCreated, ImageUpdated, ImageDeleted, BuildQueued, BuildStarted, BuildSucceeded, BuildFailed, BuildCancelled}

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
}

// Deliver hands e to the local handlers and the sink. Local handlers get
// the first attempt before Deliver returns, so they see events in the order
// they were published (the build queue is FIFO by it); a failed attempt is
// retried in the background, like every delivery to the sink.
func (p *Publisher) Deliver(e cloudevents.Event) {
	p.mu.RLock()
	hs := p.handlers[e.Type()]
	p.mu.RUnlock()
	for _, h := range hs {
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		err := h(ctx, e)
		cancel()
		if err == nil {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.retry(e, "local", func(ctx context.Context) error { return h(ctx, e) })
		}()
	}
	if p.sink != nil {
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
