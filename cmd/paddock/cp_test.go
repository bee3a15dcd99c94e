package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
	"github.com/paddock-dev/paddock/sdk"
)

func tarOf(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := []byte("pwned")
		if h.Typeflag == tar.TypeReg {
			if h.Size == 0 {
				h.Size = int64(len(body))
			}
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body[:h.Size]) //nolint:errcheck
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTree returns every path below dir, relative, with '/'.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck
		if err != nil {
			t.Fatal(err)
		}
		if rel, _ := filepath.Rel(dir, p); rel != "." {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out
}

func TestExtractTarHostile(t *testing.T) {
	reg := func(name string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}
	}
	link := func(name, target string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
	}
	tests := []struct {
		name string
		hdrs []tar.Header
	}{
		{"dotdot", []tar.Header{reg("../x")}},
		{"nested dotdot", []tar.Header{reg("a/../../x")}},
		{"dotdot directory", []tar.Header{{Name: "../d/", Typeflag: tar.TypeDir, Mode: 0o755}}},
		{"absolute", []tar.Header{reg("/tmp/abs")}},
		{"backslash", []tar.Header{reg(`..\x`)}},
		{"absolute symlink", []tar.Header{link("l", "/etc")}},
		{"escaping symlink", []tar.Header{link("a/l", "../../outside")}},
		{"symlink climbing through a link", []tar.Header{link("s1", "."), link("s2", "s1/..")}},
		{"symlink then write through it", []tar.Header{link("l", "/outside"), reg("l/x")}},
		{"inner symlink then write through it", []tar.Header{{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, link("l", "d"), reg("l/x")}},
		{"symlink then directory through it", []tar.Header{link("l", "d"), {Name: "l/sub/", Typeflag: tar.TypeDir, Mode: 0o755}}},
		{"hardlink", []tar.Header{reg("f"), {Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}}},
		{"hardlink outside", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}},
		{"char device", []tar.Header{{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}}},
		{"block device", []tar.Header{{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o660}}},
		{"fifo", []tar.Header{{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o644}}},
		{"file named dot", []tar.Header{reg(".")}},
		{"name past PATH_MAX", []tar.Header{reg(strings.Repeat(strings.Repeat("n", 250)+"/", 20) + "f")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dst := filepath.Join(base, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := extractTar(bytes.NewReader(tarOf(t, tc.hdrs...)), dst)
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "unsafe_entry" {
				t.Fatalf("got %v, want unsafe_entry", err)
			}
			// Nothing outside dst; inside, no file came through a link.
			if got := listTree(t, base); slices.ContainsFunc(got, func(p string) bool {
				return p != "dst" && !bytes.HasPrefix([]byte(p), []byte("dst/"))
			}) {
				t.Errorf("written outside dst: %v", got)
			}
			if _, err := os.Stat(filepath.Join(dst, "d", "x")); err == nil {
				t.Error("a write went through a symlink")
			}
		})
	}
}

func TestExtractTarExistingSymlink(t *testing.T) {
	// dst already holds a link out (the user's, or left by an earlier
	// copy): an archive must not write through it, nor through a file
	// link it replaces.
	base := t.TempDir()
	dst, outside := filepath.Join(base, "dst"), filepath.Join(base, "outside")
	os.Mkdir(dst, 0o755)
	os.Mkdir(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "f"), []byte("keep"), 0o644)
	os.Symlink(outside, filepath.Join(dst, "out"))
	os.Symlink(filepath.Join(outside, "f"), filepath.Join(dst, "f"))

	_, err := extractTar(bytes.NewReader(tarOf(t, tar.Header{Name: "out/f", Typeflag: tar.TypeReg, Mode: 0o644})), dst)
	if sandbox.CodeOf(err) != "unsafe_entry" {
		t.Errorf("write through an existing link: %v", err)
	}
	// A file entry replaces a link at its name instead of writing through it.
	if _, err := extractTar(bytes.NewReader(tarOf(t, tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644})), dst); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(outside, "f")); string(data) != "keep" {
		t.Errorf("outside file now %q", data)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "f")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("dst/f: %v %v", fi, err)
	}
}

func TestExtractTarTree(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "dst")
	os.Mkdir(dst, 0o755)
	mtime := time.Date(2022, 3, 4, 5, 6, 7, 0, time.UTC)
	data := tarOf(t,
		tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "ro/", Typeflag: tar.TypeDir, Mode: 0o555, ModTime: mtime},
		tar.Header{Name: "ro/inner.txt", Typeflag: tar.TypeReg, Mode: 0o444, ModTime: mtime},
		tar.Header{Name: "bin/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: mtime},
		tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, ModTime: mtime},
		tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "bin/run.sh"},
		tar.Header{Name: "bin/up", Typeflag: tar.TypeSymlink, Linkname: "../ro"},
		tar.Header{Name: "dangling", Typeflag: tar.TypeSymlink, Linkname: "later/x"},
	)
	res, err := extractTar(bytes.NewReader(data), dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "ro"), 0o755) }) // let TempDir clean up
	if res.files != 6 || res.bytes != 15 {
		t.Errorf("result %+v", res)
	}
	tests := []struct {
		name string
		mode fs.FileMode
	}{
		{"ro", fs.ModeDir | 0o555},
		{"ro/inner.txt", 0o444},
		{"bin/run.sh", 0o755},
		{"suid", 0o755}, // never setuid on the host
		{"link", fs.ModeSymlink},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fi, err := os.Lstat(filepath.Join(dst, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if tc.mode == fs.ModeSymlink {
				if fi.Mode()&fs.ModeSymlink == 0 {
					t.Errorf("mode %v, want a symlink", fi.Mode())
				}
				return
			}
			if fi.Mode() != tc.mode || !fi.ModTime().Equal(mtime) {
				t.Errorf("mode %v mtime %v", fi.Mode(), fi.ModTime())
			}
		})
	}
	if target, _ := os.Readlink(filepath.Join(dst, "bin/up")); target != "../ro" {
		t.Errorf("bin/up -> %q", target)
	}
}

// TestExtractTarSparse: a sparse entry is refused, not expanded into its
// declared size of zeros on the host.
func TestExtractTarSparse(t *testing.T) {
	dst := t.TempDir()
	_, err := extractTar(bytes.NewReader(tartest.PAXSparse(t, "s", 1<<30)), dst)
	if sandbox.CodeOf(err) != "unsafe_entry" {
		t.Fatalf("got %v, want unsafe_entry", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "s")); err == nil {
		t.Error("the sparse file was written")
	}
}

// TestExtractTarDirTwice: a directory named twice gets its last entry's
// mode, as every later entry wins.
func TestExtractTarDirTwice(t *testing.T) {
	dst := t.TempDir()
	data := tarOf(t,
		tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o700},
	)
	if _, err := extractTar(bytes.NewReader(data), dst); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "d")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("d: %v, %v; want mode 0700", fi.Mode(), err)
	}
}

// fakeAPI answers the two read endpoints the way the server does: files
// as bytes or is_a_directory, directories as an archive.
func fakeAPI(t *testing.T, files map[string]string, archives map[string][]byte) *sdk.Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/sandboxes/{id}/files", func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		if _, ok := archives[p]; ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "is_a_directory", "message": p + " is a directory"}}) //nolint:errcheck
			return
		}
		w.Header().Set("X-Paddock-File-Mode", "640")
		io.WriteString(w, files[p]) //nolint:errcheck
	})
	mux.HandleFunc("GET /api/v1/sandboxes/{id}/archive", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Write(archives[r.URL.Query().Get("path")]) //nolint:errcheck
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return sdk.New(hs.URL, "tok")
}

func TestCopyOut(t *testing.T) {
	tree := tarOf(t,
		tar.Header{Name: "a.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		tar.Header{Name: "sub/b.txt", Typeflag: tar.TypeReg, Mode: 0o600, Size: 2},
	)
	hostile := tarOf(t, tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644})
	c := fakeAPI(t, map[string]string{"/w/f.txt": "file"}, map[string][]byte{"/w": tree, "/evil": hostile})
	ctx := context.Background()

	base := t.TempDir()
	tests := []struct {
		name, src, dst string
		want           []string // paths below base afterwards (cumulative)
		code           string
	}{
		{name: "file to a new name", src: "sb-1:/w/f.txt", dst: "g.txt", want: []string{"g.txt"}},
		{name: "directory into a new dir", src: "sb-1:/w", dst: "out", want: []string{"g.txt", "out", "out/a.txt", "out/sub", "out/sub/b.txt"}},
		{name: "file into an existing dir", src: "sb-1:/w/f.txt", dst: "out", want: []string{"g.txt", "out", "out/a.txt", "out/f.txt", "out/sub", "out/sub/b.txt"}},
		{name: "hostile archive", src: "sb-1:/evil", dst: "evil", code: "unsafe_entry",
			want: []string{"evil", "g.txt", "out", "out/a.txt", "out/f.txt", "out/sub", "out/sub/b.txt"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := copyCmd(ctx, c, tc.src, filepath.Join(base, tc.dst), &stdout, &stderr)
			if tc.code != "" {
				if sandbox.CodeOf(err) != tc.code {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := listTree(t, base); !slices.Equal(got, tc.want) {
				t.Errorf("tree = %v, want %v", got, tc.want)
			}
		})
	}
	// "-" streams the archive itself.
	var stdout bytes.Buffer
	if err := copyCmd(ctx, c, "sb-1:/w", "-", &stdout, io.Discard); err != nil || !bytes.Equal(stdout.Bytes(), tree) {
		t.Errorf("tar to stdout: %d bytes, %v", stdout.Len(), err)
	}
}

func TestTarLocalNames(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks")
	}
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "b.txt"), []byte("b"), 0o644)
	fileInfo, _ := os.Stat(filepath.Join(src, "a.txt"))
	dirInfo, _ := os.Stat(src)
	tests := []struct {
		name  string
		local string
		fi    fs.FileInfo
		entry string
		want  []string
	}{
		// A directory's contents, not the directory: cp -r src/. dst.
		{"directory", src, dirInfo, ".", []string{"a.txt", "sub/", "sub/b.txt"}},
		{"file", filepath.Join(src, "a.txt"), fileInfo, "g.txt", []string{"g.txt"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tarLocal(&buf, tc.local, tc.entry, tc.fi); err != nil {
				t.Fatal(err)
			}
			var got []string
			tr := tar.NewReader(&buf)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, h.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("entries %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPortsFlag(t *testing.T) {
	var ports []api.PortSpec
	private, public := portsFlag{ports: &ports}, portsFlag{ports: &ports, public: true}
	for _, v := range []string{"3000", "8080"} {
		if err := private.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := public.Set("3001"); err != nil {
		t.Fatal(err)
	}
	want := []api.PortSpec{{Port: 3000}, {Port: 8080}, {Port: 3001, Public: true}}
	if !slices.Equal(ports, want) {
		t.Errorf("ports %v, want %v", ports, want)
	}
	for _, bad := range []string{"0", "65536", "http", ""} {
		if err := private.Set(bad); err == nil {
			t.Errorf("port %q accepted", bad)
		}
	}
}
