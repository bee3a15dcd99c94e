package web

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
)

// The browser test here drives the dashboard over the real API handler on
// fake sandboxes, so it needs no root and runs in a few seconds; e2e's
// TestDashboard runs the same kind of steps against a real daemon (with
// commands and streams).

// chrome is a headless Debian chromium with its console errors recorded.
type chrome struct {
	ctx  context.Context
	t    *testing.T
	mu   sync.Mutex // guards errs
	errs []string
}

func newChrome(t *testing.T) *chrome {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the dashboard's browser tests need it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(412, 915), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	c := &chrome{ctx: ctx, t: t}
	msgs := chromedp.Console(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() || strings.EqualFold(string(m.Type), "error") {
				c.mu.Lock()
				c.errs = append(c.errs, m.String()+" ("+m.URL+")")
				c.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			c.shot(filepath.Join(t.ArtifactDir(), "failure.png"))
		}
		cancel()
		cancelAlloc()
		wg.Wait()
	})
	return c
}

func (c *chrome) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		c.shot(filepath.Join(c.t.ArtifactDir(), strings.ReplaceAll(what, " ", "-")+".png"))
		c.t.Fatalf("%s: %v", what, err)
	}
}

func (c *chrome) shot(path string) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	c.t.Logf("screenshot %s: %v", path, err)
}

// keep saves a screenshot into $PADDOCK_SCREENSHOTS, if set (the ones
// under docs/ come from here and from e2e).
func (c *chrome) keep(name string) {
	if dir := os.Getenv("PADDOCK_SCREENSHOTS"); dir != "" {
		c.shot(filepath.Join(dir, name))
	}
}

// consoleErrors returns the errors logged, less those containing one of allowed.
func (c *chrome) consoleErrors(allowed ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
next:
	for _, e := range c.errs {
		for _, a := range allowed {
			if strings.Contains(e, a) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

func TestBrowser(t *testing.T) {
	e := newEnv(t)
	c := newChrome(t)
	c.do("sign in",
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
	for _, m := range c.consoleErrors() {
		t.Log(m)
	}
	c.do("see a new sandbox without a reload", chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+id+`"]`)))
	c.keep("dashboard-sandboxes.png")

	c.do("stop it from its page",
		chromedp.Click(chromedp.CSS(`tr[data-id="`+id+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#stop")),
	)
	c.keep("dashboard-sandbox.png")
	c.do("stop it",
		chromedp.Click(chromedp.CSS("#stop")),
		chromedp.WaitVisible(chromedp.CSS(".state-stopped")),
	)
	c.do("another team's sandbox is not found",
		chromedp.Navigate(e.srv.URL+"/ui/sandboxes/"+e.sbB),
		chromedp.Poll[chromedp.Void](`document.querySelector("h1") && document.querySelector("h1").textContent === "Not Found"`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	e.auth.revoke(tokenA)
	c.do("a revoked token leads to sign-in", chromedp.Navigate(e.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if errs := c.consoleErrors("404 (Not Found)"); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
