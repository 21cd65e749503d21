package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// The owner edits an image's rebuild policy on the page; a member sees it
// and cannot; a build's row shows its trigger.
func TestBrowserRebuildPolicy(t *testing.T) {
	s := startSlipway(t)
	s.announce("ws1", "alice", "bob")
	browser := newBrowser(t)
	id := s.createImage("ws1", "alice", "team/policy", "", "FROM busybox\nRUN echo hi\n")
	_, _, before := s.call("GET", "/api/v1/images/"+id, "alice", nil)

	tb := openTab(t, browser, s, "alice", "ws1", false, time.Minute)
	tb.openImage(id, "team/policy")
	tb.waitFor(`document.querySelector('[data-testid="rebuild-policy"]') && !document.querySelector("#rb-cron").disabled`, "the policy card, editable", 10*time.Second)
	// A bad expression: the server's message, nothing saved.
	tb.do(chromedp.SendKeys(chromedp.CSS("#rb-cron"), "0 3 * *"))
	tb.click(`[data-action="save-policy"]`)
	tb.waitFor(`document.querySelector('[data-testid="policy-error"]').innerText.includes("cron")`, "the cron error", 10*time.Second)
	if _, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil); img["rebuild"].(map[string]any)["schedule"] != nil {
		t.Fatalf("a refused policy was saved: %v", img["rebuild"])
	}
	tb.eval(`document.querySelector("#rb-cron").value = ""`, nil)
	tb.do(chromedp.SendKeys(chromedp.CSS("#rb-cron"), "0 3 * * 1"),
		chromedp.SendKeys(chromedp.CSS("#rb-tz"), "Europe/Berlin"), chromedp.Click(chromedp.CSS("#rb-base")))
	if dis := tb.text(`#rb-git-help`); !strings.Contains(dis, "git repository") {
		t.Errorf("the git option's help on a local image: %q", dis)
	}
	tb.click(`[data-action="save-policy"]`)
	tb.waitFor(`document.querySelector('[data-testid="policy-state"]').innerText.includes("Set by alice")`, "the saved policy", 10*time.Second)
	_, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil)
	p := img["rebuild"].(map[string]any)
	sched, _ := p["schedule"].(map[string]any)
	if sched == nil || sched["cron"] != "0 3 * * 1" || sched["timezone"] != "Europe/Berlin" || p["on_base_image_update"] != true || p["on_git_commit"] != false {
		t.Fatalf("the saved policy: %v", p)
	}
	if img["status"] != before["status"] || img["history"].(map[string]any)["modified"].(map[string]any)["at"] != before["history"].(map[string]any)["modified"].(map[string]any)["at"] {
		t.Fatalf("saving the policy moved status or history.modified: %v / %v", img["status"], img["history"])
	}
	// The definition is still editable and saves with the new ETag.
	tb.do(chromedp.SendKeys(chromedp.CSS("#f-desc"), "with a policy"))
	tb.click(`[data-action="save"]`)
	tb.waitFor(`document.querySelector('.dirty-note').hidden`, "the definition saved after the policy", 10*time.Second)
	if _, _, img := s.call("GET", "/api/v1/images/"+id, "alice", nil); img["description"] != "with a policy" {
		t.Fatalf("description %v", img["description"])
	}
	tb.screenshot("rebuild-policy-owner", 1280)

	// A member sees the policy, read only, and why.
	mb := openTab(t, browser, s, "bob", "ws1", true, time.Minute)
	mb.openImage(id, "team/policy")
	mb.waitFor(`document.querySelector("#rb-cron").value === "0 3 * * 1"`, "the policy, as a member", 10*time.Second)
	var disabled bool
	mb.eval(`["#rb-cron", "#rb-tz", "#rb-base", "#rb-git", '[data-action="save-policy"]'].every(s => document.querySelector(s).disabled)`, &disabled)
	if !disabled || !strings.Contains(mb.text(`[data-testid="policy-reason"]`), "owner") {
		t.Fatalf("a member's policy card: disabled %v, reason %q", disabled, mb.text(`[data-testid="policy-reason"]`))
	}

	// A build asked for by a platform event says so in its row.
	code, _, _ := s.call("POST", "/events", "platform", map[string]string{"image": id, "reason": "CVE"},
		"ce-specversion", "1.0", "ce-id", uuid.NewString(), "ce-source", "/scanner", "ce-type", "platform.image.rebuild.requested")
	if code != 200 {
		t.Fatalf("rebuild event: %d", code)
	}
	tb.click(`[data-action="refresh-builds"]`)
	tb.waitFor(`document.querySelector('.build-row[data-build="1"] [data-testid="build-trigger"]')?.innerText === "platform event"`, "the event build's trigger", 10*time.Second)
	var title string
	tb.eval(`document.querySelector('.build-row[data-build="1"] [data-testid="build-trigger"]').title`, &title)
	if !strings.Contains(title, "CVE") {
		t.Errorf("the trigger's title %q does not say why", title)
	}
}
