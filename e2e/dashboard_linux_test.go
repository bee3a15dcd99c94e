package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/web/webtest"
)

// browser is webtest's chromium with what the daemon's tests add: console
// messages they expect, and signing in.
type browser struct {
	*webtest.Browser
	t *testing.T
	// expected are substrings of console messages the test provokes on
	// purpose (a 404 page logs its failed load).
	expected []string
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	b := &browser{Browser: webtest.New(t, width, height), t: t}
	b.StepTimeout = 3 * time.Minute // steps bound themselves; an activation takes a while
	return b
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// audit fails the test for what the page gets wrong at a phone's width or
// for a keyboard (webtest's Audit).
func (b *browser) audit(page string) {
	b.t.Helper()
	for _, bad := range b.Audit() {
		b.t.Errorf("%s: %s", page, bad)
	}
}

func (b *browser) checkConsole() {
	b.t.Helper()
	for _, e := range b.ConsoleErrors(b.expected...) {
		b.t.Errorf("console: %s", e)
	}
}

func (b *browser) signIn(base, token string) {
	b.t.Helper()
	b.Do("sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("main[data-live=sandboxes] h1")),
	)
}

// TestDashboard drives the dashboard in a real browser against a real
// daemon: sign in, a sandbox made through the API appears without a
// reload, a command's output streams in, the terminal runs a typed
// command, stop it, another team's sandbox
// is not found, a revoked or expired token leads to sign-in, and no page
// logs an error.
func TestDashboard(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{})
	b := newBrowser(t, 412, 915) // a phone's width
	b.signIn(s.url, s.token)
	b.Keep("dashboard-empty.png")

	// Made through the API while the page is open: the event feed brings it in.
	sb := s.create(t, api.CreateSandboxRequest{Labels: map[string]string{"app": "demo"}})
	// The feed brings sandbox.created (the row, pending) before
	// sandbox.started (the same row, running): wait for the second.
	b.Do("see the new sandbox without a reload", chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+sb.ID+`"]`)))
	b.Do("see it running without a reload", chromedp.Poll[chromedp.Void](
		`(document.querySelector('tr[data-id="`+sb.ID+`"] .state') || {}).textContent === "running"`,
		chromedp.WithPollingTimeout(10*time.Second)))
	b.Keep("dashboard-sandboxes.png")
	b.audit("the sandbox list")

	b.Do("run a command and see its output stream in",
		chromedp.Click(chromedp.CSS(`tr[data-id="`+sb.ID+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#run-cmd")),
		chromedp.SendKeys(chromedp.CSS("#run-cmd"), "for i in 1 2 3; do echo line-$i; sleep 0.2; done"),
		chromedp.Click(chromedp.CSS(`#run button[type=submit]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("run-output").textContent.includes("line-3") && document.getElementById("run-output").textContent.includes("[exit 0]")`,
			chromedp.WithPollingTimeout(15*time.Second)),
	)
	b.Keep("dashboard-sandbox.png")

	b.Do("type a command in the terminal and see it run",
		chromedp.Click(chromedp.CSS("#term-open")),
		chromedp.WaitVisible(chromedp.CSS("#term")),
		chromedp.SendKeys(chromedp.CSS("#term"), "echo term-$((6*7))"+kb.Enter),
		chromedp.Poll[chromedp.Void](`document.getElementById("term").textContent.includes("term-42")`, chromedp.WithPollingTimeout(15*time.Second)),
	)
	b.Keep("dashboard-terminal.png")
	b.audit("a sandbox's page")

	b.Do("stop it", chromedp.Click(chromedp.CSS("#stop")), chromedp.WaitVisible(chromedp.CSS(".state-stopped")))

	// Another team's sandbox by URL: not found, as in the API.
	ctx := ctxFor(t, time.Minute)
	team, err := s.client.CreateTeam(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.client.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: "other", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	b.Do("sign out", chromedp.Click(chromedp.CSS(".signout button")), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.signIn(s.url, tok.Secret)
	b.expected = append(b.expected, "404")
	b.Do("open another team's sandbox", chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h := b.text("h1"); h != "Not Found" {
		t.Fatalf("another team's sandbox: heading %q, want Not Found", h)
	}

	// The token is revoked while signed in: the next page is sign-in.
	if err := s.client.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	b.Do("revoked token leads to sign-in", chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))

	// A token that expires while signed in: the next page is sign-in too.
	short, err := s.client.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: "short", Role: "admin", TTLSeconds: 2})
	if err != nil {
		t.Fatal(err)
	}
	b.signIn(s.url, short.Secret)
	if short.ExpiresAt.IsZero() {
		t.Fatal("a token made with a TTL has no expiry")
	}
	time.Sleep(time.Until(short.ExpiresAt) + 100*time.Millisecond)
	b.Do("expired token leads to sign-in", chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.checkConsole()
}
