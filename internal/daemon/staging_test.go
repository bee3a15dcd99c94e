package daemon

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/sdk"
)

// TestImportStaging: image imports are staged under the data dir, and what
// a crash left there mid-import is gone after the next start (they went
// to the host's temp dir before, where nothing removed them).
func TestImportStaging(t *testing.T) {
	noGoroutinesLeft(t)
	dir := newDataDir(t)
	staging := filepath.Join(dir, "tmp", "uploads")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(staging, "paddock-upload-123")
	if err := os.WriteFile(left, []byte("half an archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, Config{DataDir: dir, NoNetwork: true}, WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("a crash's staged import survived the start: %v", err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "paddock-import-*"))

	// The body streams into the staging dir until the import reads it.
	body := &slowArchive{staged: staging, seen: make(chan []string, 1)}
	_, err := s.client.ImportImage(t.Context(), body, sdk.Published())
	if err == nil || !strings.Contains(err.Error(), "invalid_archive") {
		t.Errorf("import of garbage: %v, want invalid_archive", err)
	}
	if got := <-body.seen; len(got) != 1 {
		t.Errorf("staged files while the body was read: %v, want one in %s", got, staging)
	}
	if names, _ := os.ReadDir(staging); len(names) != 0 {
		t.Errorf("staging dir after the import: %v", names)
	}
	if after, _ := filepath.Glob(filepath.Join(os.TempDir(), "paddock-import-*")); len(after) > len(before) {
		t.Errorf("import staged in the host's temp dir: %v", after)
	}
}

// slowArchive is a request body that looks into the staging dir once the
// server has read its first part.
type slowArchive struct {
	staged string
	seen   chan []string
	n      int
}

func (a *slowArchive) Read(p []byte) (int, error) {
	a.n++
	switch a.n {
	case 1:
		return copy(p, "not a tar"), nil
	case 2:
		// Let the server write what it read; then look.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if m, _ := filepath.Glob(filepath.Join(a.staged, "*")); len(m) > 0 {
				a.seen <- m
				return 0, io.EOF
			}
		}
		a.seen <- nil
	}
	return 0, io.EOF
}
