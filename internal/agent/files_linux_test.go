//go:build linux

package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

type tarEntry struct {
	hdr  tar.Header
	body []byte
}

func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteTarRoundTrip(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	data := makeTar(t,
		tarEntry{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mtime}},
		tarEntry{hdr: tar.Header{Name: "bin/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: mtime}, body: []byte("#!/bin/sh\necho hi\n")},
		tarEntry{hdr: tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: mtime}, body: []byte("x")},
		tarEntry{hdr: tar.Header{Name: "deep/a/b/c.txt", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mtime}, body: []byte("c")},
		tarEntry{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "bin/run.sh"}},
		tarEntry{hdr: tar.Header{Name: "deep/up", Typeflag: tar.TypeSymlink, Linkname: "../bin"}},
		tarEntry{hdr: tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "bin/run.sh"}},
	)
	res, err := e.client.WriteTar(ctx, "/work/app", false, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 6 || res.Bytes != 20 {
		t.Errorf("result %+v", res)
	}
	base := filepath.Join(e.root, "work/app")
	for _, tc := range []struct {
		name string
		mode os.FileMode
	}{{"bin", os.ModeDir | 0o750}, {"bin/run.sh", 0o755}, {"suid", 0o755}, {"deep/a/b/c.txt", 0o600}} {
		fi, err := os.Lstat(filepath.Join(base, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != tc.mode || st.Uid != UserUID || st.Gid != UserGID || !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mode %v uid %d gid %d mtime %v", tc.name, fi.Mode(), st.Uid, st.Gid, fi.ModTime())
		}
	}
	if target, _ := os.Readlink(filepath.Join(base, "link")); target != "bin/run.sh" {
		t.Errorf("symlink target %q", target)
	}

	rc, info, err := e.client.ReadFile(ctx, "/work/app/bin/run.sh", false)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "#!/bin/sh\necho hi\n" || info.Mode != 0o755 || info.Size != int64(len(got)) {
		t.Errorf("read back %q %+v", got, info)
	}

	// With sudo, special bits survive and root owns the files.
	gz := gzipped(t, makeTar(t, tarEntry{hdr: tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755}, body: []byte("y")}))
	if _, err := e.client.WriteTar(ctx, "/work/app", true, bytes.NewReader(gz)); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(base, "suid"))
	if fi.Mode() != os.ModeSetuid|0o755 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("sudo gzip write: mode %v", fi.Mode())
	}
	_, info, err = e.client.ReadFile(ctx, "/work/app/suid", false)
	if err != nil || info.Mode != 0o4755 {
		t.Errorf("read mode %o %v", info.Mode, err)
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	n, x uint64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	if uint64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	p.n -= uint64(len(b))
	return len(b), nil
}

func TestWriteTarLargeFile(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	const size = 100 << 20
	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		tw := tar.NewWriter(pw)
		if err := tw.WriteHeader(&tar.Header{Name: "big.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(io.MultiWriter(tw, want), &patternReader{n: size, x: 1}); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(tw.Close())
	}()
	res, err := e.client.WriteTar(ctx, "/big", false, pr)
	if err != nil || res.Bytes != size {
		t.Fatalf("write: %+v %v", res, err)
	}
	rc, info, err := e.client.ReadFile(ctx, "/big/big.bin", false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	if n, err := io.Copy(got, rc); err != nil || n != size || info.Size != size {
		t.Fatalf("read %d bytes (%d announced): %v", n, info.Size, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("100 MB file differs after the round trip")
	}
}

func TestWriteTarTooLarge(t *testing.T) {
	const max = 64 << 10
	e := startServer(t, func(c *ServerConfig) { c.MaxWriteBytes = max })
	tests := []struct {
		name string
		data []byte
	}{
		{"gzip", gzipped(t, makeTar(t, tarEntry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: make([]byte, 128<<10)}))},
		{"plain", makeTar(t, tarEntry{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: make([]byte, 128<<10)})},
		// A few blocks on the wire that expand to 1 GiB of zeros.
		{"sparse", tartest.PAXSparse(t, "f", 1<<30)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := fmt.Sprintf("/x%d", i)
			_, err := e.client.WriteTar(testCtx(t), dir, false, bytes.NewReader(tc.data))
			if !errors.Is(err, sandbox.ErrTooLarge) || sandbox.CodeOf(err) != "too_large" {
				t.Fatalf("got %v, want too_large", err)
			}
			// What was written before the cap stays within it, and is the
			// user's: no root-owned remnant in the user's tree.
			fi, err := os.Lstat(filepath.Join(e.root, dir, "f"))
			if errors.Is(err, fs.ErrNotExist) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); fi.Size() > max || st.Uid != UserUID || st.Gid != UserGID {
				t.Errorf("left %d bytes owned by %d:%d", fi.Size(), st.Uid, st.Gid)
			}
		})
	}
}

func TestWriteTarHostile(t *testing.T) {
	e := startServer(t, nil)
	// A sibling of the target dir inside the agent's root stands in for the
	// rest of the sandbox: nothing may appear there.
	outside := filepath.Join(e.root, "etc")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("pwned")}
	}
	tests := []struct {
		name    string
		entries []tarEntry
		code    string
	}{
		{"dotdot", []tarEntry{reg("../x")}, "invalid_path"},
		{"nested dotdot", []tarEntry{reg("a/../../x")}, "invalid_path"},
		{"absolute", []tarEntry{reg("/abs")}, "invalid_path"},
		{"name past PATH_MAX", []tarEntry{reg(strings.Repeat(strings.Repeat("n", 250)+"/", 20) + "f")}, "invalid_path"},
		{"absolute symlink then write through it", []tarEntry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}},
			reg("link/passwd"),
		}, "invalid_path"},
		{"relative escaping symlink", []tarEntry{{hdr: tar.Header{Name: "a/up", Typeflag: tar.TypeSymlink, Linkname: "../../.."}}}, "invalid_path"},
		{"symlink climbing through a link", []tarEntry{
			{hdr: tar.Header{Name: "b", Typeflag: tar.TypeSymlink, Linkname: "."}},
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "b/.."}},
		}, "invalid_path"},
		{"hardlink outside", []tarEntry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}}, "invalid_path"},
		{"hardlink dotdot", []tarEntry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../etc/passwd"}}}, "invalid_path"},
		{"hardlink not extracted", []tarEntry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "later"}}}, "invalid_path"},
		{"char device", []tarEntry{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}}}, "unsupported_entry"},
		{"fifo", []tarEntry{{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o644}}}, "unsupported_entry"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := "/dst/" + string(rune('a'+i))
			_, err := e.client.WriteTar(testCtx(t), dir, false, bytes.NewReader(makeTar(t, tc.entries...)))
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != tc.code {
				t.Fatalf("got %v (code %q), want %s", err, sandbox.CodeOf(err), tc.code)
			}
		})
	}
	// A pre-existing symlink in the target dir that leads out is refused too.
	pre := filepath.Join(e.root, "dst/pre")
	os.MkdirAll(pre, 0o755)
	os.Symlink("../../etc", filepath.Join(pre, "out"))
	_, err := e.client.WriteTar(testCtx(t), "/dst/pre", false, bytes.NewReader(makeTar(t, reg("out/passwd"))))
	if sandbox.CodeOf(err) != "invalid_path" {
		t.Errorf("write through existing escaping symlink: %v", err)
	}

	ents, _ := os.ReadDir(outside)
	data, _ := os.ReadFile(filepath.Join(outside, "passwd"))
	if len(ents) != 1 || string(data) != "root:x:0:0\n" {
		t.Errorf("outside the target dir changed: %d entries, passwd %q", len(ents), data)
	}
	for _, p := range []string{"x", "abs", "dst/x"} {
		if _, err := os.Lstat(filepath.Join(e.root, p)); err == nil {
			t.Errorf("%s was created", p)
		}
	}
}

// TestReadFileMagicLink reads through /proc magic links with the agent
// rooted at "/", as it is in a sandbox: they are refused.
func TestReadFileMagicLink(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.Root = "/" })
	for _, p := range []string{"/proc/self/root/etc/hostname", "/proc/self/cwd/x"} {
		_, _, err := e.client.ReadFile(testCtx(t), p, false)
		if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_path" {
			t.Errorf("read %s: got %v (code %q), want invalid_path", p, err, sandbox.CodeOf(err))
		}
	}
}

func TestReadFileErrors(t *testing.T) {
	e := startServer(t, nil)
	os.MkdirAll(filepath.Join(e.root, "dir"), 0o755)
	os.WriteFile(filepath.Join(e.root, "empty"), nil, 0o640)
	os.Symlink("/proc/self/root/etc/hostname", filepath.Join(e.root, "magic"))
	os.WriteFile(filepath.Join(e.root, "target"), []byte("inside"), 0o644)
	os.Symlink("/target", filepath.Join(e.root, "abslink"))
	os.Symlink("../../../../target", filepath.Join(e.root, "dir", "uplink"))
	tests := []struct {
		path string
		kind error
		code string
	}{
		{"/dir/../empty", sandbox.ErrInvalid, "invalid_path"},
		{"relative", sandbox.ErrInvalid, "invalid_path"},
		{"", sandbox.ErrInvalid, "invalid_path"},
		{"/missing", sandbox.ErrNotFound, "file_not_found"},
		{"/dir", sandbox.ErrInvalid, "is_a_directory"},
		// Resolved inside the root, where there is no /proc: the link
		// cannot reach the host's /proc/self/root.
		{"/magic", sandbox.ErrNotFound, "file_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			_, _, err := e.client.ReadFile(testCtx(t), tc.path, false)
			if !errors.Is(err, tc.kind) || sandbox.CodeOf(err) != tc.code {
				t.Fatalf("got %v (code %q), want %s", err, sandbox.CodeOf(err), tc.code)
			}
		})
	}
	// Absolute and climbing symlinks are followed, clamped to the root.
	for _, p := range []string{"/abslink", "/dir/uplink"} {
		rc, _, err := e.client.ReadFile(testCtx(t), p, false)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != "inside" {
			t.Errorf("read %s = %q, want the file inside the root", p, got)
		}
	}
	rc, info, err := e.client.ReadFile(testCtx(t), "/empty", true) // root's 0640
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if info.Mode != 0o640 {
		t.Errorf("empty file mode %o", info.Mode)
	}
}

func TestMkdir(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	os.WriteFile(filepath.Join(e.root, "file"), nil, 0o644)
	tests := []struct {
		name string
		req  MkdirRequest
		code string
		mode os.FileMode
		uid  uint32
	}{
		{name: "nested", req: MkdirRequest{Path: "/a/b/c"}, mode: 0o755, uid: UserUID},
		{name: "existing", req: MkdirRequest{Path: "/a/b"}, mode: 0o755, uid: UserUID},
		{name: "mode and sudo", req: MkdirRequest{Path: "/s/t", Mode: 0o700, Sudo: true}, mode: 0o700, uid: 0},
		{name: "under a file", req: MkdirRequest{Path: "/file/x"}, code: "not_a_directory"},
		{name: "is a file", req: MkdirRequest{Path: "/file"}, code: "not_a_directory"},
		{name: "relative", req: MkdirRequest{Path: "a/b"}, code: "invalid_path"},
		{name: "dotdot", req: MkdirRequest{Path: "/a/../b"}, code: "invalid_path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.client.Mkdir(ctx, tc.req)
			if tc.code != "" {
				if sandbox.CodeOf(err) != tc.code {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(e.root, tc.req.Path))
			if err != nil || fi.Mode().Perm() != tc.mode || fi.Sys().(*syscall.Stat_t).Uid != tc.uid {
				t.Errorf("stat: %v %v", fi.Mode(), err)
			}
		})
	}
}
