package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/paddock-dev/paddock/api"
)

// browser is a headless Debian chromium driven by chromedp, with every
// console error and exception of its pages recorded.
type browser struct {
	ctx  context.Context
	t    *testing.T
	mu   sync.Mutex // guards errs
	errs []string
	// expected are substrings of console messages the test provokes on
	// purpose (a 404 page logs its failed load).
	expected []string
}

// newBrowser starts chromium at phone width, or skips the test when it is
// not installed (.ci/run installs it). On failure a screenshot of the
// page is left in the test's temp dir.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the dashboard's browser tests need it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(width, height), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{ctx: ctx, t: t}
	if err := chromedp.Do(ctx); err != nil { // start the browser on a context without a timeout
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleError && !m.IsException() && !strings.EqualFold(string(m.Type), "error") {
				continue
			}
			b.mu.Lock()
			b.errs = append(b.errs, m.String()+" ("+m.URL+")")
			b.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot(filepath.Join(t.ArtifactDir(), "failure.png"))
		}
		cancel()
		cancelAlloc()
		wg.Wait()
	})
	return b
}

// do runs steps with a bound, failing the test with what it was doing.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Minute) // steps bound themselves; an activation takes a while
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.screenshot(filepath.Join(b.t.ArtifactDir(), strings.ReplaceAll(what, " ", "-")+".png"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// screenshot saves the page; PADDOCK_SCREENSHOTS=dir keeps named ones for the docs.
func (b *browser) screenshot(path string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot: %s", path)
}

func (b *browser) keep(name string) {
	if dir := os.Getenv("PADDOCK_SCREENSHOTS"); dir != "" {
		b.screenshot(filepath.Join(dir, name))
	}
}

func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, e := range b.errs {
		for _, x := range b.expected {
			if strings.Contains(e, x) {
				continue next
			}
		}
		b.t.Errorf("console: %s", e)
	}
}

func (b *browser) signIn(base, token string) {
	b.t.Helper()
	b.do("sign in",
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
// is not found, a revoked token leads to sign-in, and no page logs an
// error.
func TestDashboard(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{})
	b := newBrowser(t, 412, 915) // a phone's width
	b.signIn(s.url, s.token)
	b.keep("dashboard-empty.png")

	// Made through the API while the page is open: the event feed brings it in.
	sb := s.create(t, api.CreateSandboxRequest{Labels: map[string]string{"app": "demo"}})
	// The feed brings sandbox.created (the row, pending) before
	// sandbox.started (the same row, running): wait for the second.
	b.do("see the new sandbox without a reload", chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+sb.ID+`"]`)))
	b.do("see it running without a reload", chromedp.Poll[chromedp.Void](
		`(document.querySelector('tr[data-id="`+sb.ID+`"] .state') || {}).textContent === "running"`,
		chromedp.WithPollingTimeout(10*time.Second)))
	b.keep("dashboard-sandboxes.png")

	b.do("run a command and see its output stream in",
		chromedp.Click(chromedp.CSS(`tr[data-id="`+sb.ID+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#run-cmd")),
		chromedp.SendKeys(chromedp.CSS("#run-cmd"), "for i in 1 2 3; do echo line-$i; sleep 0.2; done"),
		chromedp.Click(chromedp.CSS(`#run button[type=submit]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("run-output").textContent.includes("line-3") && document.getElementById("run-output").textContent.includes("[exit 0]")`,
			chromedp.WithPollingTimeout(15*time.Second)),
	)
	b.keep("dashboard-sandbox.png")

	b.do("type a command in the terminal and see it run",
		chromedp.Click(chromedp.CSS("#term-open")),
		chromedp.WaitVisible(chromedp.CSS("#term")),
		chromedp.SendKeys(chromedp.CSS("#term"), "echo term-$((6*7))"+kb.Enter),
		chromedp.Poll[chromedp.Void](`document.getElementById("term").textContent.includes("term-42")`, chromedp.WithPollingTimeout(15*time.Second)),
	)
	b.keep("dashboard-terminal.png")

	b.do("stop it", chromedp.Click(chromedp.CSS("#stop")), chromedp.WaitVisible(chromedp.CSS(".state-stopped")))

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
	b.do("sign out", chromedp.Click(chromedp.CSS(".signout button")), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.signIn(s.url, tok.Secret)
	b.expected = append(b.expected, "404")
	b.do("open another team's sandbox", chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h := b.text("h1"); h != "Not Found" {
		t.Fatalf("another team's sandbox: heading %q, want Not Found", h)
	}

	// The token is revoked while signed in: the next page is sign-in.
	if err := s.client.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	b.do("revoked token leads to sign-in", chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.checkConsole()
}
