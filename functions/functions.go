// Package functions holds Slipway's HTTP handlers: the images API, the
// credentials API, the build endpoints and the CloudEvents receiver. They
// speak only to the interfaces in Deps, never to a concrete backend, so the
// same handlers run in the single local process and as Knative functions.
package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Sealer seals credentials before they are stored.
type Sealer interface {
	Seal(plaintext string) (string, error)
}

// Publisher announces state changes as CloudEvents.
type Publisher interface {
	Publish(typ, subject string, data any)
}

// LiveLog streams the log of a build whose runner is elsewhere (a build
// pod in the cluster) while it runs, before the build's log is in the store.
type LiveLog interface {
	// Follow writes build id's log from byte offset on to w as it grows,
	// until the runner's log ends or ctx is done, and returns the bytes it
	// wrote.
	Follow(ctx context.Context, id string, offset int64, w io.Writer) (int64, error)
}

// Pusher pushes a succeeded build's image again to one of its image's
// external destinations (publish.Publisher), bounded by ctx, and returns
// the result.
type Pusher interface {
	PushAgain(ctx context.Context, img image.Image, b build.Build, dest image.Destination) build.Push
}

// Deps is what the handlers need.
type Deps struct {
	Store      store.Store
	Verifier   auth.Verifier
	Events     Publisher
	Sealer     Sealer
	Log        *slog.Logger
	Rules      image.Rules
	Registry   string   // HOST:PORT of the internal registry
	Version    string   // the server's version
	Publishers []string // subjects allowed to post events
	MaxBody    int64    // request body cap in bytes
	// BodyTimeout is how long a client has, from the end of its headers,
	// to send its whole request body (0: 30 s); a client that trickles it
	// is cut off.
	BodyTimeout time.Duration
	Now         func() time.Time
	// LogPoll is how often a followed build log is checked for more.
	LogPoll time.Duration
	// Live, when set, streams a running build's log from its runner for
	// ?follow=true while the store has none of it yet (the cluster).
	Live LiveLog
	// IgnoreWorkspaces: POST /events acknowledges the platform's workspace
	// events without handling them (a cluster role other than receiver).
	IgnoreWorkspaces bool
	// Handlers handle further event types at POST /events (the cluster
	// roles' build and pod events).
	Handlers map[string]events.Handler
	// Content is the internal registry's content, kept in step with the
	// catalogue: removed with its image or workspace, purged when a name is
	// claimed, moved with a rename. Nil: the registry is external (the
	// cluster's) and keeps its own content, and references stay as built.
	Content Content
	// Pushes pushes built images again to their destinations (POST
	// .../builds/{n}/pushes); nil: that answers 501.
	Pushes Pusher
	// Rebuilds requests the builds of rebuild events and git webhooks (nil:
	// this role requests none), and Opener opens the webhooks' sealed
	// secrets.
	Rebuilds Rebuilds
	Opener   Opener
}

// Opener opens what Sealer sealed.
type Opener interface {
	Open(sealed string) (string, error)
}

type ctxKey struct{}

// subject returns the caller's identity set by authenticate.
func subject(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(auth.Identity)
	return id.Subject
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type api struct {
	Deps
	answers answers
}

// authenticate verifies the bearer token before calling h, and reads the
// request body (at most MaxBody bytes) within BodyTimeout.
func (a *api) authenticate(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The deadline covers whatever is read of the body, also what the
		// server discards after an early answer; it is lifted once the body
		// is in, so that a followed log can stream for as long as it lasts.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(a.BodyTimeout))
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			writeError(w, r, a.Log, auth.ErrUnauthenticated)
			return
		}
		id, err := a.Verifier.Verify(r.Context(), strings.TrimSpace(token))
		if err != nil {
			writeError(w, r, a.Log, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, id))
		a.withBody(h, rc)(w, r)
	})
}

// withBody reads the request body (at most MaxBody bytes) within the read
// deadline set on rc, then calls h with it.
func (a *api) withBody(h handlerFunc, rc *http.ResponseController) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.MaxBody))
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			writeError(w, r, a.Log, err)
			return
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			writeError(w, r, a.Log, errorf(http.StatusRequestTimeout, "request_timeout", "the request body did not arrive within %s", a.BodyTimeout))
			return
		case err != nil:
			writeError(w, r, a.Log, errorf(http.StatusBadRequest, "invalid_json", "reading the request body: %v", err))
			return
		}
		rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := guard(h, w, r); err != nil {
			writeError(w, r, a.Log, err)
		}
	}
}

// unauthenticated is authenticate without the token, for callers that
// authenticate otherwise (the git hosts' signed webhooks).
func (a *api) unauthenticated(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(a.BodyTimeout))
		a.withBody(h, rc)(w, r)
	})
}

// guard runs h; a panic of h (on input nobody foresaw) becomes an error,
// answered 500 and logged with its stack, instead of a dropped connection.
func guard(h handlerFunc, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h(w, r)
}

// decode reads a JSON body strictly: one object, no unknown fields.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if err := checkUTF8(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "invalid_json", "request body is empty")
		}
		return errorf(http.StatusBadRequest, "invalid_json", "request body is not valid JSON for this call: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "invalid_json", "request body has data after the JSON object")
	}
	return nil
}

// escapedReplacement is U+FFFD written as a JSON escape, in any case.
var escapedReplacement = regexp.MustCompile(`(?i)\\ufffd`)

// checkUTF8 refuses a JSON body with a string that is not valid UTF-8:
// raw invalid bytes, or escapes of lone surrogates, which encoding/json
// would silently store as U+FFFD.
func checkUTF8(raw []byte) error {
	bad := errorf(http.StatusBadRequest, "invalid_utf8", "the request body has a string that is not valid UTF-8")
	if !utf8.Valid(raw) {
		return bad
	}
	// Every U+FFFD the decoder produces must have been in the body, as the
	// character itself or as its escape; any more are replacements.
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil // decode reports it
	}
	sent := len(escapedReplacement.FindAll(raw, -1)) + bytes.Count(raw, []byte(string(utf8.RuneError)))
	if countReplacements(v) > sent {
		return bad
	}
	return nil
}

func countReplacements(v any) int {
	n := 0
	switch v := v.(type) {
	case string:
		n = strings.Count(v, string(utf8.RuneError))
	case []any:
		for _, e := range v {
			n += countReplacements(e)
		}
	case map[string]any:
		for k, e := range v {
			n += strings.Count(k, string(utf8.RuneError)) + countReplacements(e)
		}
	}
	return n
}

// page reads ?limit= and ?page_token=.
func page(r *http.Request, def, max int) (store.Page, error) {
	p := store.Page{Limit: def, Cursor: r.URL.Query().Get("page_token")}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > max {
			return p, errorf(http.StatusBadRequest, "invalid_argument", "limit must be a whole number from 1 to %d", max)
		}
		p.Limit = n
	}
	return p, nil
}

// workspaceRole loads a workspace and the caller's role in it. A caller with
// no role gets not found: a workspace's existence is private.
func (a *api) workspaceRole(ctx context.Context, wsID string) (store.Workspace, store.Role, error) {
	ws, err := a.Store.GetWorkspace(ctx, wsID)
	if err != nil {
		return ws, store.RoleNone, err
	}
	role := ws.RoleOf(subject(ctx))
	if role == store.RoleNone {
		return ws, role, errNotFound
	}
	return ws, role, nil
}

// imageRole loads an image and the caller's role in its workspace.
func (a *api) imageRole(ctx context.Context, id string) (image.Image, store.Role, error) {
	img, err := a.Store.GetImage(ctx, id)
	if err != nil {
		return img, store.RoleNone, err
	}
	_, role, err := a.workspaceRole(ctx, img.Workspace)
	return img, role, err
}

// New returns the API handler: /api/v1/... and /events.
func New(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = func() time.Time { return time.Now().UTC() }
	}
	if d.BodyTimeout == 0 {
		d.BodyTimeout = 30 * time.Second
	}
	if d.LogPoll == 0 {
		d.LogPoll = 250 * time.Millisecond
	}
	a := &api{Deps: d}
	mux := http.NewServeMux()
	route := func(pattern string, h handlerFunc) { mux.Handle(pattern, a.authenticate(h)) }
	// The contract: every /api/ request carries a token, even these.
	route("GET /api/v1/info", a.info)
	route("GET /api/v1/openapi.yaml", serveOpenAPI)
	route("GET /api/v1/workspaces/{ws}", a.getWorkspace)
	route("GET /api/v1/workspaces/{ws}/images", a.listImages)
	route("POST /api/v1/workspaces/{ws}/images", a.createImage)
	route("GET /api/v1/images/{id}", a.getImage)
	route("PATCH /api/v1/images/{id}", a.patchImage)
	route("DELETE /api/v1/images/{id}", a.deleteImage)
	route("POST /api/v1/images/{id}/builds", a.createBuild)
	route("GET /api/v1/images/{id}/builds", a.listBuilds)
	route("GET /api/v1/images/{id}/builds/{n}", a.getBuild)
	route("GET /api/v1/images/{id}/builds/{n}/log", a.getLog)
	route("GET /api/v1/images/{id}/builds/{n}/steps", a.getSteps)
	route("GET /api/v1/images/{id}/builds/{n}/diff", a.diffBuild)
	route("POST /api/v1/images/{id}/builds/{n}/cancel", a.cancelBuild)
	route("POST /api/v1/images/{id}/builds/{n}/pushes", a.pushAgain)
	route("PUT /api/v1/workspaces/{ws}/credentials/{name}", a.putCredential)
	route("GET /api/v1/workspaces/{ws}/credentials", a.listCredentials)
	route("DELETE /api/v1/workspaces/{ws}/credentials/{name}", a.deleteCredential)
	route("POST /events", a.receive)
	route("GET /api/v1/images/{id}/webhook", a.getWebhook)
	route("POST /api/v1/images/{id}/webhook", a.newWebhook)
	// Git hosts call it without a token: the delivery's signature
	// authenticates it (see gitHook).
	mux.Handle("POST /hooks/v1/images/{id}/git", a.unauthenticated(a.gitHook)) // HookPath
	return jsonMuxErrors(mux, a.Log)
}

// jsonMuxErrors answers what the mux matches nothing for (404, 405) in the
// contract's JSON error shape instead of the mux's plain text.
func jsonMuxErrors(mux *http.ServeMux, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeError(w, r, log, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; allowed: %s", r.Method, rec.header.Get("Allow")))
			return
		}
		writeError(w, r, log, errorf(http.StatusNotFound, "not_found", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// statusRecorder captures what the mux would answer without sending it.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

// getWorkspace shows a workspace to its owner and members, with the caller's
// role, so that a client can tell beforehand what the caller may do.
func (a *api) getWorkspace(w http.ResponseWriter, r *http.Request) error {
	ws, role, err := a.workspaceRole(r.Context(), r.PathValue("ws"))
	if err != nil {
		return err
	}
	members := ws.Members
	if members == nil {
		members = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": ws.ID, "owner": ws.Owner, "members": members, "role": map[store.Role]string{store.RoleOwner: "owner", store.RoleMember: "member"}[role]})
	return nil
}

func (a *api) info(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"registry": a.Registry, "version": a.Version, "new_image_dockerfile": image.Template(a.Registry)})
	return nil
}

// isPublisher reports whether subject may post events.
func (a *api) isPublisher(subject string) bool { return slices.Contains(a.Publishers, subject) }

// etag formats an image version as a strong ETag.
func etag(version int64) string { return fmt.Sprintf(`"%d"`, version) }
