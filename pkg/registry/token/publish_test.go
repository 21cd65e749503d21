package token

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// TestPullCredentialOutlivesASucceededBuild: the credential Slipway reads a
// built image back with (to push it to a destination again) pulls the
// image's repository once its build has succeeded, and never pushes; a
// build's own credential is refused once the build has ended, and neither
// works for a build that failed.
func TestPullCredentialOutlivesASucceededBuild(t *testing.T) {
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	db.ApplyWorkspace(ctx, "e1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	db.CreateImage(ctx, storetest.NewImage("a", "ws1", "team/a"))
	now := time.Now()
	for _, end := range []func(*build.Build) error{
		func(b *build.Build) error { return b.Succeed("sha256:x", "r/team/a@sha256:x", nil, now) },
		func(b *build.Build) error { return b.Fail(build.ReasonDockerfile, "no", now) },
	} {
		if _, err := db.CreateBuild(ctx, build.New("a", 1, "alice", build.TriggerManual, now)); err != nil {
			t.Fatal(err)
		}
		signer, err := LoadSigner(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		a := &Authority{Signer: signer, Builds: db, Rights: Rights{Owners: db}}
		srv := httptest.NewServer(a)
		defer srv.Close()
		grants := func(cred string) (int, []Access) {
			req, _ := http.NewRequest("GET", srv.URL+"?service="+Service+"&scope=repository:team/a:pull,push", nil)
			req.SetBasicAuth("slipway-build", cred)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body struct{ Token string }
			json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != 200 {
				return res.StatusCode, nil
			}
			_, access, err := signer.VerifyAccess(body.Token)
			if err != nil {
				t.Fatal(err)
			}
			return res.StatusCode, access
		}
		builds, _, _ := db.ListBuilds(ctx, "a", store.Page{Limit: 10})
		n := builds[0].Number
		pull, _ := a.PullCredential("a", n, "team/a", time.Minute)
		own, _ := a.Signer.BuildCredential(BuildClaims{Image: "a", Number: n, Workspace: "ws1", Push: []string{"team/a"}}, time.Minute)
		// While the build runs, both work; the pull credential only pulls.
		db.UpdateBuild(ctx, "a", n, func(b *build.Build) error { return b.Start(now) })
		if code, acc := grants(pull); code != 200 || !Grants(acc, "repository", "team/a", Pull) || Grants(acc, "repository", "team/a", Push) {
			t.Fatalf("pull credential while running: %d %+v", code, acc)
		}
		if code, acc := grants(own); code != 200 || !Grants(acc, "repository", "team/a", Push) {
			t.Fatalf("build credential while running: %d %+v", code, acc)
		}
		b, _ := db.UpdateBuild(ctx, "a", n, end)
		code, acc := grants(pull)
		if b.Status == build.Succeeded {
			if code != 200 || !Grants(acc, "repository", "team/a", Pull) || Grants(acc, "repository", "team/a", Push) {
				t.Fatalf("pull credential after the build succeeded: %d %+v", code, acc)
			}
		} else if code != http.StatusUnauthorized {
			t.Fatalf("pull credential after the build failed: %d %+v", code, acc)
		}
		if code, _ := grants(own); code != http.StatusUnauthorized {
			t.Fatalf("the build's own credential after the build %s: %d", b.Status, code)
		}
	}
}
