package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slipway-dev/slipway/pkg/build"
	slimage "github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/registry/baseimage"
	"github.com/slipway-dev/slipway/pkg/server"
	"github.com/slipway-dev/slipway/pkg/store"
)

// counting counts the requests it carries to the registry, by kind.
type counting struct {
	mu    sync.Mutex
	heads int
	all   int
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.all++
	if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
		c.heads++
	}
	c.mu.Unlock()
	return remote.DefaultTransport.RoundTrip(r)
}

// seedFollowers stores n images of workspace ws1 whose last build used one
// of bases (round robin) at digest, with on_base_image_update, as the
// store would hold them after real builds (no Kaniko: the builds are
// recorded, not run).
func seedFollowers(t testing.TB, s store.Store, n int, bases []string, digest map[string]string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	for i := range n {
		base := bases[i%len(bases)]
		img := slimage.Image{
			ID: fmt.Sprintf("follower%04d", i), Workspace: "ws1", Name: fmt.Sprintf("team/follower%04d", i), Version: 1, DefinitionRev: 1,
			Context: slimage.Context{Type: slimage.ContextLocal, Dockerfile: "FROM " + base + "\n"},
			Created: slimage.Stamp{By: "alice", At: now}, Modified: slimage.Stamp{By: "alice", At: now},
			Rebuild: slimage.Rebuild{OnBaseImageUpdate: true}, RebuildState: slimage.RebuildState{SetBy: &slimage.Stamp{By: "alice", At: now}},
		}
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateBuild(ctx, build.New(img.ID, 1, "alice", build.TriggerManual, now))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateBuild(ctx, img.ID, b.Number, func(b *build.Build) error {
			b.Start(now)
			b.SetBases([]build.Base{{Ref: base, Digest: digest[base]}})
			return b.Succeed(digest[base], "x/y@"+digest[base], nil, now)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// One check of 1,000 images that share 10 bases asks the registry once per
// base: the figure of the issue.
func TestBaseCheckOneRequestPerDistinctBase(t *testing.T) {
	e := start(t, func() server.Config { c := serverConfig(t); c.RebuildCheckInterval = 24 * time.Hour; return c }())
	e.announce("platform.workspace.created", "ws1", "alice")
	var bases []string
	digest := map[string]string{}
	for i := range 10 {
		ref := fmt.Sprintf("%s/library/base%d:latest", e.srv.RegistryHost(), i)
		d, err := baseimage.PushBusybox(context.Background(), ref, e.ts.RegistryAs("platform"))
		if err != nil {
			t.Fatal(err)
		}
		bases, digest[ref] = append(bases, ref), d.String()
	}
	seedFollowers(t, e.srv.Store, 1000, bases, digest)
	c := &counting{}
	e.srv.Bases.Transport = c
	e.checkNow()
	t.Logf("one check of 1000 images on 10 bases: %d manifest HEAD requests, %d requests in all (with the /v2/ pings)", c.heads, c.all)
	if c.heads != 10 {
		t.Fatalf("%d manifest requests for 10 distinct bases, want 10", c.heads)
	}
	imgs, _, _ := e.srv.Store.ListImages(context.Background(), "ws1", store.ImageFilter{}, store.Page{Limit: 1000})
	for _, img := range imgs {
		if img.LatestBuild.Number != 1 || !img.RebuildState.UpToDate {
			t.Fatalf("%s: unchanged bases, yet build %d, up to date %v", img.Name, img.LatestBuild.Number, img.RebuildState.UpToDate)
		}
	}
}
