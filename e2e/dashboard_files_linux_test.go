package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/sdk"
)

// TestDashboardFiles drives a real sandbox's files and usage in a real
// browser against a real daemon: the usage charts fill from the meter's
// samples, a file written through the API is browsed to and downloaded,
// and a file uploaded in the page reads back through the API.
func TestDashboardFiles(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{config: func(c *daemon.Config) { c.UsageInterval = 200 * time.Millisecond }})
	sb := s.create(t, api.CreateSandboxRequest{})
	ctx := ctxFor(t, time.Minute)
	if _, err := sb.WriteFiles(ctx, "/home/user/docs", []sdk.File{{Path: "notes.txt", Content: []byte("hello from the API\n")}}); err != nil {
		t.Fatal(err)
	}
	if out, code := sh(t, sb, "ln -s /etc ~/docs/etc-link && head -c 100000 /dev/zero > /dev/null"); code != 0 {
		t.Fatalf("setup: %s", out)
	}
	// Wait for a sample or two, so the page has usage to chart.
	for deadline := time.Now().Add(30 * time.Second); ; {
		u, err := s.client.ListUsage(ctx, sdk.UsageQuery{SandboxID: sb.ID, Granularity: "minute"})
		if err != nil {
			t.Fatal(err)
		}
		if len(u.Usage) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no usage sample of the sandbox")
		}
		time.Sleep(100 * time.Millisecond)
	}
	downloads, local := t.TempDir(), filepath.Join(t.TempDir(), "upload.txt")
	if err := os.WriteFile(local, []byte("uploaded in a browser\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, 412, 915)
	b.signIn(s.url, s.token)
	b.Do("see the usage charts",
		chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID),
		chromedp.WaitVisible(chromedp.CSS("#chart-cpu svg")),
		chromedp.WaitVisible(chromedp.CSS("#chart-network svg")),
	)
	link := func(text string) chromedp.Action[chromedp.Void] {
		return chromedp.Click(chromedp.Search(`//table[@id="files"]//a[normalize-space(text())="` + text + `"]`))
	}
	// The sandbox user's home is where browsing starts.
	b.Do("browse to the file",
		chromedp.Click(chromedp.CSS("#browse")),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="docs/"]`)),
		link("docs/"),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="notes.txt"]`)),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//code[text()="/etc"]`)),
	)
	b.Do("download it",
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
				Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
			return err
		}),
		link("notes.txt"),
	)
	var got []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if got, err = os.ReadFile(filepath.Join(downloads, "notes.txt")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if string(got) != "hello from the API\n" {
		t.Errorf("downloaded %q", got)
	}
	b.Do("upload a file here",
		chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{local}),
		chromedp.Click(chromedp.CSS(`#upload button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="upload.txt"]`)),
	)
	f, err := sb.ReadFile(ctx, "/home/user/docs/upload.txt")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "uploaded in a browser\n" {
		t.Errorf("read back through the API %q", data)
	}
	b.checkConsole()
}
