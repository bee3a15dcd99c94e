package web

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/paddock-dev/paddock/internal/agent"
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

// TestBrowserTerminal: the terminal's PTY follows its box, which full
// screen and the window's size change, and the keyboard can leave it and
// work the full-screen toggle.
func TestBrowserTerminal(t *testing.T) {
	e := newEnv(t)
	c := webtest.New(t, 1024, 768)
	c.Do("sign in and open a terminal",
		chromedp.Navigate(e.srv.URL+"/ui/sandboxes/"+e.sbA),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), tokenA),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("#term-open")),
		chromedp.Click(chromedp.CSS("#term-open")),
		chromedp.WaitVisible(chromedp.CSS("#term-full")),
		chromedp.SendKeys(chromedp.CSS("#term"), "echo hi"+kb.Enter),
		chromedp.Poll[chromedp.Void](`document.getElementById("term").textContent.includes("echo hi")`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	// ptySize waits for the PTY's size to satisfy ok and returns it.
	ptySize := func(what string, ok func(agent.PTYSize) bool) agent.PTYSize {
		t.Helper()
		var last agent.PTYSize
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			for _, cmd := range e.agent.Commands() {
				if cmd.PTY != nil {
					if last = *cmd.PTY; ok(last) {
						return last
					}
				}
			}
		}
		t.Fatalf("%s: the PTY is %dx%d", what, last.Rows, last.Cols)
		return last
	}
	small := ptySize("opened at the box's size", func(s agent.PTYSize) bool { return s.Rows >= 5 && s.Cols >= 20 })

	// The button is clicked as an element, not at its coordinates: the page
	// above the terminal still grows as the live feed fills it in (the
	// terminal's command among them), and a click at coordinates measured
	// before such a shift missed the button in loaded runs.
	c.Do("full screen", chromedp.Poll[chromedp.Void](`(document.getElementById("term-full").click(), true)`, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.WaitVisible(chromedp.CSS(`#term-section.term-full #term-full[aria-pressed="true"]`)))
	full := ptySize("full screen grows it", func(s agent.PTYSize) bool { return s.Rows > small.Rows && s.Cols > small.Cols })

	c.Do("a narrower window", chromedp.EmulateViewport(600, 500))
	ptySize("it follows the window", func(s agent.PTYSize) bool { return s.Rows < full.Rows && s.Cols < full.Cols })

	c.Do("leave the terminal by keyboard and end full screen",
		chromedp.Focus(chromedp.CSS("#term")),
		chromedp.KeyEvent("\t", chromedp.KeyModifiers(chromedp.ModifierShift)),
		chromedp.Poll[chromedp.Void](`document.activeElement && document.activeElement.id === "term-full"`, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`#term-full[aria-pressed="false"]`)),
	)
	if errs := c.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestBrowserPhone opens the main pages at a phone's size (390x844): none
// scrolls sideways, and every control is labelled and keyboard-reachable.
func TestBrowserPhone(t *testing.T) {
	e := newEnv(t)
	for range 12 { // enough rows to fill the list
		e.created(t, map[string]string{"app": "a-rather-long-label-value", "owner": "team-a"})
	}
	c := webtest.New(t, 390, 844)
	audit := func(page string) {
		t.Helper()
		for _, b := range c.Audit() {
			t.Errorf("%s: %s", page, b)
		}
	}
	c.Do("open sign-in", chromedp.Navigate(e.srv.URL+"/ui/login"), chromedp.WaitVisible(chromedp.CSS("#token")))
	audit("/ui/login")
	c.Do("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), tokenA),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+e.sbA+`"]`)),
	)
	for _, page := range []string{"/ui/", "/ui/sandboxes/" + e.sbA, "/ui/projects", "/ui/demo", "/ui/capacity", "/ui/usage", "/ui/events", "/ui/admin"} {
		c.Do("open "+page, chromedp.Navigate(e.srv.URL+page), chromedp.WaitVisible(chromedp.CSS("main h1")))
		audit(page)
		if page == "/ui/" {
			c.Keep("dashboard-sandboxes-phone.png")
		}
	}
	if errs := c.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
