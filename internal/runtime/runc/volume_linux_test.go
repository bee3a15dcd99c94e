package runc

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestCheckDest(t *testing.T) {
	reserved := append([]string{"/usr", "/etc/resolv.conf"}, reservedDests...)
	for _, tc := range []struct {
		dest string
		ok   bool
	}{
		{"/home/user/.cache", true},
		{"/opt/deps", true},
		{"/etc/app", true},
		{"relative", false},
		{"/", false},
		{"/home/user/../../proc", false},
		{"/home/user/", false},
		{"/proc", false},
		{"/proc/sys", false},
		{"/sys/fs", false},
		{"/dev/shm", false},
		{"/tmp/x", false},
		{"/.paddock", false},
		{"/run", false}, // above the agent's state dir
		{"/usr/lib", false},
		{"/etc", false}, // above a bound file
		{"/other", false},
		{"/other/sub", false},
	} {
		err := checkDest(tc.dest, reserved, []string{"/other"})
		if (err == nil) != tc.ok {
			t.Errorf("checkDest(%q) = %v, want ok=%v", tc.dest, err, tc.ok)
		}
		if err != nil && !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("checkDest(%q) = %v, want ErrInvalid", tc.dest, err)
		}
	}
}

func TestMkMountpoint(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "home/user"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(root, "home/user"), 1000, 1000); err != nil {
		t.Skip("cannot chown (not root):", err)
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "home/user/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/home", filepath.Join(root, "inside")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := mkMountpoint(root, "/home/user/.cache/pip"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "home/user/.cache"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || !fi.IsDir() {
		t.Errorf("made %v owned by %d, want a dir owned by its parent's owner", fi.Mode(), st.Uid)
	}
	for _, dest := range []string{"/home/user/link/x", "/home/user/link", "/inside/user", "/file/x"} {
		err := mkMountpoint(root, dest)
		if !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("mkMountpoint(%s) = %v, want a refusal", dest, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("a symlink was followed: %v", ents)
	}
}
