package functions_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/functions"
	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/sqlite"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// runnerLog stands in for a build pod's log stream (kube.Runner.Follow,
// tested against a loopback API server in pkg/runner/kube): it writes what
// the test sends, as the pod writes it, until the test closes lines.
type runnerLog struct {
	lines   chan string
	offsets chan int64
}

func (l *runnerLog) Follow(ctx context.Context, id string, offset int64, w io.Writer) (int64, error) {
	select {
	case l.offsets <- offset:
	default: // asked again once the stream has ended: a later offset
	}
	var n int64
	for line := range l.lines {
		k, err := io.WriteString(w, line)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestFollowStreamsFromTheRunner checks ?follow=true of a build whose
// runner is elsewhere (the cluster): the log streams from the runner while
// the build runs, before any of it is in the store, and ends with the
// build, without repeating what the store then holds.
func TestFollowStreamsFromTheRunner(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "slipway.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	issuer, err := auth.LoadIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.ApplyWorkspace(ctx, "k1", store.Order{}, store.Workspace{ID: "ws1", Owner: "alice"}, false)
	if err := st.CreateImage(ctx, storetest.NewImage("img1", "ws1", "team/live")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateBuild(ctx, build.New("img1", 1, "alice", build.TriggerManual, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error { return b.Start(time.Now()) }); err != nil {
		t.Fatal(err)
	}
	live := &runnerLog{lines: make(chan string), offsets: make(chan int64, 4)}
	srv := httptest.NewServer(functions.New(functions.Deps{
		Store: st, Verifier: issuer, Events: nopPublisher{}, Sealer: plainSealer{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: "127.0.0.1:5000",
		MaxBody: 1 << 20, LogPoll: 10 * time.Millisecond, Live: live,
	}))
	t.Cleanup(srv.Close)
	tok, _ := issuer.Issue("alice", time.Hour)
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/images/img1/builds/1/log?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	// Without live following nothing arrives before the build ends: the
	// client's timeout fails the test instead of hanging it.
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body := bufio.NewReader(res.Body)
	if off := <-live.offsets; off != 0 {
		t.Errorf("followed from offset %d, want 0", off)
	}
	live.lines <- "step 1\n"
	if line, err := body.ReadString('\n'); err != nil || line != "step 1\n" {
		t.Fatalf("first line %q, %v: not streamed while the build runs", line, err)
	}
	live.lines <- "step 2\n"
	if line, _ := body.ReadString('\n'); line != "step 2\n" {
		t.Fatalf("second line %q", line)
	}
	// The pod ends; the reporter records its log and settles the build.
	close(live.lines)
	if err := st.AppendLog(ctx, "img1", 1, []byte("step 1\nstep 2\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateBuild(ctx, "img1", 1, func(b *build.Build) error {
		return b.Fail(build.ReasonDockerfile, "step 2 failed", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(body)
	if err != nil || len(rest) != 0 {
		t.Errorf("after the build ended: %q, %v; want the end of the stream and nothing repeated", rest, err)
	}
}

// nopPublisher drops the events the handlers announce.
type nopPublisher struct{}

func (nopPublisher) Publish(string, string, any) {}

// plainSealer seals nothing: no credential is stored here.
type plainSealer struct{}

func (plainSealer) Seal(s string) (string, error) { return s, nil }
