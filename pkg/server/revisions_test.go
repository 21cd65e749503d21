package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/server"
)

// revisionJSON is the part of a Build about what it built.
type revisionJSON struct {
	buildJSON
	Definition *struct {
		Type       string `json:"type"`
		Dockerfile string `json:"dockerfile"`
	} `json:"definition"`
	InputsDigest *string `json:"inputs_digest"`
	Unchanged    bool    `json:"unchanged"`
}

type diffJSON struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Identical bool   `json:"identical"`
	Diff      string `json:"diff"`
}

// imageState is an image's status, history and ETag.
type imageState struct {
	Status  string `json:"status"`
	History struct {
		Modified stamp `json:"modified"`
		Built    *struct {
			stamp
			Build int `json:"build"`
		} `json:"built"`
	} `json:"history"`
	Reference *string `json:"reference"`
	etag      string
}

func (e *env) imageState(id string) imageState {
	e.t.Helper()
	var s imageState
	res := e.call("GET", "/api/v1/images/"+id, "bob", nil, &s)
	s.etag = res.Header.Get("ETag")
	return s
}

func (e *env) revision(id string, n int) revisionJSON {
	e.t.Helper()
	var b revisionJSON
	e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/%d", id, n), "bob", nil, &b)
	return b
}

// buildAndWait builds id as alice and returns the ended build.
func (e *env) buildAndWait(id string) revisionJSON {
	e.t.Helper()
	n := e.startBuild(id)
	e.waitFor(id, n, 2*time.Minute, ended)
	return e.revision(id, n)
}

func (e *env) diff(subject, id string, n int, against string) (*http.Response, diffJSON) {
	e.t.Helper()
	var d diffJSON
	path := fmt.Sprintf("/api/v1/images/%s/builds/%d/diff", id, n)
	if against != "" {
		path += "?against=" + against
	}
	return e.call("GET", path, subject, nil, &d), d
}

// patch edits id as bob with If-Match of its current ETag.
func (e *env) patch(id string, body map[string]any) imageState {
	e.t.Helper()
	cur := e.imageState(id)
	if res := e.call("PATCH", "/api/v1/images/"+id, "bob", body, nil, "If-Match", cur.etag); res.StatusCode != 200 {
		e.t.Fatalf("PATCH %v: %d", body, res.StatusCode)
	}
	return e.imageState(id)
}

func localContext(dockerfile string) map[string]any {
	return map[string]any{"context": map[string]any{"type": "local", "dockerfile": dockerfile}}
}

// Real builds with reproducible builds on (the default): every build keeps
// its definition, status and history.modified follow the definition's
// content, the diff endpoint compares builds and the current definition,
// an unchanged rebuild gives the same digest and is recorded as unchanged,
// and /metrics counts it all.
func TestRevisions(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildReproducible = true })
	d1 := "FROM " + e.base() + "\nRUN echo hello > /hello\n"
	d2 := "FROM " + e.base() + "\nRUN echo bye > /hello\n"
	img := e.newImage(localImage("team/revs", d1))

	b1 := e.buildAndWait(img.ID)
	if b1.Status != "succeeded" || b1.Definition == nil || b1.Definition.Type != "local" || b1.Definition.Dockerfile != d1 ||
		b1.InputsDigest == nil || !strings.HasPrefix(*b1.InputsDigest, "sha256:") || b1.Unchanged {
		t.Fatalf("first build: %+v", b1)
	}
	built := e.imageState(img.ID)
	if built.Status != "built" || built.History.Built == nil || built.History.Built.Build != b1.Number {
		t.Fatalf("after the first build: %+v", built)
	}

	// An unchanged rebuild: one digest, recorded as unchanged; the image
	// keeps its reference, and its ETag: no image change was announced.
	b2 := e.buildAndWait(img.ID)
	after := e.imageState(img.ID)
	if b2.Status != "succeeded" || *b2.Digest != *b1.Digest || !b2.Unchanged || *b2.InputsDigest != *b1.InputsDigest {
		t.Fatalf("unchanged rebuild: %+v (first: digest %s, inputs %s)", b2, *b1.Digest, *b1.InputsDigest)
	}
	if *after.Reference != *built.Reference || after.etag != built.etag || after.Status != "built" {
		t.Fatalf("after an unchanged rebuild: %+v, before %+v", after, built)
	}

	// Name and description edits: the ETag moves, status and
	// history.modified do not.
	for _, body := range []map[string]any{{"description": "another text"}, {"name": "team/revs2"}} {
		got := e.patch(img.ID, body)
		if got.etag == after.etag || got.Status != "built" || !got.History.Modified.At.Equal(after.History.Modified.At) ||
			got.History.Modified.By != "alice" {
			t.Fatalf("after %v: %+v; before %+v", body, got, after)
		}
		after = got
	}
	// A Dockerfile edit: modified, history.modified is bob's.
	if got := e.patch(img.ID, localContext(d2)); got.Status != "modified" || got.History.Modified.By != "bob" ||
		!got.History.Modified.At.After(after.History.Modified.At) {
		t.Fatalf("after a Dockerfile edit: %+v", got)
	}
	res, d := e.diff("bob", img.ID, b1.Number, "")
	want := "--- build 1\n+++ current\n@@ -1,2 +1,2 @@\n FROM " + e.base() + "\n-RUN echo hello > /hello\n+RUN echo bye > /hello\n"
	if res.StatusCode != 200 || d.Identical || d.Diff != want || d.From != "build 1" || d.To != "current" {
		t.Fatalf("diff of build 1 against the edit: %d %+v\nwant:\n%s", res.StatusCode, d, want)
	}
	// And back: built again, nothing to diff.
	if got := e.patch(img.ID, localContext(d1)); got.Status != "built" {
		t.Fatalf("after an edit back: %+v", got)
	}
	if _, d := e.diff("bob", img.ID, b1.Number, "current"); !d.Identical || d.Diff != "" {
		t.Fatalf("diff after the edit back: %+v", d)
	}
	// Between two builds.
	e.patch(img.ID, localContext(d2))
	b3 := e.buildAndWait(img.ID)
	if b3.Status != "succeeded" || b3.Definition.Dockerfile != d2 || b3.Unchanged || *b3.Digest == *b1.Digest || *b3.InputsDigest == *b1.InputsDigest {
		t.Fatalf("build of the edit: %+v", b3)
	}
	if _, d := e.diff("alice", img.ID, b1.Number, fmt.Sprint(b3.Number)); d.To != "build 3" ||
		!strings.Contains(d.Diff, "-RUN echo hello > /hello\n+RUN echo bye > /hello\n") {
		t.Fatalf("diff of builds 1 and 3: %+v", d)
	}
	if _, d := e.diff("alice", img.ID, b1.Number, fmt.Sprint(b2.Number)); !d.Identical {
		t.Fatalf("diff of builds 1 and 2: %+v", d)
	}
	// Rights and bad input.
	e.announce("platform.workspace.created", "ws2", "carol")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/1/diff", img.ID), "carol", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/9/diff", img.ID), "bob", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/1/diff?against=9", img.ID), "bob", nil, 404, "not_found")
	e.callErr("GET", fmt.Sprintf("/api/v1/images/%s/builds/1/diff?against=latest", img.ID), "bob", nil, 400, "invalid_argument")
	if res := e.call("GET", fmt.Sprintf("/api/v1/images/%s/builds/1/diff", img.ID), "", nil, nil); res.StatusCode != 401 {
		t.Fatalf("diff without a token: %d", res.StatusCode)
	}

	// A failing build and a running one, for the metrics.
	e.patch(img.ID, localContext("FROM "+e.base()+"\nRUN exit 3\n"))
	if b := e.buildAndWait(img.ID); b.Status != "failed" || b.Failure.Reason != "dockerfile" || b.InputsDigest != nil {
		t.Fatalf("failing build: %+v", b)
	}
	e.patch(img.ID, localContext("FROM "+e.base()+"\nRUN sleep 30\n"))
	n := e.startBuild(img.ID)
	e.waitFor(img.ID, n, time.Minute, running)
	m := e.metrics()
	for _, line := range []string{
		`slipway_builds_total{reason="",status="succeeded",trigger="manual"} 3`,
		`slipway_builds_total{reason="dockerfile",status="failed",trigger="manual"} 1`,
		`slipway_build_duration_seconds_count{status="succeeded"} 3`,
		`slipway_build_duration_seconds_count{status="failed"} 1`,
		`slipway_build_slots_active 1`,
		`slipway_build_queue_length 0`,
		`slipway_build_slots 2`,
	} {
		if !strings.Contains(m, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if res := e.call("POST", fmt.Sprintf("/api/v1/images/%s/builds/%d/cancel", img.ID, n), "alice", nil, nil); res.StatusCode != 202 {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	e.waitFor(img.ID, n, time.Minute, ended)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m = e.metrics()
		if strings.Contains(m, "\n"+`slipway_builds_total{reason="cancelled",status="cancelled",trigger="manual"} 1`+"\n") &&
			strings.Contains(m, "\nslipway_build_slots_active 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a cancellation, /metrics:\n%s", grepLines(m, "slipway_build"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Where the builds' time went: the five ran (the last one until it was
	// cancelled); the three that succeeded published.
	for _, line := range []string{
		`slipway_build_phase_seconds_count{phase="context"} 5`,
		`slipway_build_phase_seconds_count{phase="inputs"} 5`,
		`slipway_build_phase_seconds_count{phase="executor"} 5`,
		`slipway_build_phase_seconds_count{phase="publish"} 3`,
	} {
		if !strings.Contains(m, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, grepLines(m, "phase_seconds_count"))
		}
	}
}

// Without reproducible builds, an unchanged rebuild gets a new digest
// (Kaniko stamps times into the image), and is not unchanged.
func TestRebuildWithoutReproducibleChangesDigest(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildReproducible = false })
	img := e.newImage(localImage("team/stamped", "FROM "+e.base()+"\nRUN echo hello > /hello\n"))
	b1 := e.buildAndWait(img.ID)
	time.Sleep(1100 * time.Millisecond) // image times have whole seconds
	b2 := e.buildAndWait(img.ID)
	if b1.Status != "succeeded" || b2.Status != "succeeded" || *b1.Digest == *b2.Digest || b2.Unchanged ||
		*b1.InputsDigest != *b2.InputsDigest {
		t.Fatalf("two builds without --reproducible: %+v\n%+v", b1, b2)
	}
}

// metrics scrapes /metrics.
func (e *env) metrics() string {
	e.t.Helper()
	res, err := http.Get(e.baseURL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return "\n" + string(body)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A build builds the definition it was created with: an edit saved while
// it waits in the queue is the next build's, and leaves the image
// modified after it.
func TestQueuedBuildBuildsItsOwnDefinition(t *testing.T) {
	e := buildEnv(t, func(c *server.Config) { c.BuildSlots = 1 })
	blocker := e.newImage(localImage("team/blocker", "FROM "+e.base()+"\nRUN sleep 4\n"))
	first := "FROM " + e.base() + "\nRUN echo first > /which\n"
	img := e.newImage(localImage("team/queued", first))
	nb := e.startBuild(blocker.ID)
	e.waitFor(blocker.ID, nb, time.Minute, running)
	n := e.startBuild(img.ID)
	if got := e.patch(img.ID, localContext("FROM "+e.base()+"\nRUN echo second > /which\n")); got.Status != "not_built" {
		t.Fatalf("edited while queued: %+v", got)
	}
	if b := e.getBuild(img.ID, n); b.Status != "queued" {
		t.Fatalf("the build was not queued during the edit: %s", b.Status)
	}
	e.waitFor(img.ID, n, 2*time.Minute, ended)
	b := e.revision(img.ID, n)
	if b.Status != "succeeded" || b.Definition == nil || b.Definition.Dockerfile != first {
		t.Fatalf("build: %+v", b)
	}
	if got := files(t, e.pull("alice", *b.Reference))["/which"]; got != "first\n" {
		t.Fatalf("the build built %q, not its own definition", got)
	}
	if st := e.imageState(img.ID); st.Status != "modified" {
		t.Fatalf("after building the older definition: %s", st.Status)
	}
}
