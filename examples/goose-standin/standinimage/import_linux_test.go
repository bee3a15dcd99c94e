package standinimage

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
)

// TestImportIntoStore imports the archive as paddock's `image import` does
// and runs the binary the store unpacked.
func TestImportIntoStore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	bin := standinBinary(t)
	tarPath := filepath.Join(t.TempDir(), "goose-standin.tar")
	if err := WriteImage(bin, tarPath, ""); err != nil {
		t.Fatal(err)
	}
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := store.Import(t.Context(), image.Published, tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != DefaultRef {
		t.Errorf("ref %q, want %q", img.Ref, DefaultRef)
	}
	if got, err := store.Get("any-team", DefaultRef); err != nil || got.Digest != img.Digest {
		t.Errorf("Get(%s) = %+v, %v", DefaultRef, got, err)
	}
	c := img.Config
	if !slices.Equal(c.Entrypoint, []string{BinaryPath}) || !slices.Equal(c.Cmd, []string{"agent"}) || c.WorkingDir != PathRoot {
		t.Errorf("config %+v", c)
	}
	for _, want := range []string{"GOOSE_PORT=3001", "GOOSE_HOST=0.0.0.0", "GOOSE_PATH_ROOT=" + PathRoot} {
		if !slices.Contains(c.Env, want) {
			t.Errorf("env %q lacks %s", c.Env, want)
		}
	}
	if len(img.Layers) != 1 {
		t.Fatalf("layers %v", img.Layers)
	}
	unpacked := filepath.Join(img.Layers[0], BinaryPath)
	fi, err := os.Stat(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 || !fi.Mode().IsRegular() {
		t.Errorf("%s: mode %v", unpacked, fi.Mode())
	}
	// Writable by the sandbox's unprivileged user, as /tmp.
	if fi, err := os.Stat(filepath.Join(img.Layers[0], PathRoot)); err != nil {
		t.Error(err)
	} else if !fi.IsDir() || fi.Mode()&(os.ModeSticky|os.ModePerm) != os.ModeSticky|0o777 {
		t.Errorf("%s: mode %v, want a sticky 0777 directory", PathRoot, fi.Mode())
	}

	// The unpacked binary runs and answers /status: the image is usable as is.
	port := freePort(t)
	cmd := exec.Command(unpacked, "agent")
	cmd.Env = []string{"GOOSE_HOST=127.0.0.1", "GOOSE_PORT=" + port, "GOOSE_PATH_ROOT=" + t.TempDir(), "GOOSE_SERVER__SECRET_KEY=s"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+port+HealthPath, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
				t.Fatalf("%s: %d %q", HealthPath, resp.StatusCode, b)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the unpacked stand-in never answered: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
