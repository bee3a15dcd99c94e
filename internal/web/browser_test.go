package web

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/paddock-dev/paddock/internal/web/webtest"
)

// The browser test here drives the dashboard over the real API handler on
// fake sandboxes, so it needs no root and runs in a few seconds; e2e's
// TestDashboard runs the same kind of steps against a real daemon (with
// commands and streams).

func TestBrowser(t *testing.T) {
	e := newEnv(t)
	c := webtest.New(t, 412, 915) // a phone's width
	c.Do("sign in",
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), tokenA),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+e.sbA+`"]`)),
	)
	// Give the page's event feed a moment to connect, then make a sandbox
	// behind its back: it appears without a reload.
	time.Sleep(300 * time.Millisecond)
	id := e.created(t, map[string]string{"app": "live"})
	for _, m := range c.ConsoleErrors() {
		t.Log(m)
	}
	c.Do("see a new sandbox without a reload", chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+id+`"]`)))
	c.Keep("dashboard-sandboxes.png")

	c.Do("stop it from its page",
		chromedp.Click(chromedp.CSS(`tr[data-id="`+id+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#stop")),
	)
	c.Keep("dashboard-sandbox.png")
	c.Do("stop it",
		chromedp.Click(chromedp.CSS("#stop")),
		chromedp.WaitVisible(chromedp.CSS(".state-stopped")),
	)
	c.Do("another team's sandbox is not found",
		chromedp.Navigate(e.srv.URL+"/ui/sandboxes/"+e.sbB),
		chromedp.Poll[chromedp.Void](`document.querySelector("h1") && document.querySelector("h1").textContent === "Not Found"`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	filesAndUsage(t, e, c)
	e.auth.revoke(tokenA)
	c.Do("a revoked token leads to sign-in", chromedp.Navigate(e.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if errs := c.ConsoleErrors("404 (Not Found)"); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
