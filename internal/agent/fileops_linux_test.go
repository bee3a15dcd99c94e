//go:build linux

package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// writeTree makes files (name -> content; a trailing "/" makes a
// directory, "->target" a symlink) below root, owned by root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(content[2:], p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if sandbox.CodeOf(err) != code {
		t.Fatalf("got %v (code %q), want %s", err, sandbox.CodeOf(err), code)
	}
}

func TestStat(t *testing.T) {
	e := startServer(t, nil)
	writeTree(t, e.root, map[string]string{
		"etc/passwd":    "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
		"etc/group":     "root:x:0:\nusers:x:1000:\n",
		"dir/file.txt":  "hello",
		"dir/rel":       "->file.txt",
		"dir/abs":       "->/etc/passwd",
		"dir/up":        "->../../../..",
		"dir/sub/":      "",
		"linkdir":       "->/dir",
		"dir/orphan-id": "x",
	})
	os.Chown(filepath.Join(e.root, "dir/orphan-id"), 4242, 4343)
	mtime := time.Date(2021, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(filepath.Join(e.root, "dir/file.txt"), mtime, mtime)
	os.Chmod(filepath.Join(e.root, "dir/file.txt"), 0o640|os.ModeSticky)

	tests := []struct {
		path string
		want Entry
		code string
	}{
		{path: "/dir/file.txt", want: Entry{Name: "file.txt", Path: "/dir/file.txt", Type: EntryFile, Size: 5, Mode: 0o1640,
			Permissions: "trw-r-----", Owner: "root", Group: "root", ModTime: mtime}},
		{path: "/dir/sub", want: Entry{Name: "sub", Path: "/dir/sub", Type: EntryDir, Mode: 0o755, Permissions: "drwxr-xr-x", Owner: "root", Group: "root"}},
		{path: "/dir/rel", want: Entry{Name: "rel", Path: "/dir/rel", Type: EntrySymlink, SymlinkTarget: "/dir/file.txt", Owner: "root", Group: "root"}},
		{path: "/dir/abs", want: Entry{Name: "abs", Path: "/dir/abs", Type: EntrySymlink, SymlinkTarget: "/etc/passwd", Owner: "root", Group: "root"}},
		{path: "/dir/up", want: Entry{Name: "up", Path: "/dir/up", Type: EntrySymlink, SymlinkTarget: "/", Owner: "root", Group: "root"}},
		// The directory on the way resolves inside the root.
		{path: "/linkdir/file.txt", want: Entry{Name: "file.txt", Path: "/linkdir/file.txt", Type: EntryFile, Size: 5, Mode: 0o1640,
			Permissions: "trw-r-----", Owner: "root", Group: "root", ModTime: mtime}},
		{path: "/dir/up/etc/passwd", want: Entry{Name: "passwd", Path: "/dir/up/etc/passwd", Type: EntryFile, Owner: "root", Group: "root"}},
		{path: "/dir/orphan-id", want: Entry{Name: "orphan-id", Path: "/dir/orphan-id", Type: EntryFile, Owner: "4242", Group: "4343"}},
		{path: "/", want: Entry{Name: "/", Path: "/", Type: EntryDir, Owner: "user", Group: "users"}},
		{path: "/missing", code: "file_not_found"},
		{path: "/dir/file.txt/x", code: "not_a_directory"},
		{path: "relative", code: "invalid_path"},
		{path: "/dir/../x", code: "invalid_path"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := e.client.Stat(testCtx(t), tc.path, false)
			if tc.code != "" {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			if got.Name != w.Name || got.Path != w.Path || got.Type != w.Type || got.Owner != w.Owner || got.Group != w.Group ||
				got.SymlinkTarget != w.SymlinkTarget {
				t.Errorf("got %+v, want %+v", got, w)
			}
			if w.Permissions != "" && (got.Mode != w.Mode || got.Permissions != w.Permissions || (w.Type == EntryFile && got.Size != w.Size)) {
				t.Errorf("mode %o %q size %d, want %o %q %d", got.Mode, got.Permissions, got.Size, w.Mode, w.Permissions, w.Size)
			}
			if !w.ModTime.IsZero() && !got.ModTime.Equal(w.ModTime) {
				t.Errorf("mtime %v, want %v", got.ModTime, w.ModTime)
			}
		})
	}
}

// TestStatAsUser: without sudo a stat needs the user's search permission
// on the way, as stat(2) does, and no more.
func TestStatAsUser(t *testing.T) {
	e := startServer(t, nil)
	writeTree(t, e.root, map[string]string{"closed/f": "x", "searchonly/f": "y"})
	os.Chmod(filepath.Join(e.root, "closed"), 0o700)
	os.Chmod(filepath.Join(e.root, "searchonly"), 0o711)
	_, err := e.client.Stat(testCtx(t), "/closed/f", false)
	wantCode(t, err, "permission_denied")
	if _, err := e.client.Stat(testCtx(t), "/closed/f", true); err != nil {
		t.Errorf("sudo stat: %v", err)
	}
	if _, err := e.client.Stat(testCtx(t), "/searchonly/f", false); err != nil {
		t.Errorf("stat through a search-only directory: %v", err)
	}
}

func TestListDir(t *testing.T) {
	e := startServer(t, nil)
	writeTree(t, e.root, map[string]string{
		"d/b.txt":       "b",
		"d/a/x.txt":     "x",
		"d/a/deep/y":    "y",
		"d/link":        "->/d/a",
		"d/c/":          "",
		"other/secret":  "s",
		"other/more/z/": "",
		"file":          "f",
		"top":           "->/d",
	})
	paths := func(es []Entry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Path+":"+e.Type)
		}
		return strings.Join(out, " ")
	}
	tests := []struct {
		path  string
		depth int
		want  string
		code  string
	}{
		{path: "/d", depth: 1, want: "/d/a:dir /d/b.txt:file /d/c:dir /d/link:symlink"},
		{path: "/d", depth: 2, want: "/d/a:dir /d/a/deep:dir /d/a/x.txt:file /d/b.txt:file /d/c:dir /d/link:symlink"},
		{path: "/d", depth: 9, want: "/d/a:dir /d/a/deep:dir /d/a/deep/y:file /d/a/x.txt:file /d/b.txt:file /d/c:dir /d/link:symlink"},
		// The directory asked for resolves through a symlink; paths keep
		// the name asked for.
		{path: "/top", depth: 1, want: "/top/a:dir /top/b.txt:file /top/c:dir /top/link:symlink"},
		{path: "/d/c", depth: 1, want: ""},
		{path: "/file", depth: 1, code: "not_a_directory"},
		{path: "/missing", depth: 1, code: "file_not_found"},
		{path: "/d", depth: 0, code: "invalid_depth"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := e.client.ListDir(testCtx(t), tc.path, tc.depth, false)
			if tc.code != "" {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if paths(got) != tc.want {
				t.Errorf("got  %s\nwant %s", paths(got), tc.want)
			}
		})
	}
	// A directory the user cannot read is listed but not descended into.
	os.Chmod(filepath.Join(e.root, "other/more"), 0o700)
	got, err := e.client.ListDir(testCtx(t), "/other", 3, false)
	if err != nil {
		t.Fatal(err)
	}
	if paths(got) != "/other/more:dir /other/secret:file" {
		t.Errorf("got %s", paths(got))
	}
}

func TestMove(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	writeTree(t, e.root, map[string]string{
		"src/a.txt":      "a",
		"src/b.txt":      "b",
		"src/dir/in":     "i",
		"full/x":         "x",
		"link":           "->/src/b.txt",
		"rootonly/f":     "r",
		"victim.txt":     "v",
		"willreplace":    "old",
		"src/replacewth": "new",
	})
	os.Chown(filepath.Join(e.root, "src"), UserUID, UserGID)
	for _, f := range []string{"src/a.txt", "src/b.txt", "src/dir", "src/dir/in", "src/replacewth", "link", "willreplace"} {
		os.Lchown(filepath.Join(e.root, f), UserUID, UserGID)
	}
	os.Chmod(filepath.Join(e.root, "rootonly"), 0o755)

	got, err := e.client.Move(ctx, MoveRequest{Source: "/src/a.txt", Destination: "/new/parent/a2.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != "/new/parent/a2.txt" || got.Type != EntryFile || got.Size != 1 {
		t.Errorf("moved entry %+v", got)
	}
	if fi, err := os.Stat(filepath.Join(e.root, "new/parent")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != UserUID {
		t.Errorf("created parent not the user's: %v", err)
	}
	// A symlink moves itself; its target stays.
	if got, err := e.client.Move(ctx, MoveRequest{Source: "/link", Destination: "/link2"}); err != nil || got.Type != EntrySymlink {
		t.Fatalf("move link: %+v %v", got, err)
	}
	if data, _ := os.ReadFile(filepath.Join(e.root, "src/b.txt")); string(data) != "b" {
		t.Errorf("link target changed: %q", data)
	}
	// An existing file is replaced.
	if _, err := e.client.Move(ctx, MoveRequest{Source: "/src/replacewth", Destination: "/willreplace"}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(e.root, "willreplace")); string(data) != "new" {
		t.Errorf("replaced file holds %q", data)
	}
	for _, tc := range []struct {
		name string
		req  MoveRequest
		code string
	}{
		{"missing", MoveRequest{Source: "/nope", Destination: "/x"}, "file_not_found"},
		{"onto a non-empty dir", MoveRequest{Source: "/src/dir", Destination: "/full", Sudo: true}, "destination_exists"},
		{"into itself", MoveRequest{Source: "/src/dir", Destination: "/src/dir/in2"}, "invalid_path"},
		{"the root", MoveRequest{Source: "/", Destination: "/x"}, "invalid_path"},
		{"onto the root", MoveRequest{Source: "/src/b.txt", Destination: "/"}, "invalid_path"},
		{"not clean", MoveRequest{Source: "/src/../victim.txt", Destination: "/x"}, "invalid_path"},
		{"user into root's dir", MoveRequest{Source: "/src/b.txt", Destination: "/rootonly/b"}, "permission_denied"},
		{"user moves root's file", MoveRequest{Source: "/rootonly/f", Destination: "/src/f"}, "permission_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.Move(ctx, tc.req)
			wantCode(t, err, tc.code)
		})
	}
	if _, err := e.client.Move(ctx, MoveRequest{Source: "/rootonly/f", Destination: "/rootonly/g", Sudo: true}); err != nil {
		t.Errorf("sudo move: %v", err)
	}
}

func TestRemove(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	writeTree(t, e.root, map[string]string{
		"mine/tree/a/b/c": "c",
		"mine/file":       "f",
		"mine/link":       "->/kept/target",
		"kept/target":     "t",
		"rootonly/f":      "r",
	})
	filepath.WalkDir(filepath.Join(e.root, "mine"), func(p string, _ os.DirEntry, _ error) error {
		return os.Lchown(p, UserUID, UserGID)
	})
	for _, p := range []string{"/mine/file", "/mine/tree", "/mine/link"} {
		if err := e.client.Remove(ctx, RemoveRequest{Path: p}); err != nil {
			t.Fatalf("remove %s: %v", p, err)
		}
		if _, err := os.Lstat(filepath.Join(e.root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(e.root, "kept/target")); string(data) != "t" {
		t.Errorf("symlink target removed")
	}
	for _, tc := range []struct {
		name string
		req  RemoveRequest
		code string
	}{
		{"missing", RemoveRequest{Path: "/mine/file"}, "file_not_found"},
		{"root", RemoveRequest{Path: "/", Sudo: true}, "invalid_path"},
		{"root's file as user", RemoveRequest{Path: "/rootonly/f"}, "permission_denied"},
		{"relative", RemoveRequest{Path: "mine"}, "invalid_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.client.Remove(ctx, tc.req), tc.code)
		})
	}
	if err := e.client.Remove(ctx, RemoveRequest{Path: "/rootonly", Sudo: true}); err != nil {
		t.Errorf("sudo remove: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.MaxWriteBytes = 1 << 10 })
	ctx := testCtx(t)
	outside := filepath.Join(filepath.Dir(e.root), "outside")
	writeTree(t, filepath.Dir(e.root), map[string]string{"outside": "host file"})
	writeTree(t, e.root, map[string]string{"escape": "->" + outside, "dir/": "", "rootonly/": ""})
	os.Lchown(filepath.Join(e.root, "escape"), UserUID, UserGID)

	got, err := e.client.WriteFile(ctx, "/a/b/new.txt", 0, false, strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != "/a/b/new.txt" || got.Size != 5 || got.Mode != 0o644 || got.UID != UserUID {
		t.Errorf("entry %+v", got)
	}
	// Overwrite, with a mode.
	if got, err = e.client.WriteFile(ctx, "/a/b/new.txt", 0o600, false, strings.NewReader("hi")); err != nil || got.Size != 2 || got.Mode != 0o600 {
		t.Fatalf("overwrite: %+v %v", got, err)
	}
	// A symlink at the path is replaced, not written through.
	if _, err := e.client.WriteFile(ctx, "/escape", 0, false, strings.NewReader("inside")); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(outside); string(data) != "host file" {
		t.Errorf("write went through the symlink: host file holds %q", data)
	}
	if fi, err := os.Lstat(filepath.Join(e.root, "escape")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("escape is not a regular file now: %v", err)
	}
	for _, tc := range []struct {
		name, path string
		sudo       bool
		body       io.Reader
		code       string
	}{
		{"a directory", "/dir", false, strings.NewReader("x"), "is_a_directory"},
		{"the root", "/", false, strings.NewReader("x"), "is_a_directory"},
		{"too large", "/big", false, bytes.NewReader(make([]byte, 2<<10)), "too_large"},
		{"root's dir as user", "/rootonly/x", false, strings.NewReader("x"), "permission_denied"},
		{"relative", "x", false, strings.NewReader("x"), "invalid_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.WriteFile(ctx, tc.path, 0, tc.sudo, tc.body)
			wantCode(t, err, tc.code)
		})
	}
	if got, err := e.client.WriteFile(ctx, "/rootonly/x", 0o4755, true, strings.NewReader("x")); err != nil || got.UID != 0 || got.Mode != 0o4755 {
		t.Errorf("sudo write: %+v %v", got, err)
	}
}
