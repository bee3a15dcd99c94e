//go:build linux

package agent

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// readArchive reads a whole archive into name -> header (and content for
// small regular files), as root: these tests are about the tar's shape,
// TestReadAsUser about who reads.
func readArchive(t *testing.T, e *testEnv, p string) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	rc, err := e.client.ReadArchive(testCtx(t), p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, bodies := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := hdrs[h.Name]; dup {
			t.Errorf("entry %q twice", h.Name)
		}
		hdrs[h.Name] = h
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		bodies[h.Name] = string(data)
	}
}

func TestReadArchiveTree(t *testing.T) {
	e := startServer(t, nil)
	mtime := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	base := filepath.Join(e.root, "work")
	// "secret" sits outside the archived dir; links to it must stay links.
	if err := os.WriteFile(filepath.Join(e.root, "secret"), []byte("do not follow"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name string
		mode os.FileMode
		body string
	}{
		{"a.txt", 0o644, "alpha"},
		{"bin/run.sh", 0o755, "#!/bin/sh\n"},
		{"deep/x/y/z.txt", 0o600, "z"},
		{"bin/suid", 0o4755 | os.ModeSetuid, "s"},
	}
	for _, f := range files {
		p := filepath.Join(base, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	os.Chown(filepath.Join(base, "a.txt"), UserUID, UserGID)
	os.Chmod(filepath.Join(base, "deep/x"), 0o710)
	os.Symlink("/secret", filepath.Join(base, "abs"))
	os.Symlink("../../secret", filepath.Join(base, "deep/up"))
	os.MkdirAll(filepath.Join(e.root, "outdir"), 0o755)
	os.WriteFile(filepath.Join(e.root, "outdir", "leak"), []byte("x"), 0o644)
	os.Symlink("../outdir", filepath.Join(base, "dirlink")) // the walk must not descend into links
	os.Symlink("/", filepath.Join(base, "rootlink"))
	if err := syscall.Mkfifo(filepath.Join(base, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(base, "deep/x"), mtime, mtime)

	hdrs, bodies := readArchive(t, e, "/work")
	tests := []struct {
		name string
		typ  byte
		mode int64
		link string
		body string
	}{
		{name: "a.txt", typ: tar.TypeReg, mode: 0o644, body: "alpha"},
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/run.sh", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
		{name: "bin/suid", typ: tar.TypeReg, mode: 0o4755, body: "s"},
		{name: "deep/", typ: tar.TypeDir, mode: 0o755},
		{name: "deep/x/", typ: tar.TypeDir, mode: 0o710},
		{name: "deep/x/y/", typ: tar.TypeDir, mode: 0o755},
		{name: "deep/x/y/z.txt", typ: tar.TypeReg, mode: 0o600, body: "z"},
		{name: "abs", typ: tar.TypeSymlink, mode: 0o777, link: "/secret"},
		{name: "deep/up", typ: tar.TypeSymlink, mode: 0o777, link: "../../secret"},
		{name: "dirlink", typ: tar.TypeSymlink, mode: 0o777, link: "../outdir"},
		{name: "rootlink", typ: tar.TypeSymlink, mode: 0o777, link: "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := hdrs[tc.name]
			if !ok {
				t.Fatalf("no entry; have %v", keys(hdrs))
			}
			if h.Typeflag != tc.typ || h.Mode != tc.mode || h.Linkname != tc.link || bodies[tc.name] != tc.body {
				t.Errorf("got type %q mode %o link %q body %q", h.Typeflag, h.Mode, h.Linkname, bodies[tc.name])
			}
		})
	}
	if len(hdrs) != len(tests) {
		t.Errorf("%d entries, want %d (fifo skipped, nothing followed): %v", len(hdrs), len(tests), keys(hdrs))
	}
	if h := hdrs["a.txt"]; h.Uid != UserUID || h.Gid != UserGID || !h.ModTime.Equal(mtime) {
		t.Errorf("a.txt owner %d:%d mtime %v", h.Uid, h.Gid, h.ModTime)
	}
	if h := hdrs["deep/x/"]; !h.ModTime.Equal(mtime) {
		t.Errorf("deep/x mtime %v", h.ModTime)
	}

	// A regular file is one entry named by its base name.
	hdrs, bodies = readArchive(t, e, "/work/bin/run.sh")
	if h := hdrs["run.sh"]; len(hdrs) != 1 || h == nil || h.Mode != 0o755 || bodies["run.sh"] != "#!/bin/sh\n" {
		t.Errorf("single file archive: %v", keys(hdrs))
	}
	// The requested path itself resolves like a read: through symlinks,
	// clamped to the root.
	hdrs, _ = readArchive(t, e, "/work/rootlink/work/bin")
	if _, ok := hdrs["run.sh"]; !ok || len(hdrs) != 2 {
		t.Errorf("archive through a symlinked path: %v", keys(hdrs))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestReadArchiveLargeFileStreams(t *testing.T) {
	e := startServer(t, nil)
	const size = 20 << 20
	if err := os.MkdirAll(filepath.Join(e.root, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(e.root, "big", "blob"))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, want), &patternReader{n: size, x: 7}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The server runs in this process: if it buffered the file, the
	// allocations would show.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rc, err := e.client.ReadArchive(testCtx(t), "/big", false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil || h.Name != "blob" || h.Size != size {
		t.Fatalf("first entry %+v: %v", h, err)
	}
	got := sha256.New()
	if n, err := io.Copy(got, tr); err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("after the file: %v", err)
	}
	runtime.ReadMemStats(&after)
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("20 MB file differs")
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("archiving a 20 MB file allocated %d bytes: not streamed", alloc)
	}
}

func TestReadArchiveErrors(t *testing.T) {
	e := startServer(t, nil)
	os.MkdirAll(filepath.Join(e.root, "dir"), 0o755)
	syscall.Mkfifo(filepath.Join(e.root, "fifo"), 0o644)
	tests := []struct {
		path string
		kind error
		code string
	}{
		{"", sandbox.ErrInvalid, "invalid_path"},
		{"relative", sandbox.ErrInvalid, "invalid_path"},
		{"/dir/..", sandbox.ErrInvalid, "invalid_path"},
		{"/dir/../../etc", sandbox.ErrInvalid, "invalid_path"},
		{"/dir/", sandbox.ErrInvalid, "invalid_path"},
		{"/a\x00b", sandbox.ErrInvalid, "invalid_path"},
		{"/missing", sandbox.ErrNotFound, "file_not_found"},
		{"/fifo", sandbox.ErrInvalid, "not_a_regular_file"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rc, err := e.client.ReadArchive(testCtx(t), tc.path, false)
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, tc.kind) || sandbox.CodeOf(err) != tc.code {
				t.Fatalf("got %v (code %q), want %s", err, sandbox.CodeOf(err), tc.code)
			}
		})
	}
}

// TestReadArchiveCutShort checks that an archive the agent cannot finish
// ends in an error, not in what would look like a complete tar.
func TestReadArchiveCutShort(t *testing.T) {
	e := startServer(t, nil)
	deep := filepath.Join(e.root, "deep")
	for range maxArchiveDepth + 1 {
		deep = filepath.Join(deep, "d")
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	rc, err := e.client.ReadArchive(testCtx(t), "/deep", false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		_, err := tr.Next()
		if err == io.EOF {
			t.Fatal("a cut archive ended cleanly")
		}
		if err != nil {
			return
		}
	}
}
