package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/server"
)

// benchFollower is an image on the test base that follows it, built once.
func benchFollower(b *testing.B) (*env, image) {
	e := benchBuildEnv(b, func(c *server.Config) { c.RebuildCheckInterval = 24 * time.Hour })
	def := localImage("bench/follower", "FROM "+e.base()+"\nRUN echo built > /built\n")
	def["rebuild"] = map[string]any{"on_base_image_update": true}
	img := e.newImage(def)
	if first := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); first.Status != "succeeded" {
		b.Fatalf("first build: %+v", first)
	}
	return e, img
}

// BenchmarkRebuildNoopCheck is the cost of one check that finds nothing to
// do: the pass lists the images, resolves the base in the real registry (a
// HEAD), compares it with the last build's and records the check.
// BenchmarkRebuildFull is what it saves: a full rebuild of the same image.
func BenchmarkRebuildNoopCheck(b *testing.B) {
	e, img := benchFollower(b)
	b.ResetTimer()
	for range b.N {
		if err := e.srv.Rebuilds.CheckNow(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := len(e.buildsOf(img.ID)); n != 1 {
		b.Fatalf("the no-op checks built: %d builds", n)
	}
}

func BenchmarkRebuildFull(b *testing.B) {
	e, img := benchFollower(b)
	b.ResetTimer()
	for i := range b.N {
		if got := e.waitFor(img.ID, e.startBuild(img.ID), 2*time.Minute, ended); got.Status != "succeeded" {
			b.Fatalf("rebuild %d: %+v", i, got)
		}
	}
}
