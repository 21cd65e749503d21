package rebuild_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/rebuild"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
)

var ctx = context.Background()

// clock is the fake clock of the cron arithmetic; everything else is real
// (a SQLite file, the store's transactions).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time)         { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }

// queued records the build.queued events a Rebuilder publishes.
type queued struct {
	mu  sync.Mutex
	ids []string
}

func (q *queued) Publish(typ, subject string, _ any) {
	if typ == events.BuildQueued {
		q.mu.Lock()
		q.ids = append(q.ids, subject)
		q.mu.Unlock()
	}
}

func openStore(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var berlin, _ = time.LoadLocation("Europe/Berlin")

// setUp stores workspace ws1 (owner alice) and image img1 with policy p,
// set by alice at setAt.
func setUp(t *testing.T, s store.Store, p image.Rebuild, setAt time.Time) image.Image {
	t.Helper()
	if err := s.ApplyWorkspace(ctx, "test/ws1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false); err != nil {
		t.Fatal(err)
	}
	img := image.Image{
		ID: "img1", Workspace: "ws1", Name: "team/app", Version: 1, DefinitionRev: 1,
		Context: image.Context{Type: image.ContextLocal, Dockerfile: "FROM busybox\n"},
		Created: image.Stamp{By: "bob", At: setAt}, Modified: image.Stamp{By: "bob", At: setAt},
		Rebuild: p, RebuildState: image.RebuildState{SetBy: &image.Stamp{By: "alice", At: setAt}},
	}
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	return img
}

func builds(t *testing.T, s store.Store) []build.Build {
	t.Helper()
	bs, _, err := s.ListBuilds(ctx, "img1", store.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// end settles a build as the dispatcher would once it ran.
func end(t *testing.T, s store.Store, n int) {
	t.Helper()
	if _, err := s.UpdateBuild(ctx, "img1", n, func(b *build.Build) error { return b.Cancel("test", time.Now()) }); err != nil {
		t.Fatal(err)
	}
}

func daily3(tz string) image.Rebuild {
	return image.Rebuild{Schedule: &image.Schedule{Cron: "0 3 * * *", Timezone: tz}}
}

func TestScheduleFiresAtItsSlot(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "slipway.db"))
	c := &clock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, berlin)}
	setUp(t, s, daily3("Europe/Berlin"), c.now())
	q := &queued{}
	r := rebuild.New(rebuild.Options{Store: s, Events: q, Now: c.now})

	if err := r.Tick(ctx); err != nil || len(builds(t, s)) != 0 {
		t.Fatalf("before the slot: %v, builds %v", err, builds(t, s))
	}
	c.set(time.Date(2026, 11, 30, 2, 59, 59, 0, berlin))
	r.Tick(ctx)
	if n := len(builds(t, s)); n != 0 {
		t.Fatalf("a second before the slot: %d builds", n)
	}
	c.set(time.Date(2026, 11, 30, 3, 0, 20, 0, berlin))
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	bs := builds(t, s)
	if len(bs) != 1 {
		t.Fatalf("at the slot: %d builds, want 1", len(bs))
	}
	b := bs[0]
	slot := time.Date(2026, 11, 30, 3, 0, 0, 0, berlin)
	if b.Trigger != build.TriggerSchedule || b.RequestedBy != "alice" || b.Cause == nil || b.Cause.Slot == nil ||
		!b.Cause.Slot.Equal(slot) || b.Cause.MissedSlots != 0 || b.Status != build.Queued {
		t.Fatalf("scheduled build %+v cause %+v; want trigger schedule by alice (who set the policy) for slot %s", b, b.Cause, slot)
	}
	if len(q.ids) != 1 || q.ids[0] != b.ID() {
		t.Fatalf("queued events %v, want the build's", q.ids)
	}
	// The next passes of the same slot, with the build ended or not, build nothing.
	r.Tick(ctx)
	end(t, s, b.Number)
	c.advance(time.Hour)
	r.Tick(ctx)
	if n := len(builds(t, s)); n != 1 {
		t.Fatalf("after the slot: %d builds, want 1", n)
	}
	// The next day's slot builds again.
	c.set(time.Date(2026, 12, 1, 3, 0, 5, 0, berlin))
	r.Tick(ctx)
	if bs := builds(t, s); len(bs) != 2 || !bs[0].Cause.Slot.Equal(slot.AddDate(0, 0, 1)) {
		t.Fatalf("next day: %d builds", len(bs))
	}
}

// Two dispatcher replicas, each with its own connection to one store, tick
// at the same slot at once: one build.
func TestScheduleOnceAcrossTwoReplicas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slipway.db")
	s1, s2 := openStore(t, path), openStore(t, path)
	c := &clock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	setUp(t, s1, daily3(""), c.now())
	q1, q2 := &queued{}, &queued{}
	r1 := rebuild.New(rebuild.Options{Store: s1, Events: q1, Now: c.now})
	r2 := rebuild.New(rebuild.Options{Store: s2, Events: q2, Now: c.now})
	c.set(time.Date(2026, 11, 30, 3, 0, 1, 0, time.UTC))
	for round := range 5 {
		var wg sync.WaitGroup
		for _, r := range []*rebuild.Rebuilder{r1, r2} {
			wg.Go(func() {
				if err := r.Tick(ctx); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if round == 1 {
			end(t, s1, 1) // a replica that looks after the build ended starts no other
		}
	}
	if bs := builds(t, s1); len(bs) != 1 {
		t.Fatalf("%d builds of one slot across two replicas, want 1", len(bs))
	}
	if n := len(q1.ids) + len(q2.ids); n != 1 {
		t.Fatalf("%d build.queued events, want 1", n)
	}
}

// The service was down across three slots: one catch-up build, for the
// latest, that says how many it caught up.
func TestScheduleCatchesUpOnce(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "slipway.db"))
	c := &clock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	setUp(t, s, daily3(""), c.now())
	r := rebuild.New(rebuild.Options{Store: s, Events: &queued{}, Now: c.now})
	c.set(time.Date(2026, 11, 30, 3, 0, 10, 0, time.UTC))
	r.Tick(ctx) // the slot of the 30th
	end(t, s, 1)
	// Down from the 30th until after the slots of the 1st, 2nd and 3rd.
	c.set(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	for range 3 {
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	bs := builds(t, s)
	if len(bs) != 2 {
		t.Fatalf("%d builds after three missed slots, want 2 (one, then one catch-up)", len(bs))
	}
	if c := bs[0].Cause; c == nil || !c.Slot.Equal(time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)) || c.MissedSlots != 2 {
		t.Fatalf("catch-up cause %+v: want the slot of the 3rd with 2 earlier slots missed", c)
	}
}

// A trigger while a build is active waits, once, and starts when it ends.
func TestTriggersWhileActiveAreCoalesced(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "slipway.db"))
	c := &clock{t: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	img := setUp(t, s, image.Rebuild{}, c.now())
	q := &queued{}
	r := rebuild.New(rebuild.Options{Store: s, Events: q, Now: c.now})
	manual, err := s.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, c.now()))
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"event/a", "event/b", "event/a"} {
		out, err := r.Request(ctx, img, key, build.TriggerEvent, "platform", &build.Cause{Reason: "cve"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := i < 2; out.Pending != want || out.Build != nil {
			t.Fatalf("request %d (%s): %+v, want pending %v", i, key, out, want)
		}
	}
	if bs := builds(t, s); len(bs) != 1 {
		t.Fatalf("%d builds while one is active, want 1", len(bs))
	}
	got, _ := s.GetImage(ctx, "img1")
	if p := got.RebuildState.Pending; p == nil || p.Trigger != build.TriggerEvent || p.Cause.Coalesced != 1 {
		t.Fatalf("pending %+v: want one event build, one more request coalesced into it", p)
	}
	// Nothing starts while the build is active; its end starts the pending one.
	if b, err := r.StartPending(ctx, "img1"); b != nil || err != nil {
		t.Fatalf("started %v, %v while active", b, err)
	}
	end(t, s, manual.Number)
	ev, _ := events.New(events.BuildCancelled, manual.ID(), manual.View(c.now()))
	if err := r.OnBuildEnded(ctx, ev); err != nil {
		t.Fatal(err)
	}
	r.OnBuildEnded(ctx, ev) // redelivered
	r.Tick(ctx)
	bs := builds(t, s)
	if len(bs) != 2 || bs[0].Trigger != build.TriggerEvent || bs[0].RequestedBy != "platform" || bs[0].Status != build.Queued {
		t.Fatalf("builds %+v: want the pending event build started once", bs)
	}
	if got, _ := s.GetImage(ctx, "img1"); got.RebuildState.Pending != nil {
		t.Fatal("the pending build is still pending")
	}
	// A pending build that lost its event is started by the next pass.
	end(t, s, bs[0].Number)
	if out, _ := r.Request(ctx, img, "event/c", build.TriggerEvent, "platform", nil, nil); out.Build == nil {
		t.Fatalf("with no active build a request builds: %+v", out)
	}
	r.Request(ctx, img, "event/d", build.TriggerEvent, "platform", nil, nil)
	end(t, s, 3)
	r.Tick(ctx)
	if bs := builds(t, s); len(bs) != 4 {
		t.Fatalf("%d builds: the pass did not start the pending build", len(bs))
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		p     image.Rebuild
		ctx   string
		field string
	}{
		{daily3(""), image.ContextLocal, ""},
		{daily3("Europe/Berlin"), image.ContextLocal, ""},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "@weekly", Timezone: "America/New_York"}}, image.ContextLocal, ""},
		{image.Rebuild{OnGitCommit: true, OnBaseImageUpdate: true}, image.ContextGit, ""},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "0 3 * *"}}, image.ContextLocal, "rebuild.schedule.cron"},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "61 * * * *"}}, image.ContextLocal, "rebuild.schedule.cron"},
		{image.Rebuild{Schedule: &image.Schedule{Cron: ""}}, image.ContextLocal, "rebuild.schedule.cron"},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "@every 1m"}}, image.ContextLocal, "rebuild.schedule.cron"},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "CRON_TZ=UTC 0 3 * * *"}}, image.ContextLocal, "rebuild.schedule.cron"},
		{image.Rebuild{Schedule: &image.Schedule{Cron: "0 0 30 2 *"}}, image.ContextLocal, "rebuild.schedule.cron"},
		{daily3("Mars/Olympus"), image.ContextLocal, "rebuild.schedule.timezone"},
		{daily3("Local"), image.ContextLocal, "rebuild.schedule.timezone"},
		{daily3("../../etc/passwd"), image.ContextLocal, "rebuild.schedule.timezone"},
		{image.Rebuild{OnGitCommit: true}, image.ContextLocal, "rebuild.on_git_commit"},
	} {
		err := rebuild.Validate(c.p, c.ctx)
		var inv *image.InvalidError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v, want valid", c.p.Schedule, err)
		case c.field != "" && (!errors.As(err, &inv) || inv.Field != c.field || inv.Message == ""):
			t.Errorf("%+v on %s: %v, want an error of %s", c.p.Schedule, c.ctx, err, c.field)
		}
	}
}

func TestDueAfterALongDowntime(t *testing.T) {
	sched, err := rebuild.ParseSchedule(image.Schedule{Cron: "* * * * *"})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 30, 10, 30, 30, 0, time.UTC)
	slot, missed, ok := sched.Due(after, now)
	if !ok || !slot.Equal(time.Date(2026, 11, 30, 10, 30, 0, 0, time.UTC)) || missed < 1000 {
		t.Fatalf("Due = %s, %d, %v; want the minute before now, more than a thousand missed", slot, missed, ok)
	}
	if _, _, ok := sched.Due(now, now.Add(20*time.Second)); ok {
		t.Fatal("no slot in 20 s before the next minute")
	}
}

func TestVerifyHookAsTheHostsSign(t *testing.T) {
	secret, body := rebuild.NewHookSecret(), []byte(`{"ref":"refs/heads/main","after":"abc"}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	sig := hex.EncodeToString(mac.Sum(nil))
	// Another signature, whatever sig's digits: each byte inverted (a
	// fixed replacement digit equalled sig's own one time in sixteen).
	wrong := make([]byte, 32)
	for i, b := range mac.Sum(nil) {
		wrong[i] = ^b
	}
	other := hex.EncodeToString(wrong)
	for _, c := range []struct {
		name, header, value, host string
	}{
		{"github", "X-Hub-Signature-256", "sha256=" + sig, "github"},
		{"gitea", "X-Gitea-Signature", sig, "gitea"},
		{"gitlab", "X-Gitlab-Token", secret, "gitlab"},
		{"github wrong", "X-Hub-Signature-256", "sha256=" + other, ""},
		{"github no prefix", "X-Hub-Signature-256", sig, ""},
		{"gitea wrong", "X-Gitea-Signature", other, ""},
		{"gitlab wrong", "X-Gitlab-Token", secret + "x", ""},
		{"none", "X-Other", sig, ""},
	} {
		h := http.Header{}
		h.Set(c.header, c.value)
		host, err := rebuild.VerifyHook(h, body, secret)
		if host != c.host || (c.host == "") != errors.Is(err, rebuild.ErrBadSignature) {
			t.Errorf("%s: %q, %v; want %q", c.name, host, err, c.host)
		}
	}
	h := http.Header{}
	h.Set("X-Hub-Signature-256", "sha256="+sig)
	if _, err := rebuild.VerifyHook(h, append(body, ' '), secret); err == nil {
		t.Error("a changed body verified")
	}
}

func TestTracks(t *testing.T) {
	for _, c := range []struct {
		ref, pushed string
		want        bool
	}{
		{"main", "refs/heads/main", true}, {"main", "refs/heads/dev", false}, {"", "refs/heads/dev", true},
		{"v1", "refs/tags/v1", true}, {"v1", "refs/tags/v2", false}, {"refs/heads/x", "refs/heads/x", true},
		{"main", "", true},
	} {
		if got := rebuild.Tracks(c.ref, c.pushed); got != c.want {
			t.Errorf("Tracks(%q, %q) = %v", c.ref, c.pushed, got)
		}
	}
}

func TestHookPayload(t *testing.T) {
	push := `{"ref":"refs/heads/main","after":"abc"}`
	form := "payload=" + url.QueryEscape(push)
	for _, c := range []struct {
		ct, body string
		want     string
		err      error // nil: no error; errAny: some other error
	}{
		{"application/json", push, push, nil},
		{"application/json; charset=utf-8", push, push, nil},
		{"application/x-www-form-urlencoded", form, push, nil},
		{"application/x-www-form-urlencoded", "ref=refs%2Fheads%2Fmain", "", errAny},
		{"application/x-www-form-urlencoded", "payload=%7Bnot+json", "", errAny},
		{"application/json", "{not json", "", errAny},
		{"text/plain", push, "", rebuild.ErrHookType},
		{"", push, "", rebuild.ErrHookType},
	} {
		got, err := rebuild.HookPayload(c.ct, []byte(c.body))
		switch {
		case c.err == nil && (err != nil || string(got) != c.want):
			t.Errorf("%q %q: %q, %v; want %q", c.ct, c.body, got, err, c.want)
		case c.err == errAny && (err == nil || errors.Is(err, rebuild.ErrHookType)):
			t.Errorf("%q %q: %q, %v; want a payload error", c.ct, c.body, got, err)
		case c.err == rebuild.ErrHookType && !errors.Is(err, rebuild.ErrHookType):
			t.Errorf("%q %q: %v; want ErrHookType", c.ct, c.body, err)
		}
	}
	if p := rebuild.ParsePush([]byte(push)); p.Ref != "refs/heads/main" || p.After != "abc" {
		t.Errorf("ParsePush = %+v", p)
	}
}

var errAny = errors.New("any")
