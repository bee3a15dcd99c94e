package runc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestCopyLayer copies a hostile upper dir: links stay links, special
// files become what a layer may hold, and paddock's own files stay out.
func TestCopyLayer(t *testing.T) {
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
	must(unix.Setxattr(filepath.Join(src, "opaque"), opaqueXattr, []byte("y"), 0))
	must(os.MkdirAll(filepath.Join(src, "run/paddock"), 0o700))
	must(os.WriteFile(filepath.Join(src, "run/paddock/1.log"), []byte("log"), 0o600))
	must(os.MkdirAll(filepath.Join(src, ".paddock"), 0o755))
	must(os.WriteFile(filepath.Join(src, ".paddock/agent"), nil, 0o755))

	n, err := copyLayer(context.Background(), src, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len("#!/bin/sh\n")) {
		t.Errorf("copied %d bytes", n)
	}
	var st unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "home/user/bin/x"), &st))
	if st.Mode&0o7777 != 0o4755 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("x: mode %o owner %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
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
	if n, err := unix.Getxattr(filepath.Join(dst, "opaque"), opaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr: %q, %v", buf[:n], err)
	}
	for _, own := range []string{".paddock", "run/paddock"} {
		if _, err := os.Lstat(filepath.Join(dst, own)); err == nil {
			t.Errorf("%s was copied", own)
		}
	}

	if _, err := copyLayer(context.Background(), src, t.TempDir(), 3); !errors.Is(err, sandbox.ErrTooLarge) {
		t.Errorf("over the cap: %v, want ErrTooLarge", err)
	}
}
