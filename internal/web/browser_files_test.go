package web

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/paddock-dev/paddock/internal/web/webtest"
	"github.com/paddock-dev/paddock/sdk"
)

// filesAndUsage is TestBrowser's walk through a sandbox's files and
// usage, signed in: see the usage charts, browse to a file written through
// the API, download it, upload one and read it back through the API.
func filesAndUsage(t *testing.T, e *env, c *webtest.Browser) {
	t.Helper()
	const id = "sb-files"
	e.metered(t, id, 20)
	ctx := context.Background()
	sb := e.apiClient(tokenA).Sandbox(id)
	if _, err := sb.WriteFiles(ctx, "/home/user/docs", []sdk.File{{Path: "notes.txt", Content: []byte("hello from the API\n")}}); err != nil {
		t.Fatal(err)
	}
	downloads, local := t.TempDir(), filepath.Join(t.TempDir(), "upload.txt")
	if err := os.WriteFile(local, []byte("uploaded in a browser\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	c.Do("see the usage charts",
		chromedp.Navigate(e.srv.URL+"/ui/sandboxes/"+id),
		chromedp.WaitVisible(chromedp.CSS("#chart-cpu svg")),
		chromedp.WaitVisible(chromedp.CSS("#chart-memory svg")),
		chromedp.WaitVisible(chromedp.CSS("#chart-network svg")),
	)
	bars, err := chromedp.Run(c.Ctx, chromedp.Evaluate[int](`document.querySelectorAll("#chart-cpu rect").length`))
	if err != nil {
		t.Fatal(err)
	}
	if bars < 20 {
		t.Errorf("%d CPU bars, want one a minute of 20", bars)
	}
	c.Keep("dashboard-sandbox-usage.png")

	link := func(text string) chromedp.Action[chromedp.Void] {
		return chromedp.Click(chromedp.Search(`//table[@id="files"]//a[normalize-space(text())="` + text + `"]`))
	}
	c.Do("browse to the file",
		chromedp.Click(chromedp.CSS("#browse")),
		chromedp.WaitVisible(chromedp.CSS("#files")),
		link("home/"),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="user/"]`)),
		link("user/"),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="docs/"]`)),
		link("docs/"),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="notes.txt"]`)),
	)
	c.Keep("dashboard-files.png")

	c.Do("download it",
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
			return err
		}),
		link("notes.txt"),
	)
	if got := waitForFile(t, filepath.Join(downloads, "notes.txt")); got != "hello from the API\n" {
		t.Errorf("downloaded %q", got)
	}

	var f *sdk.FileReader
	c.Do("upload a file here",
		chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{local}),
		chromedp.Click(chromedp.CSS(`#upload button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="files"]//a[text()="upload.txt"]`)),
	)
	f, err = sb.ReadFile(ctx, "/home/user/docs/upload.txt")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "uploaded in a browser\n" {
		t.Errorf("read back through the API %q", data)
	}
}

// waitForFile returns path's content once the browser has finished
// writing it (it downloads into a temporary name first).
func waitForFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil {
			return string(data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no download at %s", path)
	return ""
}
