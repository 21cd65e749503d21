package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/dispatch"
	"github.com/slipway-dev/slipway/pkg/registry/token"
	"github.com/slipway-dev/slipway/pkg/server"
)

// The internal registry's access rules, through the token flow, with real
// clients against a real server: who may pull, push, delete, list the
// catalog and list tags, across two workspaces.

// nodePool is the platform service subject (compute nodes) of these tests.
const nodePool = "node-pool"

// registryEnv is a server with workspace ws1 (owner alice, member bob) and
// its built image team/a, workspace ws2 (owner carol, member dave) and its
// built image other/b, and the base library/busybox.
func registryEnv(t *testing.T) (e *env, refA, refB string) {
	t.Helper()
	e = buildEnv(t, func(c *server.Config) {
		c.RegistryPullers = []string{nodePool}
		// Builds recorded in the store by a test stay queued: no
		// reconciler runs them (see activeBuild).
		c.ReconcileInterval = time.Hour
	})
	e.announce(events.WorkspaceCreated, "ws2", "carol", "dave")
	refA = e.buildAs("ws1", "alice", "team/a", "FROM "+e.base()+"\nRUN echo a > /a\n")
	refB = e.buildAs("ws2", "carol", "other/b", "FROM "+e.base()+"\nRUN echo private to ws2 > /b\n")
	return e, refA, refB
}

// buildAs creates an image in ws as owner, builds it, and returns the
// build's reference.
func (e *env) buildAs(ws, owner, name, dockerfile string) string {
	e.t.Helper()
	var img image
	if res := e.call("POST", "/api/v1/workspaces/"+ws+"/images", owner, localImage(name, dockerfile), &img); res.StatusCode != 201 {
		e.t.Fatalf("create %s: %d", name, res.StatusCode)
	}
	var b buildJSON
	if res := e.call("POST", "/api/v1/images/"+img.ID+"/builds", owner, nil, &b); res.StatusCode != 202 {
		e.t.Fatalf("build %s: %d", name, res.StatusCode)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !ended(b) {
		if time.Now().After(deadline) {
			e.t.Fatalf("build of %s still %s", name, b.Status)
		}
		time.Sleep(50 * time.Millisecond)
		e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", img.ID, b.Number), owner, nil, &b)
	}
	if b.Status != "succeeded" {
		res, log := e.c.JSON("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d/log", img.ID, b.Number), e.token(owner), nil)
		e.t.Fatalf("build of %s: %+v (log %d)\n%s", name, b, res.StatusCode, log)
	}
	return *b.Reference
}

// refusal reports whether err is the registry's (or its token endpoint's)
// refusal: 401 or 403.
func refusal(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden)
}

func TestRegistryAccessMatrix(t *testing.T) {
	e, refA, refB := registryEnv(t)
	host := e.srv.RegistryHost()
	reg, _ := name.NewRegistry(host)
	ctx := context.Background()
	// The credential of a queued build of team/a, minted as the dispatcher
	// mints it; it asks for other/b too, which the authority must drop (ws1
	// may not read it).
	b := e.activeBuild("team/a")
	buildCred, err := e.srv.RegistryTokens.BuildCredential(ctx, token.BuildClaims{
		Image: b.Image, Number: b.Number, Workspace: "ws1", Push: []string{"team/a"}, Pull: []string{"library/busybox", "other/b"},
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	subjects := []struct {
		who     string
		auth    remote.Option
		allowed []string // the operations that succeed; every other one is refused
		catalog []string // nil: the catalog is refused
	}{
		{"anonymous", remote.WithAuth(authn.Anonymous), nil, nil},
		{"bad token", remote.WithAuth(&authn.Basic{Username: "alice", Password: "not-a-token"}), nil, nil},
		{"outsider", e.ts.RegistryAs("mallory"), []string{"pull library", "tags library"}, []string{"library/busybox"}},
		{"member", e.ts.RegistryAs("bob"), []string{"pull a", "pull library", "tags a", "tags library"}, []string{"library/busybox", "team/a"}},
		{"owner", e.ts.RegistryAs("alice"), []string{"pull a", "pull library", "tags a", "tags library"}, []string{"library/busybox", "team/a"}},
		{"other owner", e.ts.RegistryAs("carol"), []string{"pull b", "pull library", "tags b", "tags library"}, []string{"library/busybox", "other/b"}},
		{"service", e.ts.RegistryAs(nodePool), []string{"pull a", "pull b", "pull library", "tags a", "tags b", "tags library"}, []string{"library/busybox", "other/b", "team/a"}},
		{"build", remote.WithAuth(&authn.Basic{Username: dispatch.BuildUser, Password: buildCred}), []string{"pull a", "pull library", "push a", "tags a", "tags library"}, nil},
		{"publisher", e.ts.RegistryAs("platform"), []string{"pull library", "push library", "tags library"}, []string{"library/busybox"}},
	}
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	repoOf := map[string]string{"a": "team/a", "b": "other/b", "library": "library/busybox"}
	digestA := ref(refA).(name.Digest)
	for _, s := range subjects {
		t.Run(s.who, func(t *testing.T) {
			tag := strings.ReplaceAll(s.who, " ", "-")
			ops := map[string]func() error{
				"delete a": func() error { return remote.Delete(digestA, s.auth) },
				"delete b": func() error { return remote.Delete(ref(refB), s.auth) },
			}
			for short, repo := range repoOf {
				ops["pull "+short] = func() error {
					img, err := remote.Image(ref(host+"/"+repo+":latest"), s.auth)
					if err == nil {
						_, err = img.RawManifest()
					}
					return err
				}
				ops["tags "+short] = func() error {
					_, err := remote.List(ref(host+"/"+repo).Context(), s.auth)
					return err
				}
				ops["push "+short] = func() error {
					img, _ := random.Image(64, 1)
					return remote.Write(ref(host+"/"+repo+":pushed-by-"+tag), img, s.auth)
				}
			}
			for op, f := range ops {
				err := f()
				switch {
				case slices.Contains(s.allowed, op) && err != nil:
					t.Errorf("%s: %v, want allowed", op, err)
				case !slices.Contains(s.allowed, op) && !refusal(err):
					t.Errorf("%s: %v, want 401 or 403", op, err)
				}
			}
			got, err := remote.Catalog(ctx, reg, s.auth)
			switch {
			case s.catalog == nil && !refusal(err):
				t.Errorf("catalog: %v, %v; want 401 or 403", got, err)
			case s.catalog != nil && (err != nil || !slices.Equal(got, s.catalog)):
				t.Errorf("catalog: %v, %v; want %v", got, err, s.catalog)
			}
		})
	}
	// Nothing the refused ones tried changed anything: the references
	// resolve, to the same digests, and the only tags pushed are the
	// allowed ones.
	for _, r := range []string{refA, refB} {
		if _, err := remote.Image(ref(r), e.ts.RegistryAs(nodePool)); err != nil {
			t.Fatalf("%s after the matrix: %v", r, err)
		}
	}
	for repo, want := range map[string][]string{"team/a": {"latest", "pushed-by-build"}, "other/b": {"latest"}, "library/busybox": {"latest", "pushed-by-publisher"}} {
		tags, err := remote.List(ref(host+"/"+repo).Context(), e.ts.RegistryAs(nodePool))
		slices.Sort(tags)
		if err != nil || !slices.Equal(tags, want) {
			t.Errorf("tags of %s: %v, %v; want %v", repo, tags, err, want)
		}
	}
	if latest, err := remote.Head(ref(host+"/team/a:latest"), e.ts.RegistryAs("alice")); err != nil || latest.Digest.String() != digestA.DigestStr() {
		t.Errorf("team/a:latest is %v (%v), want %s", latest, err, digestA.DigestStr())
	}
	// A build's credential ends with its build.
	want(t, e.call("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", b.Image, b.Number), "alice", nil, nil), 202, "")
	if _, err := remote.Image(ref(refA), remote.WithAuth(&authn.Basic{Username: dispatch.BuildUser, Password: buildCred})); !refusal(err) {
		t.Fatalf("the credential of a cancelled build still pulls: %v", err)
	}
}

// activeBuild records a queued build of the image named name, as a build
// request does, but announces it to nobody: it stays queued.
func (e *env) activeBuild(name string) build.Build {
	e.t.Helper()
	img, err := e.srv.Store.GetImageByName(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := e.srv.Store.CreateBuild(context.Background(), build.New(img.ID, img.DefinitionRev, "alice", build.TriggerManual, time.Now().UTC()))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// registryToken asks the token endpoint for scopes as subject (basic auth,
// the Slipway token as the password) and returns the access token.
func (e *env) registryToken(subject string, scopes ...string) string {
	e.t.Helper()
	q := url.Values{"service": {token.Service}, "scope": scopes}
	req, _ := http.NewRequest("GET", e.baseURL+token.Path+"?"+q.Encode(), nil)
	req.SetBasicAuth(subject, e.token(subject))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Token string }
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&body) != nil || body.Token == "" {
		e.t.Fatalf("token for %s %v: %d", subject, scopes, res.StatusCode)
	}
	return body.Token
}

// catalogPage gets one page of /v2/_catalog with a bearer token.
func (e *env) catalogPage(bearer, query string) (status int, repos []string, link string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.baseURL+"/v2/_catalog"+query, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Repositories []string }
	json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body.Repositories, res.Header.Get("Link")
}

// TestRegistryCatalogPagination: n, last and the Link header as the
// distribution specification has them, over the repositories the caller
// may pull only.
func TestRegistryCatalogPagination(t *testing.T) {
	e := start(t, serverConfig(t))
	host := e.srv.RegistryHost()
	var all []string
	for i := range 5 {
		repo := fmt.Sprintf("library/r%d", i)
		img, _ := random.Image(64, 1)
		r, _ := name.ParseReference(host + "/" + repo + ":1")
		if err := remote.Write(r, img, e.ts.RegistryAs("platform")); err != nil {
			t.Fatal(err)
		}
		all = append(all, repo)
	}
	tok := e.registryToken("mallory", "registry:catalog:*")
	var got []string
	query := "?n=2"
	for pages := 0; query != ""; pages++ {
		status, repos, link := e.catalogPage(tok, query)
		if status != 200 || len(repos) > 2 || pages > 3 {
			t.Fatalf("page %d (%s): %d %v", pages, query, status, repos)
		}
		got = append(got, repos...)
		query = ""
		if link != "" {
			next, ok := strings.CutPrefix(link, "</v2/_catalog")
			next, ok2 := strings.CutSuffix(next, `>; rel="next"`)
			if !ok || !ok2 {
				t.Fatalf("Link %q", link)
			}
			if u, _ := url.ParseQuery(strings.TrimPrefix(next, "?")); u.Get("last") != repos[len(repos)-1] || u.Get("n") != "2" {
				t.Fatalf("Link %q after %v", link, repos)
			}
			query = next
		}
	}
	if !slices.Equal(got, all) {
		t.Fatalf("paged catalog %v, want %v", got, all)
	}
	// A real client follows the Link header page by page.
	reg, _ := name.NewRegistry(host)
	if repos, err := remote.Catalog(context.Background(), reg, e.ts.RegistryAs("mallory"), remote.WithPageSize(2)); err != nil || !slices.Equal(repos, all) {
		t.Fatalf("go-containerregistry's paged catalog: %v, %v", repos, err)
	}
	if _, repos, link := e.catalogPage(tok, "?n=2&last=library/r3"); !slices.Equal(repos, []string{"library/r4"}) || link != "" {
		t.Fatalf("after library/r3: %v, Link %q", repos, link)
	}
	if _, repos, _ := e.catalogPage(tok, "?n=5000"); !slices.Equal(repos, all) {
		t.Fatalf("n above the maximum: %v", repos)
	}
	if status, repos, link := e.catalogPage(tok, "?n=0"); status != 200 || len(repos) != 0 || link != "" {
		t.Fatalf("n=0: %d %v %q", status, repos, link)
	}
	for _, bad := range []string{"?n=-1", "?n=two"} {
		if status, _, _ := e.catalogPage(tok, bad); status != http.StatusBadRequest {
			t.Fatalf("%s: %d, want 400", bad, status)
		}
	}
	// A token without the catalog scope, or none: 401 with the challenge.
	for _, bearer := range []string{"", e.registryToken("mallory", "repository:library/r0:pull"), e.token("mallory")} {
		req, _ := http.NewRequest("GET", e.baseURL+"/v2/_catalog", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != fmt.Sprintf(`Bearer realm="%s/auth/token",service="slipway-registry",scope="registry:catalog:*"`, e.baseURL) {
			t.Fatalf("catalog without its scope: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestRegistryCatalogFiltersAcrossPages: a page is filled with what the
// caller may pull, skipping what it may not.
func TestRegistryCatalogFiltersAcrossPages(t *testing.T) {
	e, _, _ := registryEnv(t)
	tok := e.registryToken("bob", "registry:catalog:*")
	status, repos, link := e.catalogPage(tok, "?n=1")
	if status != 200 || !slices.Equal(repos, []string{"library/busybox"}) || link != `</v2/_catalog?last=library%2Fbusybox&n=1>; rel="next"` {
		t.Fatalf("first page: %d %v %q", status, repos, link)
	}
	// other/b (ws2's) lies between and is skipped.
	if _, repos, link = e.catalogPage(tok, "?last=library%2Fbusybox&n=1"); !slices.Equal(repos, []string{"team/a"}) || link != "" {
		t.Fatalf("second page: %v %q", repos, link)
	}
}
