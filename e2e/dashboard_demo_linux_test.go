package e2e

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardDemo runs the product flow in the demo page against the
// goose stand-in: choose the project, send a message (which activates it,
// its progress reaching ready), and see the agent's streamed echo.
func TestDashboardDemo(t *testing.T) {
	ps := startProjects(t, nil)
	b := newBrowser(t, 412, 915)
	ps.importStandin(t)
	p, err := ps.svc.CreateProject(ctxFor(t, time.Minute), projTeam, standinProject("goose"))
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
	b.checkConsole()
}
