package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Path is where Slipway serves the token endpoint, outside /v2/.
const Path = "/auth/token"

// AccessTTL is how long an access token is valid (at most: never past the
// credential it was exchanged for).
const AccessTTL = 5 * time.Minute

// maxScopes bounds the scopes of one token request.
const maxScopes = 32

// Authority issues the internal registry's tokens. As an http.Handler it is
// the token endpoint: GET with service and scope parameters and
// HTTP basic auth (any user name, a Slipway token or a build credential as
// the password) or a bearer Slipway token, as the Docker registry token
// specification has it; and POST of the OAuth2 form (grant_type password
// or refresh_token, the credential as password or refresh_token) that
// containerd and docker send. Scopes the caller may not have are dropped
// from the token, as the specification says; the registry then refuses
// what they would have allowed.
type Authority struct {
	Signer *Signer
	Rights Rights
	// Realm is the token endpoint's absolute URL, as clients reach it.
	Realm string
	// Users verifies Slipway tokens (the API's own verifier).
	Users auth.Verifier
	// Builds finds builds: a build's credential is good only while its
	// build is queued or running.
	Builds Builds
	Log    *slog.Logger
}

// principal is who a credential speaks for: a user, or one build.
type principal struct {
	user    string
	build   *BuildClaims
	expires time.Time
}

func (p principal) subject() string {
	if p.build != nil {
		return "build:" + p.build.Build
	}
	return p.user
}

// tokenError is an answer other than a token.
type tokenError struct {
	status int
	code   string // OAuth2 error code (POST); the GET body says it upper case, or UNAUTHORIZED for a 401
	msg    string
}

func (e *tokenError) Error() string { return e.msg }

func errUnauthorized(msg string) *tokenError {
	return &tokenError{http.StatusUnauthorized, "invalid_grant", msg}
}

func errBadRequest(code, format string, args ...any) *tokenError {
	return &tokenError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

// ServeHTTP answers a token request.
func (a *Authority) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	oauth := r.Method == http.MethodPost
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !oauth {
		w.Header().Set("Allow", "GET, POST")
		a.fail(w, oauth, &tokenError{http.StatusMethodNotAllowed, "invalid_request", "use GET (token flow) or POST (OAuth2 form)"})
		return
	}
	tok, expiresIn, issued, err := a.issue(r, oauth)
	if err != nil {
		a.fail(w, oauth, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": expiresIn, "issued_at": issued.UTC().Format(time.RFC3339),
	})
}

func (a *Authority) fail(w http.ResponseWriter, oauth bool, err error) {
	var te *tokenError
	if !errors.As(err, &te) {
		a.Log.Error("registry token request failed", "error", err)
		te = &tokenError{http.StatusInternalServerError, "server_error", "internal error"}
	}
	if te.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="slipway registry token", charset="UTF-8"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(te.status)
	if oauth {
		json.NewEncoder(w).Encode(map[string]string{"error": te.code, "error_description": te.msg})
		return
	}
	// The token flow's clients read Distribution's error codes.
	code := strings.ToUpper(te.code)
	if te.status == http.StatusUnauthorized {
		code = "UNAUTHORIZED"
	}
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": te.msg}}})
}

// issue authenticates the request and signs a token of the scopes it asks
// for that the caller may have.
func (a *Authority) issue(r *http.Request, oauth bool) (string, int, time.Time, error) {
	var cred string
	var scopes []string
	var service string
	if oauth {
		r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			return "", 0, time.Time{}, errBadRequest("invalid_request", "the body is not a valid form: %v", err)
		}
		switch gt := r.PostForm.Get("grant_type"); gt {
		case "password":
			cred = r.PostForm.Get("password")
		case "refresh_token":
			cred = r.PostForm.Get("refresh_token")
		default:
			return "", 0, time.Time{}, &tokenError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q: use password or refresh_token (with a Slipway token)", gt)}
		}
		service, scopes = r.PostForm.Get("service"), r.PostForm["scope"]
	} else {
		q := r.URL.Query()
		service, scopes = q.Get("service"), q["scope"]
		if _, pw, ok := r.BasicAuth(); ok {
			cred = pw
		} else if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			cred = strings.TrimSpace(b)
		}
	}
	if service != "" && service != Service {
		return "", 0, time.Time{}, errBadRequest("invalid_request", "service %q: this endpoint issues tokens for %q", service, Service)
	}
	wanted, err := parseScopes(scopes)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	if cred == "" {
		return "", 0, time.Time{}, errUnauthorized("credentials are required: HTTP basic auth with a Slipway token as the password")
	}
	p, err := a.authenticate(r.Context(), cred)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	granted, err := a.grant(r.Context(), p, wanted)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	now := a.Signer.now()
	expires := now.Add(AccessTTL)
	if !p.expires.IsZero() && p.expires.Before(expires) {
		expires = p.expires
	}
	tok, err := a.Signer.AccessToken(p.subject(), granted, expires)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	return tok, int(expires.Sub(now).Seconds()), now, nil
}

// authenticate tells a build credential from a Slipway token.
func (a *Authority) authenticate(ctx context.Context, cred string) (principal, error) {
	if b, exp, err := a.Signer.verifyCredential(cred); err == nil {
		bd, err := a.Builds.GetBuild(ctx, b.Image, b.Number)
		if b.Publish {
			b.Push = nil // pull only
		}
		if errors.Is(err, store.ErrNotFound) || (err == nil && !bd.Status.Active() && !(b.Publish && bd.Status == build.Succeeded)) {
			return principal{}, errUnauthorized("the build this credential was minted for has ended")
		}
		if err != nil {
			return principal{}, err
		}
		return principal{build: &b, expires: exp}, nil
	}
	id, err := a.Users.Verify(ctx, cred)
	if err != nil {
		return principal{}, errUnauthorized("the credential is not a valid Slipway token")
	}
	return principal{user: id.Subject, expires: id.Expires}, nil
}

// grant keeps of wanted what p may have, in the order asked.
func (a *Authority) grant(ctx context.Context, p principal, wanted []Access) ([]Access, error) {
	var out []Access
	for _, w := range wanted {
		var got []string
		switch {
		case w.Type == "registry" && w.Name == "catalog":
			if p.build == nil && slices.Contains(w.Actions, "*") {
				got = []string{"*"}
			}
		case w.Type == "repository" && p.build != nil:
			got = buildActions(*p.build, w.Name, w.Actions)
		case w.Type == "repository":
			var err error
			if got, err = a.Rights.userActions(ctx, p.user, w.Name, w.Actions); err != nil {
				return nil, err
			}
		}
		if len(got) > 0 {
			out = append(out, Access{Type: w.Type, Name: w.Name, Actions: got})
		}
	}
	return out, nil
}

// parseScopes reads scope parameters ("repository:team/app:pull,push",
// several per parameter separated by spaces, as OAuth2 has it). A scope of
// a type other than repository or registry is ignored; "*" on a repository
// asks for every action.
func parseScopes(params []string) ([]Access, error) {
	var out []Access
	for _, p := range params {
		for _, s := range strings.Fields(p) {
			if len(out) == maxScopes {
				return nil, errBadRequest("invalid_scope", "at most %d scopes per request", maxScopes)
			}
			typ, rest, ok1 := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if !ok1 || i < 0 {
				return nil, errBadRequest("invalid_scope", "scope %q: want TYPE:NAME:ACTIONS, e.g. repository:team/app:pull", s)
			}
			res, actions := rest[:i], strings.Split(rest[i+1:], ",")
			if t, _, ok := strings.Cut(typ, "("); ok { // a resource class: repository(plugin)
				typ = t
			}
			switch typ {
			case "repository":
				// An OCI repository path; reserved namespaces are names too.
				if err := image.ValidateName(res); err != nil && !errors.Is(err, image.ErrReservedName) {
					return nil, errBadRequest("invalid_scope", "scope %q: %q is not a repository name", s, res)
				}
				if slices.Contains(actions, "*") {
					actions = []string{Pull, Push, Delete}
				}
			case "registry":
			default:
				continue
			}
			out = append(out, Access{Type: typ, Name: res, Actions: actions})
		}
	}
	return out, nil
}

// BuildCredential mints the credential of one build of an image of
// workspace b.Workspace, valid for ttl (the build's timeout): push and pull
// on b.Push (the image's repository and its cache repository), and pull on
// those of b.Pull (the repositories its FROMs name in the internal
// registry) that the workspace may read. The build's steps can read it, so
// it allows nothing else.
func (a *Authority) BuildCredential(ctx context.Context, b BuildClaims, ttl time.Duration) (string, error) {
	pulls, err := a.Rights.BuildPulls(ctx, b.Workspace, b.Pull)
	if err != nil {
		return "", err
	}
	b.Pull = pulls
	return a.Signer.BuildCredential(b, ttl)
}

// PullCredential mints a short-lived credential of build number of image
// that pulls repo alone: what Slipway reads a built image back with to copy
// it to external registries, while the build runs and, to push it again,
// once it has succeeded.
func (a *Authority) PullCredential(image string, number int, repo string, ttl time.Duration) (string, error) {
	return a.Signer.BuildCredential(BuildClaims{Image: image, Number: number, Pull: []string{repo}, Publish: true}, ttl)
}

// WatchToken is an access token that pulls repo, when workspace ws may
// read it (as its builds may: library/ and the workspace's own images),
// and nothing otherwise: what Slipway checks a workspace's internal base
// images with (package rebuild). It never leaves the server.
func (a *Authority) WatchToken(ctx context.Context, ws, repo string) (string, error) {
	pulls, err := a.Rights.BuildPulls(ctx, ws, []string{repo})
	if err != nil {
		return "", err
	}
	var access []Access
	if len(pulls) > 0 {
		access = []Access{{Type: "repository", Name: repo, Actions: []string{Pull}}}
	}
	return a.Signer.AccessToken("slipway-rebuild:"+ws, access, a.Signer.now().Add(AccessTTL))
}

// Builds finds a build by image and number (store.ErrNotFound if none).
type Builds interface {
	GetBuild(ctx context.Context, imageID string, number int) (build.Build, error)
}

// Challenge is the WWW-Authenticate value that sends a client to the token
// endpoint for the catalog.
func (a *Authority) Challenge() string {
	return fmt.Sprintf(`Bearer realm=%q,service=%q,scope="registry:catalog:*"`, a.Realm, Service)
}

// CatalogCaller returns the subject of the request's bearer access token
// when it grants the catalog.
func (a *Authority) CatalogCaller(r *http.Request) (string, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", fmt.Errorf("%w: no bearer token", ErrInvalid)
	}
	subject, access, err := a.Signer.VerifyAccess(strings.TrimSpace(raw))
	if err != nil {
		return "", err
	}
	if !Grants(access, "registry", "catalog", "*") {
		return "", fmt.Errorf("%w: the token does not grant the catalog", ErrInvalid)
	}
	return subject, nil
}

// MayPull reports whether subject may pull repo (see Rights).
func (a *Authority) MayPull(ctx context.Context, subject, repo string) (bool, error) {
	return a.Rights.MayPull(ctx, subject, repo)
}
