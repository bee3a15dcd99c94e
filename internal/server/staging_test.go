package server_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/server"
)

// heldImages is an image store whose Import reports the staged archive's
// path and waits to be released, so a test can hold an upload staged.
type heldImages struct {
	fakeImages
	paths   chan string
	release chan struct{}
}

func (h *heldImages) Import(ctx context.Context, scope, path string) (*image.Image, error) {
	h.paths <- path
	<-h.release
	return h.fakeImages.Import(ctx, scope, path)
}

// TestImportStaging: image imports are staged in the server's own
// directory (emptied at start), within one byte budget that every upload in
// flight shares; an upload past what is left is refused (429), one larger
// than the whole budget too large (413), and a finished upload's bytes
// are given back.
func TestImportStaging(t *testing.T) {
	e := setupTeams(t)
	dir := filepath.Join(t.TempDir(), "staging")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "paddock-upload-left-by-a-crash"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	images := &heldImages{paths: make(chan string, 1), release: make(chan struct{})}
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Images: images,
		StagingDir: dir, StagingBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("staging dir not emptied at start: %v", ents)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	post := func(body io.Reader, length int64) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", hs.URL+"/api/v1/images/import", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		req.Header.Set("Authorization", "Bearer "+e.memberA)
		req.Header.Set("Content-Type", "application/x-tar")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	body := func(n int) io.Reader { return strings.NewReader(strings.Repeat("x", n)) }
	// chunked hides the length, so the budget is charged as bytes come.
	chunked := func(n int) io.Reader { return io.MultiReader(body(n)) }

	held := make(chan int, 1)
	go func() {
		code, _ := post(chunked(600), -1)
		held <- code
	}()
	path := <-images.paths
	if filepath.Dir(path) != dir {
		t.Fatalf("staged at %s, want in %s", path, dir)
	}
	if code, data := post(chunked(600), -1); code != http.StatusTooManyRequests || !strings.Contains(data, "staging_full") {
		t.Fatalf("a second upload past the budget: %d %s, want 429 staging_full", code, data)
	}
	if code, data := post(body(1001), 1001); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("an upload larger than the whole budget: %d %s, want 413", code, data)
	}
	close(images.release)
	if code := <-held; code != http.StatusCreated {
		t.Fatalf("the held upload: %d", code)
	}
	// Its bytes are back: the same upload fits again.
	go func() { <-images.paths }()
	if code, data := post(body(600), 600); code != http.StatusCreated {
		t.Fatalf("an upload after the first finished: %d %s", code, data)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("staged files left: %v", ents)
	}
}
