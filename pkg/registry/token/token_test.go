package token

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

func TestParseScopes(t *testing.T) {
	got, err := parseScopes([]string{"repository:team/a:pull,push registry:catalog:*", "repository(plugin):library/x:*", "somethingelse:x:y"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Access{
		{"repository", "team/a", []string{"pull", "push"}},
		{"registry", "catalog", []string{"*"}},
		{"repository", "library/x", []string{"pull", "push", "delete"}},
	}
	if len(got) != len(want) {
		t.Fatalf("parseScopes = %+v", got)
	}
	for i := range want {
		if got[i].Type != want[i].Type || got[i].Name != want[i].Name || !slices.Equal(got[i].Actions, want[i].Actions) {
			t.Fatalf("scope %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"repository", "repository:pull", "repository:Team/A:pull", "repository::pull", "repository:a//b:pull"} {
		if _, err := parseScopes([]string{bad}); err == nil {
			t.Errorf("parseScopes(%q) accepted", bad)
		}
	}
	if _, err := parseScopes([]string{strings.Repeat("repository:a/b:pull ", maxScopes+1)}); err == nil {
		t.Error("more than maxScopes accepted")
	}
}

func TestSignerKeepsKindsApart(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadSigner(dir)
	if err != nil || again.kid != s.kid {
		t.Fatalf("a second load has another key: %v", err)
	}
	cred, err := s.BuildCredential(BuildClaims{Image: "img", Number: 1, Workspace: "ws1", Push: []string{"team/a"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	access, err := s.AccessToken("alice", []Access{{"repository", "team/a", []string{"pull"}}}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.VerifyAccess(cred); !errors.Is(err, ErrInvalid) {
		t.Errorf("a build credential passed as an access token: %v", err)
	}
	if _, _, err := s.verifyCredential(access); !errors.Is(err, ErrInvalid) {
		t.Errorf("an access token passed as a build credential: %v", err)
	}
	if sub, acc, err := s.VerifyAccess(access); err != nil || sub != "alice" || !Grants(acc, "repository", "team/a", "pull") || Grants(acc, "repository", "team/a", "push") {
		t.Errorf("VerifyAccess = %s %+v %v", sub, acc, err)
	}
	if b, _, err := s.verifyCredential(cred); err != nil || b.Build != "img-1" || !slices.Equal(b.Push, []string{"team/a"}) {
		t.Errorf("verifyCredential = %+v %v", b, err)
	}
	// Another data dir's key is not trusted; an expired token is refused.
	other, _ := LoadSigner(t.TempDir())
	if _, _, err := other.VerifyAccess(access); !errors.Is(err, ErrInvalid) {
		t.Errorf("another key's token accepted: %v", err)
	}
	old, _ := s.AccessToken("alice", nil, time.Now().Add(-time.Minute))
	if _, _, err := s.VerifyAccess(old); !errors.Is(err, ErrInvalid) {
		t.Errorf("an expired token accepted: %v", err)
	}
	if _, err := s.BuildCredential(BuildClaims{Image: "x", Number: 1}, 0); err == nil {
		t.Error("a credential without a lifetime")
	}
	if _, err := s.BuildCredential(BuildClaims{Image: "x"}, time.Minute); err == nil {
		t.Error("a credential without a build number")
	}
}

func TestRights(t *testing.T) {
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	db.ApplyWorkspace(ctx, "e1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice", Members: []string{"bob"}}, false)
	db.ApplyWorkspace(ctx, "e2", store.Order{}, store.Workspace{ID: "ws2", Owner: "carol"}, false)
	db.CreateImage(ctx, storetest.NewImage("a", "ws1", "team/a"))
	db.CreateImage(ctx, storetest.NewImage("b", "ws2", "other/b"))
	r := Rights{Owners: db, Pullers: []string{"node"}, Publishers: []string{"platform"}}
	for _, c := range []struct {
		user, repo string
		want       []string
	}{
		{"alice", "team/a", []string{Pull}},
		{"bob", "team/a", []string{Pull}},
		{"carol", "team/a", nil},
		{"bob", "other/b", nil},
		{"mallory", "library/busybox", []string{Pull}},
		{"platform", "library/busybox", []string{Pull, Push, Delete}},
		{"platform", "team/a", nil},
		{"node", "other/b", []string{Pull}},
		{"node", "slipway-cache/team/a", []string{Pull}},
		{"alice", "slipway-cache/team/a", nil},
		{"alice", "nobody/owns-this", nil},
	} {
		got, err := r.userActions(ctx, c.user, c.repo, []string{Pull, Push, Delete})
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s on %s: %v %v, want %v", c.user, c.repo, got, err, c.want)
		}
	}
	pulls, err := r.BuildPulls(ctx, "ws1", []string{"library/busybox", "team/a", "other/b", "slipway-cache/team/a", "nobody/x", "team/a"})
	if err != nil || !slices.Equal(pulls, []string{"library/busybox", "team/a"}) {
		t.Errorf("BuildPulls = %v, %v", pulls, err)
	}
	b := BuildClaims{Build: "a-1", Pull: []string{"library/busybox"}, Push: []string{"team/a"}}
	for repo, want := range map[string][]string{"team/a": {Pull, Push}, "library/busybox": {Pull}, "other/b": nil} {
		if got := buildActions(b, repo, []string{Pull, Push, Delete}); !slices.Equal(got, want) {
			t.Errorf("build on %s: %v, want %v", repo, got, want)
		}
	}
}
