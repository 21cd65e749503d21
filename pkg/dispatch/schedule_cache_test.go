package dispatch

import (
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
)

// A scheduled build is there to pick up what the Dockerfile fetches: it
// never gets the layer cache, whatever the server's setting; the other
// triggers keep it.
func TestScheduledBuildsSkipTheCache(t *testing.T) {
	o := Options{Registry: "registry.test", Cache: true}
	img := image.Image{ID: "img1", Name: "team/app"}
	for _, trig := range []build.Trigger{build.TriggerManual, build.TriggerSchedule, build.TriggerBaseImage, build.TriggerGit, build.TriggerEvent} {
		spec := baseSpec(o, img, build.New("img1", 1, "alice", trig, time.Now()))
		if got, want := spec.CacheRepo != "", trig != build.TriggerSchedule; got != want {
			t.Errorf("trigger %s: cache repo %q", trig, spec.CacheRepo)
		}
	}
}
