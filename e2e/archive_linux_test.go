package e2e

import (
	"archive/tar"
	"io"
	"maps"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// TestReadArchive downloads a directory from a real sandbox: the agent runs
// as PID 1 with its seccomp profile and walks the sandbox's own root.
func TestReadArchive(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{})
	sb := s.create(t, api.CreateSandboxRequest{})
	if out, code := sh(t, sb, `set -e
		mkdir -p ~/tree/sub/deeper
		printf alpha > ~/tree/a.txt
		printf deep > ~/tree/sub/deeper/z.txt
		chmod 750 ~/tree/sub
		ln -s /etc ~/tree/etc-link
		mkfifo ~/tree/fifo
		head -c 3000000 /dev/urandom > ~/tree/big.bin`); code != 0 {
		t.Fatalf("setup: %s", out)
	}
	rc, err := sb.ReadArchive(ctxFor(t, time.Minute), "/home/user/tree")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		typ  byte
		mode int64
		link string
		size int64
	}
	got := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 1000 {
			t.Errorf("%s: uid %d", h.Name, h.Uid)
		}
		got[h.Name] = entry{h.Typeflag, h.Mode, h.Linkname, n}
	}
	want := map[string]entry{
		"a.txt":            {tar.TypeReg, 0o644, "", 5},
		"big.bin":          {tar.TypeReg, 0o644, "", 3000000},
		"sub/":             {tar.TypeDir, 0o750, "", 0},
		"sub/deeper/":      {tar.TypeDir, 0o755, "", 0},
		"sub/deeper/z.txt": {tar.TypeReg, 0o644, "", 4},
		"etc-link":         {tar.TypeSymlink, 0o777, "/etc", 0},
	}
	if !maps.Equal(got, want) {
		t.Errorf("archive entries\n got %v\nwant %v", got, want)
	}
	if _, err := sb.ReadArchive(ctxFor(t, time.Minute), "/home/user/missing"); err == nil {
		t.Error("archive of a missing path succeeded")
	}
}
