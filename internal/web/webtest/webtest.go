// Package webtest drives the dashboard in a headless Debian chromium for
// tests (chromedp), recording every console error and exception of its
// pages. Only tests import it: internal/web's quick test on fake sandboxes
// and e2e's against a real daemon share it.
package webtest

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

// Browser is one chromium, stopped when its test ends.
type Browser struct {
	// Ctx is the browser's tab: run actions on a context derived from it.
	Ctx context.Context
	// StepTimeout bounds each Do (15 seconds unless set).
	StepTimeout time.Duration

	t    *testing.T
	mu   sync.Mutex // guards errs
	errs []string
}

// New starts chromium with a window of width × height, or skips the test
// when it is not installed (.ci/run installs it). On failure a screenshot
// of the page is left in the test's artifact dir.
func New(t *testing.T, width, height int) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the dashboard's browser tests need it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(width, height), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // start the browser on a context without a timeout
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	b := &Browser{Ctx: ctx, StepTimeout: 15 * time.Second, t: t}
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
			b.Screenshot(filepath.Join(t.ArtifactDir(), "failure.png"))
		}
		cancel()
		cancelAlloc()
		wg.Wait()
	})
	return b
}

// fileName makes a step's description (which may hold a URL) a file name.
var fileName = strings.NewReplacer(" ", "-", "/", "_", "?", "_", "&", "_", "=", "_")

// Do runs steps within StepTimeout; on failure it leaves a screenshot
// named after what in the test's artifact dir and fails the test.
func (b *Browser) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, b.StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.Screenshot(filepath.Join(b.t.ArtifactDir(), fileName.Replace(what)+".png"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Screenshot saves the whole page as a PNG at path; a failure is logged,
// not fatal, as it is only evidence.
func (b *Browser) Screenshot(path string) {
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
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

// Keep saves a screenshot named name into $PADDOCK_SCREENSHOTS, if set
// (the ones under docs/ come from the browser tests).
func (b *Browser) Keep(name string) {
	if dir := os.Getenv("PADDOCK_SCREENSHOTS"); dir != "" {
		b.Screenshot(filepath.Join(dir, name))
	}
}

// ConsoleErrors returns the errors the pages logged so far, less those
// containing one of allowed.
func (b *Browser) ConsoleErrors(allowed ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, e := range b.errs {
		for _, a := range allowed {
			if strings.Contains(e, a) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// auditJS lists what a page gets wrong for a phone and a keyboard: a page
// wider than the window or a part of it that scrolls sideways, and visible
// controls without an accessible name
// or out of the tab order.
const auditJS = `(() => {
  const bad = [];
  const text = el => (el && el.textContent || "").trim();
  document.querySelectorAll("input, select, textarea, button, a[href], [tabindex]").forEach(el => {
    if (el.type === "hidden" || !el.getClientRects().length) return;
    let name = el.getAttribute("aria-label") || "";
    if (!name && el.getAttribute("aria-labelledby")) name = el.getAttribute("aria-labelledby").split(" ").map(id => text(document.getElementById(id))).join(" ");
    if (!name && el.labels) name = Array.from(el.labels).map(text).join(" ");
    if (!name && (el.tagName === "BUTTON" || el.tagName === "A")) name = text(el);
    if (!name.trim()) bad.push("no name: " + el.outerHTML.slice(0, 160));
    if (el.tabIndex < 0) bad.push("not in the tab order: " + el.outerHTML.slice(0, 160));
  });
  document.querySelectorAll("main *").forEach(el => {
    const o = getComputedStyle(el).overflowX;
    if ((o === "auto" || o === "scroll") && el.scrollWidth > el.clientWidth + 1) bad.push("scrolls sideways: " + el.outerHTML.slice(0, 120));
  });
  const w = document.documentElement.scrollWidth;
  if (w > window.innerWidth) {
    const wide = Array.from(document.querySelectorAll("main *")).filter(el => el.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 3).map(el => el.outerHTML.slice(0, 120));
    bad.push("horizontal scroll: " + w + " > " + window.innerWidth + " " + wide.join(" | "));
  }
  return bad;
})()`

// Audit returns what the page gets wrong for a phone and a keyboard (see
// auditJS); an empty list is a pass.
func (b *Browser) Audit() []string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](auditJS))
	if err != nil {
		return []string{"audit: " + err.Error()}
	}
	return bad
}
