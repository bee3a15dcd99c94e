package layer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestCopyLayer copies a hostile upper dir: links stay links, special
// files become what a layer may hold, and paddock's own files stay out.
func TestCopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners, whiteouts and trusted xattrs")
	}
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "home/user/bin"), 0o755))
	must(os.WriteFile(filepath.Join(src, "home/user/bin/x"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(filepath.Join(src, "home/user/bin/x"), 1000, 1000))
	must(unix.Chmod(filepath.Join(src, "home/user/bin/x"), 0o4755))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "home/user/evil")))
	must(os.Symlink("/", filepath.Join(src, "home/user/root")))
	must(unix.Mkfifo(filepath.Join(src, "home/user/fifo"), 0o644))
	must(unix.Mknod(filepath.Join(src, "home/user/gone"), unix.S_IFCHR, 0))
	must(os.Mkdir(filepath.Join(src, "opaque"), 0o700))
	must(unix.Setxattr(filepath.Join(src, "opaque"), OpaqueXattr, []byte("y"), 0))
	must(os.MkdirAll(filepath.Join(src, "run/paddock"), 0o700))
	must(os.WriteFile(filepath.Join(src, "run/paddock/1.log"), []byte("log"), 0o600))
	must(os.MkdirAll(filepath.Join(src, ".paddock"), 0o755))
	must(os.WriteFile(filepath.Join(src, ".paddock/agent"), nil, 0o755))

	n, err := Copy(context.Background(), src, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len("#!/bin/sh\n")) {
		t.Errorf("copied %d bytes", n)
	}
	var st unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "home/user/bin/x"), &st))
	// The setuid bit stays out of a host directory where a host user
	// could run a tenant's setuid-root file.
	if st.Mode&0o7777 != 0o755 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("x: mode %o owner %d:%d, want 755 1000:1000", st.Mode&0o7777, st.Uid, st.Gid)
	}
	for name, want := range map[string]string{"home/user/evil": "/etc/passwd", "home/user/root": "/"} {
		if got, err := os.Readlink(filepath.Join(dst, name)); err != nil || got != want {
			t.Errorf("%s -> %q, %v; want a symlink to %q", name, got, err, want)
		}
	}
	must(unix.Lstat(filepath.Join(dst, "home/user/fifo"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo: mode %o", st.Mode)
	}
	must(unix.Lstat(filepath.Join(dst, "home/user/gone"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 4)
	if n, err := unix.Getxattr(filepath.Join(dst, "opaque"), OpaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr: %q, %v", buf[:n], err)
	}
	for _, own := range []string{".paddock", "run/paddock"} {
		if _, err := os.Lstat(filepath.Join(dst, own)); err == nil {
			t.Errorf("%s was copied", own)
		}
	}

	if _, err := Copy(context.Background(), src, t.TempDir(), 3); !errors.Is(err, sandbox.ErrTooLarge) {
		t.Errorf("over the cap: %v, want ErrTooLarge", err)
	}
}

// TestCopyLayerSparse: holes stay holes, and only data counts against the
// cap, so a sparse file costs the layer what it costs the sandbox.
func TestCopySparse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners")
	}
	src, dst := t.TempDir(), t.TempDir()
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 30
	if _, err := f.WriteAt([]byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("middle"), size/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n, err := Copy(context.Background(), src, dst, 1<<20) // a 1 MiB cap: the 1 GiB file fits
	if err != nil {
		t.Fatal(err)
	}
	if n > 64<<10 {
		t.Errorf("counted %d bytes for 10 bytes of data", n)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Errorf("copy: size %d, %d bytes allocated; want %d and sparse", st.Size, st.Blocks*512, size)
	}
	got := make([]byte, 6)
	g, err := os.Open(filepath.Join(dst, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(got, size/2); err != nil || string(got) != "middle" {
		t.Errorf("data at the middle: %q, %v", got, err)
	}
}

// TestCopyLayerDeep: a tree deeper than the copy's bound fails the snapshot
// cleanly (too large), holding a bounded number of descriptors.
func TestCopyDeep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners")
	}
	src := t.TempDir()
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range maxCopyDepth + 10 {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	before, _ := os.ReadDir("/proc/self/fd")
	dst := t.TempDir()
	_, err = Copy(context.Background(), src, dst, 0)
	if !errors.Is(err, sandbox.ErrTooLarge) {
		t.Fatalf("copy of a %d-deep tree: %v, want ErrTooLarge", maxCopyDepth+10, err)
	}
	if after, _ := os.ReadDir("/proc/self/fd"); len(after) > len(before)+1 {
		t.Errorf("%d descriptors open after the copy, %d before", len(after), len(before))
	}
	if err := fstree.Remove(src); err != nil { // t.TempDir's RemoveAll would manage this depth, but not every tree
		t.Fatal(err)
	}
	if err := fstree.Remove(dst); err != nil {
		t.Fatal(err)
	}
}
