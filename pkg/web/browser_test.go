package web_test

// Browser tests: Debian's Chromium, headless, driven with chromedp, against a
// real Slipway served in-process (API, registry, builds and this page on one
// address). They fail, never skip, when Chromium is missing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/slipway-dev/slipway/events"
	"github.com/slipway-dev/slipway/internal/servertest"
)

// Status colours as the page's stylesheet sets them (computed RGB).
const (
	red    = "rgb(198, 40, 40)"
	green  = "rgb(46, 125, 50)"
	orange = "rgb(245, 124, 0)"
)

// slipway is a real server on a fresh data dir.
type slipway struct {
	*servertest.Server
	t    *testing.T
	base string
}

// startSlipway serves a fresh Slipway that can build: the Kaniko executor
// from bin/ in runc.
func startSlipway(t *testing.T) *slipway {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.Executor = filepath.Join(servertest.RepoRoot(), "bin", "executor")
	ts := servertest.Start(t, cfg)
	return &slipway{Server: ts, t: t, base: ts.URL}
}

func (s *slipway) token(subject string) string { return s.Token(subject) }

// call sends a JSON request as subject and returns the status, the ETag and
// the decoded body.
func (s *slipway) call(method, path, subject string, body any, headers ...string) (int, string, map[string]any) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+s.token(subject))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var out map[string]any
	json.Unmarshal(data, &out)
	return res.StatusCode, res.Header.Get("ETag"), out
}

// announce sends platform.workspace.created as the platform would.
func (s *slipway) announce(id, owner string, members ...string) {
	s.t.Helper()
	s.Announce(events.WorkspaceCreated, id, owner, members...)
}

// createImage creates a local-context image as subject and returns its id.
func (s *slipway) createImage(ws, subject, name, description, dockerfile string) string {
	s.t.Helper()
	code, _, img := s.call("POST", "/api/v1/workspaces/"+ws+"/images", subject, map[string]any{
		"name": name, "description": description, "context": map[string]any{"type": "local", "dockerfile": dockerfile},
	})
	if code != http.StatusCreated {
		s.t.Fatalf("create %s: %d %v", name, code, img)
	}
	return img["id"].(string)
}

// chromium finds Debian's Chromium, failing with the fix when it is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed; the browser tests need it: run `apt-get install -y chromium` (or `make deps-web`)")
	return ""
}

// newBrowser starts one headless Chromium for the test and returns its context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	if err := chromedp.Do(browser); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return browser
}

// tab is one browser tab signed in as a user.
type tab struct {
	t    *testing.T
	ctx  context.Context
	s    *slipway
	mu   sync.Mutex
	errs []string
}

// openTab opens a tab (in its own browser context when isolated: separate
// storage, like another browser) signed in as subject on workspace ws,
// through the fragment link the server prints.
func openTab(t *testing.T, browser context.Context, s *slipway, subject, ws string, isolated bool, timeout time.Duration) *tab {
	t.Helper()
	var opts []chromedp.ContextOption
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(browser, opts...)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	tb := &tab{t: t, ctx: ctx, s: s}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			msg := e.ExceptionDetails.Text
			if x := e.ExceptionDetails.Exception; x != nil && x.Description != "" {
				msg += " " + x.Description
			}
			tb.mu.Lock()
			tb.errs = append(tb.errs, msg)
			tb.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	t.Cleanup(func() {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, e := range tb.errs {
			t.Errorf("uncaught exception in the page: %s", e)
		}
		cancelTimeout()
		cancel()
	})
	tb.do(
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(s.base+"/#token="+s.token(subject)+"&workspace="+ws),
		chromedp.WaitVisible(chromedp.CSS(".tiles .tile-new-link")),
	)
	// The token left the address bar.
	var href string
	tb.eval(`location.href`, &href)
	if strings.Contains(href, "token") {
		t.Fatalf("the token is still in the address: %s", href)
	}
	return tb
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and returns its value in out.
func (tb *tab) eval(js string, out any) {
	tb.t.Helper()
	res, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify((`+js+`) ?? null)`))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", js, err)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(res), out); err != nil {
			tb.t.Fatalf("evaluating %s: decoding %s: %v", js, res, err)
		}
	}
}

// waitFor polls a JavaScript condition until it is true, failing with what
// after timeout.
func (tb *tab) waitFor(js, what string, timeout time.Duration) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](`!!(`+js+`)`))
		if err != nil {
			tb.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText.slice(0, 1500)`))
			tb.t.Fatalf("timed out after %s waiting for %s; the page shows:\n%s", timeout, what, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (tb *tab) click(sel string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	var s string
	tb.eval(fmt.Sprintf(`(document.querySelector(%q)||{}).innerText||""`, sel), &s)
	return s
}

// goTo switches the page's route (a fragment change, as a link does).
func (tb *tab) goTo(route string) {
	tb.t.Helper()
	tb.eval(fmt.Sprintf(`location.hash = %q`, "#"+route), nil)
}

// openImage opens an image's editor and waits until it is loaded.
func (tb *tab) openImage(id, name string) {
	tb.t.Helper()
	tb.goTo("/images/" + id)
	tb.waitFor(fmt.Sprintf(`document.querySelector("#page-title")?.innerText === %q && document.querySelector("#f-name")?.value === %q`, name, name), "the editor of "+name, 10*time.Second)
}

// tile is the CSS selector of name's tile.
func tile(name string) string { return fmt.Sprintf(`.tile[data-name=%q]`, name) }

// tileColor is the computed colour of name's status icon.
func (tb *tab) tileColor(name string) string {
	tb.t.Helper()
	var c string
	tb.eval(fmt.Sprintf(`getComputedStyle(document.querySelector(%q)).color`, tile(name)+" .status-icon"), &c)
	return c
}

// typeInDockerfile puts the cursor at the end of the Dockerfile and types text.
func (tb *tab) typeInDockerfile(text string) {
	tb.t.Helper()
	tb.do(
		chromedp.Click(chromedp.CSS(".cm-content"), chromedp.NodeVisible),
		chromedp.Evaluate[chromedp.Void](`(() => { const c = document.querySelector(".cm-content"); const r = document.createRange(); r.selectNodeContents(c); r.collapse(false); const s = getSelection(); s.removeAllRanges(); s.addRange(r); })()`),
		chromedp.KeyEvent(text),
	)
}

// setSelect chooses value in a select, as a user's choice does.
func (tb *tab) setSelect(sel, value string) {
	tb.t.Helper()
	var ok bool
	tb.eval(fmt.Sprintf(`(() => { const s = document.querySelector(%q); if (![...s.options].some(o => o.value === %q)) return false; s.value = %q; s.dispatchEvent(new Event("change", { bubbles: true })); return true; })()`, sel, value, value), &ok)
	if !ok {
		tb.t.Fatalf("%s has no option %q", sel, value)
	}
}

// dockerfile is the editor's text.
func (tb *tab) dockerfile() string {
	tb.t.Helper()
	var s string
	tb.eval(`[...document.querySelectorAll(".cm-content .cm-line")].map(l => l.textContent).join("\n")`, &s)
	return s
}

// screenshot saves a full-page PNG at width under test-artifacts/screenshots.
func (tb *tab) screenshot(name string, width int64) {
	tb.t.Helper()
	// Lay the page out at width, then make the viewport as tall as the page,
	// so that the whole page is in one shot with the top bar at the top.
	tb.do(chromedp.EmulateViewport(width, 900), chromedp.Sleep(200*time.Millisecond))
	var height int64
	tb.eval(`Math.max(900, document.documentElement.scrollHeight)`, &height)
	tb.do(chromedp.EmulateViewport(width, height), chromedp.Sleep(300*time.Millisecond))
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	tb.do(chromedp.EmulateViewport(1280, 900))
	dir := filepath.Join(servertest.RepoRoot(), "test-artifacts", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%d.png", name, width))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	abs, _ := filepath.Abs(p)
	tb.t.Logf("screenshot: %s", abs)
}

// TestBrowser drives the Docker Images page as its users do.
func TestBrowser(t *testing.T) {
	s := startSlipway(t)
	s.announce("ws1", "alice", "bob")
	browser := newBrowser(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("browser tests took %s", time.Since(start).Round(time.Millisecond)) })

	// Names the subtests share.
	const created = "team/created-in-browser"
	builtName := "team/built-in-browser"
	var builtID string

	t.Run("create an image and see its red tile", func(t *testing.T) {
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.click(`[data-testid="new-image"]`)
		tb.do(chromedp.WaitVisible(chromedp.CSS("#f-name")),
			chromedp.SendKeys(chromedp.CSS("#f-name"), created),
			chromedp.SendKeys(chromedp.CSS("#f-desc"), "Made by the browser test."))
		tb.click(`[data-action="save"]`)
		tb.waitFor(`location.hash.startsWith("#/images/") && !location.hash.endsWith("/new") && document.querySelector("#page-title")?.innerText === "`+created+`"`, "the editor of the created image", 10*time.Second)
		if got := tb.text(`[data-testid="status-label"]`); got != "Not built" {
			t.Errorf("status after create: %q, want Not built", got)
		}
		tb.click(`a[data-action="back"]`)
		tb.waitFor(`document.querySelector('`+tile(created)+`[data-status="not_built"]')`, "the new image's tile", 10*time.Second)
		if c := tb.tileColor(created); c != red {
			t.Errorf("not built tile's icon is %s, want red %s", c, red)
		}
		// The icon's tooltip says what the status means, on hover and on focus.
		tb.do(chromedp.Focus(chromedp.CSS(tile(created) + " .status-icon")))
		var tip string
		tb.eval(`(() => { const i = document.querySelector('`+tile(created)+` .status-icon'); const t = document.getElementById(i.getAttribute("aria-describedby")); return getComputedStyle(t).visibility + ": " + t.innerText })()`, &tip)
		if !strings.HasPrefix(tip, "visible: Not built") {
			t.Errorf("the focused status icon's tooltip: %q", tip)
		}
	})

	t.Run("a Dockerfile the server rejects has its line marked", func(t *testing.T) {
		id := s.createImage("ws1", "alice", "team/bad-dockerfile", "", "FROM busybox\nRUN echo one\n")
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.openImage(id, "team/bad-dockerfile")
		tb.typeInDockerfile("FROBNICATE the-widgets")
		tb.click(`[data-action="save"]`)
		tb.waitFor(`document.querySelector(".cm-error-line")`, "the marked line", 10*time.Second)
		var marked string
		tb.eval(`document.querySelector(".cm-error-line").textContent`, &marked)
		if marked != "FROBNICATE the-widgets" {
			t.Errorf("marked line %q, want the FROBNICATE line", marked)
		}
		if msg := tb.text(`[data-testid="dockerfile-error"]`); !strings.Contains(msg, "Line 3") || !strings.Contains(msg, "FROBNICATE") {
			t.Errorf("the Dockerfile's error says %q, want line 3 and the instruction", msg)
		}
		alert := tb.text(`[data-testid="editor-alert"]`)
		if !strings.Contains(alert, "not accepted") || strings.Contains(alert, "{") {
			t.Errorf("the alert says %q: want words, not JSON", alert)
		}
		// The text is still there, unsaved.
		if !strings.Contains(tb.dockerfile(), "FROBNICATE") {
			t.Error("the rejected text is gone from the editor")
		}
		tb.screenshot("editor-invalid-line", 1280)
	})

	t.Run("build and watch the log stream to a green tile", func(t *testing.T) {
		requireBuilds(t)
		s.PushBase()
		ref := s.Base()
		builtID = s.createImage("ws1", "alice", builtName, "Built by the browser test.",
			"FROM "+ref+"\nRUN echo browser-build-step-one && sleep 2 && echo browser-build-step-two\n")
		tb := openTab(t, browser, s, "alice", "ws1", false, 5*time.Minute)
		tb.openImage(builtID, builtName)
		tb.waitFor(`!document.querySelector('[data-action="build"]').disabled`, "BUILD enabled for the owner", 10*time.Second)
		tb.click(`[data-action="build"]`)
		// The new build's row opens by itself, scrolled into sight, and
		// shows its steps; the raw log follows behind them.
		tb.waitFor(`document.querySelector('.build-row[data-build="1"] .build-toggle[aria-expanded="true"]')`, "build #1's row, expanded", 10*time.Second)
		tb.waitFor(inView(`.build-row[data-build="1"] .build-toggle`), "build #1's row scrolled into sight", 5*time.Second)
		tb.waitFor(`(() => { const r = document.querySelector('.build-row[data-build="1"]'); return !r.querySelector('[data-testid="steps"]').hidden && r.querySelector("pre.log").hidden; })()`, "the steps as the default view", 5*time.Second)
		sawLive := false
		deadline := time.Now().Add(4 * time.Minute)
		for {
			var st struct {
				Live   bool   `json:"live"`
				Status string `json:"status"`
				Log    string `json:"log"`
			}
			tb.eval(`(() => { const r = document.querySelector('.build-row[data-build="1"]'); return { live: r.classList.contains("is-live"), status: r.querySelector(".build-status").dataset.status, log: r.querySelector("pre.log").textContent }; })()`, &st)
			if st.Live && st.Log != "" && (st.Status == "running" || st.Status == "queued") {
				sawLive = true
			}
			if st.Status == "succeeded" {
				break
			}
			if st.Status == "failed" || st.Status == "cancelled" {
				t.Fatalf("build #1 %s; its log:\n%s\n%s", st.Status, st.Log, tb.text(".build-failure"))
			}
			if time.Now().After(deadline) {
				var lb string
				_, _, img := s.call("GET", "/api/v1/images/"+builtID, "alice", nil)
				if b, _ := json.Marshal(img["latest_build"]); b != nil {
					lb = string(b)
				}
				t.Fatalf("build #1 did not succeed in 4 minutes (status %q); the page's log:\n%s\nthe API's latest build: %s\n"+
					"Builds are run by the server's dispatcher (Kaniko in runc): if the build stays queued, the dispatcher is not running builds yet.", st.Status, st.Log, lb)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !sawLive {
			t.Error("never saw the log growing while the build ran (follow=true streaming)")
		}
		// The steps: FROM and the RUN, done, with their lines and durations.
		tb.waitFor(`document.querySelectorAll('.build-row[data-build="1"] .step[data-status="done"]').length === 3`, "three steps done (FROM, RUN, push)", 10*time.Second)
		var steps []string
		tb.eval(`[...document.querySelectorAll('.build-row[data-build="1"] .step')].map(s => s.querySelector(".step-line").innerText + " | " + s.querySelector(".step-text").innerText + " | " + s.querySelector(".step-dur").innerText)`, &steps)
		if len(steps) != 3 || !strings.HasPrefix(steps[0], "line 1 | FROM ") || !strings.HasPrefix(steps[1], "line 2 | RUN echo browser-build-step-one && sleep 2") ||
			!strings.HasSuffix(steps[1], " s") || !strings.Contains(steps[2], "| push ") {
			t.Errorf("the steps shown: %q", steps)
		}
		// The raw log is one click away.
		tb.click(`.build-row[data-build="1"] [data-action="view-log"]`)
		tb.waitFor(`!document.querySelector('.build-row[data-build="1"] pre.log').hidden`, "the raw log", 5*time.Second)
		log := tb.text(`.build-row[data-build="1"] pre.log`)
		if !strings.Contains(log, "browser-build-step-two") {
			t.Errorf("the streamed log lacks the build's last output; it is:\n%s", log)
		}
		// The refresh button reads from the offset on: nothing new once done.
		tb.click(`.build-row[data-build="1"] [data-action="refresh-log"]`)
		tb.waitFor(`document.querySelector('.build-row[data-build="1"] .log-status').innerText.includes("No new lines")`, "the refresh button's answer", 10*time.Second)
		if again := tb.text(`.build-row[data-build="1"] pre.log`); again != log {
			t.Error("refreshing a finished build's log changed it")
		}
		tb.waitFor(`document.querySelector('[data-testid="status-label"]').innerText === "Built"`, "the editor's status Built", 15*time.Second)
		var row string
		tb.eval(`document.querySelector('.build-row[data-build="1"] .build-dur').innerText`, &row)
		if !strings.HasSuffix(row, " s") {
			t.Errorf("build row's duration %q", row)
		}
		tb.screenshot("editor-build-log", 1280)
		tb.screenshot("editor-build-log", 768)
		tb.click(`a[data-action="back"]`)
		tb.waitFor(`document.querySelector('`+tile(builtName)+`[data-status="built"]')`, "the green tile", 10*time.Second)
		if c := tb.tileColor(builtName); c != green {
			t.Errorf("built tile's icon is %s, want green %s", c, green)
		}
	})

	t.Run("the live log follows a running build until the reader scrolls up", func(t *testing.T) {
		requireBuilds(t)
		s.PushBase()
		id := s.createImage("ws1", "alice", "team/long-log", "Prints for a while.",
			"FROM "+s.Base()+"\nRUN for i in $(seq 1 150); do echo long-log-line-$i; sleep 0.1; done\n")
		tb := openTab(t, browser, s, "alice", "ws1", false, 5*time.Minute)
		tb.openImage(id, "team/long-log")
		tb.waitFor(`!document.querySelector('[data-action="build"]').disabled`, "BUILD enabled", 10*time.Second)
		tb.click(`[data-action="build"]`)
		row := `.build-row[data-build="1"]`
		tb.waitFor(`document.querySelector('`+row+` .build-toggle[aria-expanded="true"]')`, "the build's row, expanded", 10*time.Second)
		tb.click(row + ` [data-action="view-log"]`)
		pre := `document.querySelector('` + row + ` pre.log')`
		type logState struct {
			Len      int    `json:"len"`
			Bottom   bool   `json:"bottom"`
			Scroll   int    `json:"scroll"`
			Scrolls  bool   `json:"scrolls"`
			Status   string `json:"status"`
			LastLine string `json:"last"`
		}
		state := func() logState {
			var st logState
			tb.eval(`(() => { const p = `+pre+`; const lines = p.textContent.trim().split("\n"); return { len: p.textContent.length, bottom: p.scrollHeight - p.scrollTop - p.clientHeight < 24, scroll: p.scrollTop, scrolls: p.scrollHeight > p.clientHeight + 50, status: document.querySelector('`+row+` .build-status').dataset.status, last: lines[lines.length-1] }; })()`, &st)
			return st
		}
		// Following: while lines arrive (across the page's 2 s refreshes),
		// the newest line stays in view.
		tb.waitFor(pre+`.textContent.includes("long-log-line-20") && `+pre+`.scrollHeight > `+pre+`.clientHeight + 50`, "a log taller than its box", 2*time.Minute)
		grew := 0
		prev := state()
		for until := time.Now().Add(4 * time.Second); time.Now().Before(until); {
			time.Sleep(150 * time.Millisecond)
			st := state()
			if st.Status != "running" {
				t.Fatalf("the build ended before the test could watch it follow: %+v", st)
			}
			if !st.Bottom {
				t.Fatalf("the followed log is not at its bottom (scrollTop %d, last line %q)", st.Scroll, st.LastLine)
			}
			if st.Len > prev.Len {
				grew++
			}
			prev = st
		}
		if grew < 5 {
			t.Fatalf("the log grew only %d times in 4 s while the build ran", grew)
		}
		// Scrolling up (the mouse wheel, as a reader does) stops following.
		var box struct{ X, Y, H float64 }
		tb.eval(`(() => { `+pre+`.scrollIntoView({ block: "center" }); const r = `+pre+`.getBoundingClientRect(); return { X: r.left + r.width / 2, Y: r.top + r.height / 2, H: innerHeight }; })()`, &box)
		wheel := func(dy float64) {
			// CDP wants both deltas, and a zero one would be left out.
			tb.do(chromedp.MouseEvent(chromedp.MouseWheel, box.X, box.Y, func(p *input.DispatchMouseEventParams) { p.DeltaX, p.DeltaY = 1e-9, dy }))
		}
		var under string
		tb.eval(fmt.Sprintf(`document.elementFromPoint(%f, %f)?.tagName`, box.X, box.Y), &under)
		if under != "PRE" {
			t.Fatalf("the wheel would turn over %q at %+v, not the log", under, box)
		}
		for i := 0; i < 40 && state().Scroll > 0; i++ {
			wheel(-1000)
			time.Sleep(50 * time.Millisecond)
		}
		tb.waitFor(pre+`.scrollTop === 0`, "the log scrolled to its top", 5*time.Second)
		before := state()
		tb.waitFor(pre+`.textContent.length > `+fmt.Sprint(before.Len+200), "more lines while scrolled up", time.Minute)
		if st := state(); st.Scroll != 0 || st.Bottom {
			t.Fatalf("the log moved while the reader was scrolled up: %+v", st)
		}
		// Back at the bottom, it follows again.
		for i := 0; i < 40 && !state().Bottom; i++ {
			wheel(1000)
			time.Sleep(50 * time.Millisecond)
		}
		tb.waitFor(`(() => { const p = `+pre+`; return p.scrollHeight - p.scrollTop - p.clientHeight < 24; })()`, "the log scrolled to its bottom", 5*time.Second)
		at := state()
		tb.waitFor(pre+`.textContent.length > `+fmt.Sprint(at.Len+200), "more lines after scrolling back", time.Minute)
		if st := state(); !st.Bottom && st.Status == "running" {
			t.Fatalf("the log stopped following after the reader scrolled back down: %+v", st)
		}
		tb.screenshot("editor-live-log", 1280)
	})

	t.Run("a failed build opens its failed step with the exit code explained", func(t *testing.T) {
		requireBuilds(t)
		s.PushBase()
		id := s.createImage("ws1", "alice", "team/fails-in-browser", "Calls a program that is not there.",
			"FROM "+s.Base()+"\nRUN echo before\nRUN nosuchprogram --version\nRUN echo never\n")
		if code, _, b := s.call("POST", "/api/v1/images/"+id+"/builds", "alice", nil); code != http.StatusAccepted {
			t.Fatalf("POST builds: %d %v", code, b)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			_, _, b := s.call("GET", "/api/v1/images/"+id+"/builds/1", "alice", nil)
			if b["status"] == "failed" {
				break
			}
			if time.Now().After(deadline) || b["status"] == "succeeded" {
				t.Fatalf("the build: %v", b)
			}
			time.Sleep(200 * time.Millisecond)
		}
		tb := openTab(t, browser, s, "bob", "ws1", false, time.Minute) // a member reads it too
		tb.openImage(id, "team/fails-in-browser")
		row := `.build-row[data-build="1"]`
		tb.click(row + ` .build-toggle`)
		failed := row + ` .step[data-status="failed"]`
		tb.waitFor(`document.querySelector('`+failed+`.is-open .step-detail:not([hidden])')`, "the failed step, opened", 10*time.Second)
		var st struct {
			Statuses []string `json:"statuses"`
			Line     string   `json:"line"`
			Text     string   `json:"text"`
			Exit     string   `json:"exit"`
			Tail     string   `json:"tail"`
		}
		tb.eval(`(() => { const r = document.querySelector('`+row+`'); const f = r.querySelector('.step[data-status="failed"]'); return { statuses: [...r.querySelectorAll(".step")].map(s => s.dataset.status), line: f.querySelector(".step-line").innerText, text: f.querySelector(".step-text").innerText, exit: f.querySelector(".step-exit").innerText, tail: (f.querySelector(".step-log") || {}).innerText || "" }; })()`, &st)
		if strings.Join(st.Statuses, ",") != "done,done,failed,not_run" || st.Line != "line 3" || st.Text != "RUN nosuchprogram --version" ||
			!strings.Contains(st.Exit, "Exit code 127") || !strings.Contains(st.Exit, "command not found") || !strings.Contains(st.Tail, "nosuchprogram: not found") {
			t.Errorf("the steps of the failed build: %+v", st)
		}
		tb.screenshot("editor-failed-step", 1280)
		// The whole log is one click away.
		tb.click(failed + ` [data-action="open-log"]`)
		tb.waitFor(`!document.querySelector('`+row+` pre.log').hidden && document.querySelector('`+row+` pre.log').innerText.includes("exit status 127")`, "the raw log", 5*time.Second)
		// Back to the steps; the failed step closes on a click.
		tb.click(row + ` [data-action="view-steps"]`)
		tb.click(failed + ` .step-toggle`)
		tb.waitFor(`document.querySelector('`+failed+` .step-detail').hidden && document.querySelector('`+failed+` .step-toggle').getAttribute("aria-expanded") === "false"`, "the failed step, closed", 5*time.Second)
	})

	t.Run("edit a built image and see orange", func(t *testing.T) {
		if builtID == "" {
			t.Fatal("needs the image built by the previous subtest (build and watch the log stream to a green tile), which did not build")
		}
		_, _, img := s.call("GET", "/api/v1/images/"+builtID, "alice", nil)
		if img["status"] != "built" {
			t.Fatalf("needs a built image; %s is %v (see the build subtest)", builtName, img["status"])
		}
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.openImage(builtID, builtName)
		tb.typeInDockerfile("RUN echo changed-after-the-build")
		tb.waitFor(`document.querySelector('[data-testid="build-reason"]').innerText.includes("Save your changes first")`, "BUILD waiting for SAVE", 5*time.Second)
		tb.click(`[data-action="save"]`)
		tb.waitFor(`document.querySelector('[data-testid="status-label"]').innerText === "Modified"`, "the editor's status Modified", 10*time.Second)
		tb.click(`a[data-action="back"]`)
		tb.waitFor(`document.querySelector('`+tile(builtName)+`[data-status="modified"]')`, "the orange tile", 10*time.Second)
		if c := tb.tileColor(builtName); c != orange {
			t.Errorf("modified tile's icon is %s, want orange %s", c, orange)
		}
	})

	t.Run("a member sees BUILD disabled with the reason", func(t *testing.T) {
		id := s.createImage("ws1", "bob", "team/members-image", "Bob made it.", "FROM busybox\n")
		tb := openTab(t, browser, s, "bob", "ws1", false, time.Minute)
		tb.openImage(id, "team/members-image")
		var disabled bool
		tb.eval(`document.querySelector('[data-action="build"]').disabled`, &disabled)
		if !disabled {
			t.Error("BUILD is enabled for a member")
		}
		if reason := tb.text(`[data-testid="build-reason"]`); !strings.Contains(reason, "Only the workspace's owner, alice, can build") {
			t.Errorf("the reason shown: %q", reason)
		}
		var describedBy string
		tb.eval(`document.querySelector('[data-action="build"]').getAttribute("aria-describedby")`, &describedBy)
		if describedBy != "build-reason" {
			t.Errorf("BUILD's aria-describedby %q: the reason is not tied to the button", describedBy)
		}
		// Members edit: SAVE works for them.
		tb.do(chromedp.SendKeys(chromedp.CSS("#f-desc"), " Edited by bob."))
		tb.click(`[data-action="save"]`)
		tb.waitFor(`document.querySelector('.dirty-note').hidden`, "the member's save", 10*time.Second)
		// Delete is the owner's too.
		tb.eval(`document.querySelector('[data-action="delete"]').disabled`, &disabled)
		if !disabled {
			t.Error("DELETE is enabled for a member")
		}
		tb.screenshot("editor-member", 1280)
		if code, _, _ := s.call("GET", "/api/v1/images/"+id+"/builds", "alice", nil); code != 200 {
			t.Fatalf("listing builds: %d", code)
		}
		_, _, bl := s.call("GET", "/api/v1/images/"+id+"/builds", "alice", nil)
		if n := len(bl["builds"].([]any)); n != 0 {
			t.Errorf("the member's page started %d builds", n)
		}
	})

	t.Run("delete after confirming", func(t *testing.T) {
		const name = "team/to-delete"
		id := s.createImage("ws1", "alice", name, "Short-lived.", "FROM busybox\n")
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.waitFor(`document.querySelector('`+tile(name)+`')`, "the tile", 10*time.Second)
		del := tile(name) + ` [data-action="delete"]`
		tb.click(del)
		tb.waitFor(`document.querySelector("dialog[open]")`, "the confirm dialog", 5*time.Second)
		var focus, title string
		tb.eval(`document.activeElement.dataset.action`, &focus)
		if focus != "cancel" {
			t.Errorf("focus in the dialog is on %q, want the Cancel button", focus)
		}
		tb.eval(`document.getElementById(document.querySelector("dialog[open]").getAttribute("aria-labelledby")).innerText`, &title)
		if title != "Delete "+name+"?" {
			t.Errorf("dialog title %q", title)
		}
		tb.screenshot("tiles-confirm-delete", 1280)
		// Escape cancels and keeps the image; focus goes back to the button.
		tb.do(chromedp.KeyEvent(kb.Escape))
		tb.waitFor(`!document.querySelector("dialog[open]")`, "the dialog to close", 5*time.Second)
		tb.eval(`document.activeElement.getAttribute("aria-label")`, &focus)
		if focus != "Delete image "+name {
			t.Errorf("focus after Escape is on %q, want the delete button", focus)
		}
		if code, _, _ := s.call("GET", "/api/v1/images/"+id, "alice", nil); code != 200 {
			t.Fatalf("the image is gone after Cancel: %d", code)
		}
		tb.click(del)
		tb.click(`dialog[open] [data-action="confirm"]`)
		tb.waitFor(`!document.querySelector('`+tile(name)+`')`, "the tile to go", 10*time.Second)
		if code, _, _ := s.call("GET", "/api/v1/images/"+id, "alice", nil); code != 404 {
			t.Errorf("after confirming, GET the image: %d, want 404", code)
		}
	})

	t.Run("two tabs save the same image: the second is told and keeps its text", func(t *testing.T) {
		const name = "team/two-tabs"
		id := s.createImage("ws1", "alice", name, "Original description.", "FROM busybox\nRUN echo base\n")
		a := openTab(t, browser, s, "alice", "ws1", true, time.Minute)
		b := openTab(t, browser, s, "alice", "ws1", true, time.Minute)
		a.openImage(id, name)
		b.openImage(id, name)

		// B saves a new description first.
		b.eval(`(() => { const d = document.querySelector("#f-desc"); d.value = ""; d.dispatchEvent(new Event("input")); })()`, nil)
		b.do(chromedp.SendKeys(chromedp.CSS("#f-desc"), "Description from tab B."))
		b.click(`[data-action="save"]`)
		b.waitFor(`document.querySelector('.dirty-note').hidden`, "tab B's save", 10*time.Second)

		// A edits the Dockerfile on the old version and saves: 412, in words.
		a.typeInDockerfile("RUN echo from-tab-a")
		a.click(`[data-action="save"]`)
		a.waitFor(`!document.querySelector('[data-testid="conflict"]').hidden`, "tab A's conflict message", 10*time.Second)
		msg := a.text(`[data-testid="conflict"]`)
		if !strings.Contains(msg, "Someone else saved this image") || !strings.Contains(msg, "changed by someone else") || strings.Contains(msg, `"error"`) {
			t.Errorf("the conflict message: %q", msg)
		}
		a.screenshot("editor-conflict", 1280)
		if !strings.Contains(a.dockerfile(), "RUN echo from-tab-a") {
			t.Fatal("tab A lost its text on 412")
		}

		// Reload: A keeps its Dockerfile, takes B's description, saves.
		a.click(`[data-action="reload"]`)
		a.waitFor(`document.querySelector('[data-testid="conflict"]').innerText.includes("Your edits are still here")`, "the reload", 10*time.Second)
		if !strings.Contains(a.dockerfile(), "RUN echo from-tab-a") {
			t.Fatal("tab A lost its text on reload")
		}
		var desc string
		a.eval(`document.querySelector("#f-desc").value`, &desc)
		if desc != "Description from tab B." {
			t.Errorf("tab A's description after reload %q, want tab B's (A did not touch it)", desc)
		}
		a.click(`[data-action="save"]`)
		a.waitFor(`document.querySelector('.dirty-note').hidden && document.querySelector('[data-testid="conflict"]').hidden`, "tab A's second save", 10*time.Second)
		_, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil)
		ctxm, _ := img["context"].(map[string]any)
		if df, _ := ctxm["dockerfile"].(string); !strings.Contains(df, "RUN echo from-tab-a") {
			t.Errorf("saved Dockerfile %q lacks tab A's line", df)
		}
		if img["description"] != "Description from tab B." {
			t.Errorf("saved description %q, want tab B's", img["description"])
		}
	})

	t.Run("git context, destinations and credentials", func(t *testing.T) {
		const name = "team/from-git"
		id := s.createImage("ws1", "alice", name, "From a repository.", "FROM busybox\n")
		for cred, body := range map[string]any{
			"gh":  map[string]any{"kind": "git", "host": "git.example.com", "username": "robot", "token": "gh-secret-token"},
			"old": map[string]any{"kind": "registry", "registry": "old.example.com", "password": "old-secret"},
		} {
			if code, _, _ := s.call("PUT", "/api/v1/workspaces/ws1/credentials/"+cred, "alice", body); code != http.StatusNoContent {
				t.Fatalf("PUT credential %s: %d", cred, code)
			}
		}
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.openImage(id, name)

		// The owner stores a registry credential with the form.
		tb.click(`[data-action="add-credential"]`)
		tb.do(
			chromedp.SendKeys(chromedp.CSS("#c-name"), "hub"),
			chromedp.SendKeys(chromedp.CSS("#c-registry"), "registry.example.com"),
			chromedp.SendKeys(chromedp.CSS("#c-user"), "robot"),
			chromedp.SendKeys(chromedp.CSS("#c-secret"), "hub-secret-password"),
		)
		tb.click(`.cred-form button[type="submit"]`)
		tb.waitFor(`[...document.querySelectorAll(".cred")].some(li => li.innerText.includes("hub") && li.innerText.includes("registry.example.com"))`, "the stored credential in the list", 10*time.Second)
		if list := strings.ToLower(tb.text(".cred-list")); !strings.Contains(list, "gh") || !strings.Contains(list, "git") || !strings.Contains(list, "old.example.com") {
			t.Errorf("the credential list shows %q: want names, kinds and registries", list)
		}

		// Delete one, after confirming.
		tb.click(`[aria-label="Delete credential old"]`)
		tb.click(`dialog[open] [data-action="confirm"]`)
		tb.waitFor(`![...document.querySelectorAll(".cred")].some(li => li.innerText.includes("old.example.com"))`, "the deleted credential to go", 10*time.Second)
		_, _, creds := s.call("GET", "/api/v1/workspaces/ws1/credentials", "alice", nil)
		if b, _ := json.Marshal(creds); strings.Contains(string(b), `"old"`) || !strings.Contains(string(b), `"hub"`) {
			t.Errorf("credentials after the page's PUT and DELETE: %s", b)
		}

		// A git context and a destination with the credentials.
		tb.click(`label[for="ctx-git"]`)
		tb.do(
			chromedp.SendKeys(chromedp.CSS("#f-git-url"), "https://git.example.com/team/images.git"),
			chromedp.SendKeys(chromedp.CSS("#f-git-ref"), "v1.2"),
			chromedp.SendKeys(chromedp.CSS("#f-git-dir"), "docker/base"),
		)
		tb.setSelect("#f-git-cred", "gh")
		tb.click(`[data-action="add-destination"]`)
		tb.do(chromedp.SendKeys(chromedp.CSS(".dest-row input"), "registry.example.com/team/from-git:latest"))
		tb.setSelect(".dest-row select", "hub")
		tb.click(`[data-action="save"]`)
		tb.waitFor(`document.querySelector('.dirty-note').hidden`, "the save", 10*time.Second)
		tb.screenshot("editor-git", 1280)
		_, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil)
		got, _ := json.Marshal(map[string]any{"context": img["context"], "destinations": img["destinations"]})
		want := `{"context":{"git":{"credential":"gh","dir":"docker/base","ref":"v1.2","url":"https://git.example.com/team/images.git"},"type":"git"},"destinations":[{"credential":"hub","reference":"registry.example.com/team/from-git:latest"}]}`
		if string(got) != want {
			t.Errorf("saved\n%s\nwant\n%s", got, want)
		}
		// Switching back to LOCAL FOLDER offers the Dockerfile again.
		tb.click(`label[for="ctx-local"]`)
		if df := tb.dockerfile(); !strings.Contains(df, "FROM busybox") {
			t.Errorf("the Dockerfile after switching back: %q", df)
		}
		var page string
		tb.eval(`document.documentElement.outerHTML`, &page)
		for _, secret := range []string{"hub-secret-password", "gh-secret-token", "old-secret"} {
			if strings.Contains(page, secret) {
				t.Errorf("the page holds the secret %q", secret)
			}
		}
	})

	t.Run("keyboard: create from the tiles and save with Ctrl+S", func(t *testing.T) {
		const name = "team/by-keyboard"
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.do(chromedp.Focus(chromedp.CSS(`[data-testid="new-image"]`)), chromedp.KeyEvent(kb.Enter))
		tb.waitFor(`document.activeElement && document.activeElement.id === "f-name"`, "focus on the name field of a new image", 10*time.Second)
		tb.do(chromedp.KeyEvent(name), chromedp.KeyEvent("s", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
		tb.waitFor(`document.querySelector("#page-title")?.innerText === "`+name+`"`, "the saved image's editor", 10*time.Second)
		// The dialog keeps focus inside and Escape closes it.
		tb.do(chromedp.Focus(chromedp.CSS(`[data-action="delete"]`)), chromedp.KeyEvent(kb.Enter))
		tb.waitFor(`document.querySelector("dialog[open]")`, "the confirm dialog", 5*time.Second)
		tb.do(chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab))
		var inside bool
		tb.eval(`document.querySelector("dialog[open]").contains(document.activeElement)`, &inside)
		if !inside {
			t.Error("Tab left the open dialog")
		}
		tb.do(chromedp.KeyEvent(kb.Escape))
		tb.waitFor(`!document.querySelector("dialog[open]") && document.activeElement.dataset.action === "delete"`, "the dialog to close and focus to return", 5*time.Second)
	})

	t.Run("screenshots of the tiles and the editor at 1280 and 768", func(t *testing.T) {
		// A built image too, so that the tiles show all three states.
		if builtID != "" {
			ref := s.Base()
			id := s.createImage("ws1", "alice", "ml/jupyter-base", "Jupyter with the scientific Python stack, for notebooks.", "FROM "+ref+"\nRUN echo ready\n")
			if code, _, b := s.call("POST", "/api/v1/images/"+id+"/builds", "alice", nil); code != http.StatusAccepted {
				t.Fatalf("POST builds: %d %v", code, b)
			}
			deadline := time.Now().Add(3 * time.Minute)
			for {
				_, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil)
				if img["status"] == "built" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("ml/jupyter-base did not build: %v", img["latest_build"])
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
		tb.waitFor(`document.querySelectorAll(".tiles .tile[data-name]").length >= 3`, "the tiles", 10*time.Second)
		tb.screenshot("tiles", 1280)
		tb.screenshot("tiles", 768)
		var id string
		tb.eval(`document.querySelector('.tile[data-name] a.tile-open').getAttribute("href").split("/").pop()`, &id)
		var name string
		tb.eval(`document.querySelector('.tile[data-name]').dataset.name`, &name)
		tb.openImage(id, name)
		tb.screenshot("editor", 1280)
		tb.screenshot("editor", 768)
	})
}

// requireBuilds fails, naming the fix, when what real builds need is missing.
func requireBuilds(t *testing.T) { servertest.Executor(t) }

// inView is a JavaScript condition: sel's element is within the viewport,
// below the sticky top bar.
func inView(sel string) string {
	return fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; const r = e.getBoundingClientRect(); return r.top >= 56 && r.bottom <= innerHeight; })()`, sel)
}
