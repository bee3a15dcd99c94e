package agent

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwnIfEmpty: a volume's root goes to the user while it holds nothing
// but lost+found; one with content keeps its owner; a symlink is not
// followed.
func TestOwnIfEmpty(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	owner := func(t *testing.T, p string) uint32 {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	for _, tc := range []struct {
		name    string
		entries []string
		want    uint32
	}{
		{"empty", nil, 1000},
		{"new ext4", []string{"lost+found"}, 1000},
		{"in use", []string{"lost+found", "data"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "v")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, e := range tc.entries {
				if err := os.Mkdir(filepath.Join(dir, e), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := ownIfEmpty(dir, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			if got := owner(t, dir); got != tc.want {
				t.Fatalf("owner %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("symlink", func(t *testing.T) {
		base := t.TempDir()
		target := filepath.Join(base, "target")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(base, "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := ownIfEmpty(link, 1000, 1000); err == nil {
			t.Fatal("followed a symlink")
		}
		if got := owner(t, target); got != 0 {
			t.Fatalf("the symlink's target was given to %d", got)
		}
	})
}
