package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// deepTree makes depth nested directories below dir through descriptors
// (the path outgrows PATH_MAX), with a file, a symlink out of the tree and
// a directory with many entries on the way.
func deepTree(t *testing.T, dir string, depth int, outside string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range depth {
		if i%500 == 0 {
			if err := unix.Symlinkat(outside, fd, "escape"); err != nil {
				t.Fatal(err)
			}
			f, err := unix.Openat(fd, "file", unix.O_CREAT|unix.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(f)
		}
		if err := unix.Mkdirat(fd, "d", 0o700); err != nil {
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
}

func TestRemove(t *testing.T) {
	outside := t.TempDir()
	canary := filepath.Join(outside, "canary")
	if err := os.WriteFile(canary, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		build func(t *testing.T, root string)
	}{
		{"deep", func(t *testing.T, root string) { deepTree(t, root, 3000, outside) }},
		{"wide", func(t *testing.T, root string) {
			for i := range 2000 {
				p := filepath.Join(root, "w", strings.Repeat("n", 1+i%50)+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, nil, 0o600); err != nil && !os.IsExist(err) {
					t.Fatal(err)
				}
			}
		}},
		{"unreadable dirs and a symlink to outside", func(t *testing.T, root string) {
			if err := os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(root, "a/link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(root, "a/b"), 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if os.Geteuid() != 0 && strings.Contains(tt.name, "unreadable") {
				t.Skip("needs root to remove a mode-000 directory's content")
			}
			root := filepath.Join(t.TempDir(), "tree")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			tt.build(t, root)
			if err := Remove(root); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(root); !os.IsNotExist(err) {
				t.Fatalf("%s still there: %v", root, err)
			}
			if _, err := os.Stat(canary); err != nil {
				t.Fatalf("a symlink was followed out of the tree: %v", err)
			}
		})
	}
	t.Run("missing and a plain file", func(t *testing.T) {
		if err := Remove(filepath.Join(t.TempDir(), "nope")); err != nil {
			t.Errorf("missing: %v", err)
		}
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o600)
		if err := Remove(f); err != nil {
			t.Errorf("file: %v", err)
		}
	})
}

// TestRemoveDeepWithFewDescriptors: a tree far deeper than the descriptors
// the process may open is removed, where os.RemoveAll runs out of them.
func TestRemoveDeepWithFewDescriptors(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	const depth = 4000
	deepTree(t, root, depth, t.TempDir())
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc/self/fd")
	low := syscall.Rlimit{Cur: uint64(len(entries) + 3*maxOpen), Max: old.Max}
	if low.Cur >= depth {
		t.Skipf("%d descriptors open already", len(entries))
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	err := Remove(root)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("Remove with %d descriptors: %v", low.Cur, err)
	}
	if _, err := os.Lstat(root); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", root, err)
	}
}
