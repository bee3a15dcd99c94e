package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardDemo runs the product flow in the demo page against the
// goose stand-in: choose the project, send a message (which activates it,
// its progress reaching ready), and see the agent's streamed echo; walk
// away until the idle timeout deactivates it (shown live), come back to the
// page and send another: the project is activated again and the agent's
// session restored, the earlier message shown from the agent's own copy.
func TestDashboardDemo(t *testing.T) {
	ps := startProjects(t, nil)
	b := newBrowser(t, 390, 844) // a phone
	ps.importStandin(t)
	req := standinProject("goose")
	// Long enough for the first exchange after ready (activity through the
	// app proxy keeps it up), short enough to wait for.
	req.IdleTimeout = 5 * time.Second
	p, err := ps.svc.CreateProject(ctxFor(t, time.Minute), projTeam, req)
	if err != nil {
		t.Fatal(err)
	}
	b.signIn(ps.url, ps.tokens[projTeam.TeamID])
	b.Do("choose the project, activate it by sending a message, see the streamed echo",
		chromedp.Navigate(ps.url+"/ui/demo?project="+p.ID),
		chromedp.WaitVisible(chromedp.CSS("#chat-input")),
		chromedp.SendKeys(chromedp.CSS("#chat-input"), "hello from the browser"),
		// A click, not Submit: form.submit() skips the submit event the page handles.
		chromedp.Click(chromedp.CSS(`#chat-form button[type=submit]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#demo .progress").textContent.includes("ready")`, chromedp.WithPollingTimeout(2*time.Minute)),
		chromedp.Poll[chromedp.Void](`document.getElementById("chat").textContent.includes("echo: hello from the browser")`, chromedp.WithPollingTimeout(time.Minute)),
	)
	b.Keep("dashboard-demo.png")

	b.Do("walk away: the idle deactivation shows up without a reload",
		chromedp.Poll[chromedp.Void](`!!document.querySelector("#chat .deactivated") && document.querySelector("#chat .deactivated").textContent.includes("idle") && document.getElementById("demo-state").textContent === "stopped"`,
			chromedp.WithPollingTimeout(time.Minute)),
	)
	b.Keep("dashboard-demo-idle.png")

	b.Do("come back: a message activates it again and the session is restored",
		chromedp.Navigate(ps.url+"/ui/demo?project="+p.ID),
		chromedp.WaitVisible(chromedp.CSS("#chat-input")),
		chromedp.SendKeys(chromedp.CSS("#chat-input"), "are you still there"),
		chromedp.Click(chromedp.CSS(`#chat-form button[type=submit]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#demo .progress").textContent.includes("ready")`, chromedp.WithPollingTimeout(2*time.Minute)),
		chromedp.Poll[chromedp.Void](`document.getElementById("chat").textContent.includes("echo: are you still there")`, chromedp.WithPollingTimeout(time.Minute)),
	)
	// The page was loaded anew: the earlier exchange comes from the
	// agent's restored session, not from the page.
	if got := b.text("#chat .restored"); !strings.Contains(got, "restored: 2 earlier messages") {
		t.Errorf("restored note %q, want the 2 earlier messages", got)
	}
	if got := b.text("#chat .earlier.you"); got != "hello from the browser" {
		t.Errorf("earlier message %q, want the first session's", got)
	}
	b.Keep("dashboard-demo-restored.png")

	// With a project's history in them, the pages still fit a phone and
	// every control is labelled and reachable by keyboard.
	for _, page := range []string{"/ui/demo?project=" + p.ID, "/ui/projects", "/ui/projects/" + p.ID, "/ui/capacity", "/ui/usage", "/ui/events", "/ui/admin"} {
		b.Do("open "+page, chromedp.Navigate(ps.url+page), chromedp.WaitVisible(chromedp.CSS("main h1")))
		b.audit(page)
	}
	b.checkConsole()
}
