package hostimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the host image chowns /home/user to 1000: needs root")
	}
	dir := t.TempDir()
	r, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	lower := r.Lower

	t.Run("no secrets", func(t *testing.T) {
		for _, p := range []string{"etc/shadow", "etc/gshadow", "etc/ssh", "etc/machine-id", "etc/sudoers", "etc/ssl/private"} {
			if _, err := os.Lstat(filepath.Join(lower, p)); err == nil {
				t.Errorf("%s is in the image", p)
			}
		}
		// Nothing in the image may be a symlink into a host path other than
		// the paths the sandbox itself has (/usr, /etc, /proc).
		err := filepath.Walk(lower, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.Mode()&os.ModeSymlink == 0 {
				return err
			}
			target, _ := os.Readlink(p)
			if filepath.IsAbs(target) && !strings.HasPrefix(target, "/usr/") && !strings.HasPrefix(target, "/etc/") && !strings.HasPrefix(target, "/bin/") {
				t.Errorf("%s -> %s leads outside the image", p, target)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("users", func(t *testing.T) {
		passwd, err := os.ReadFile(filepath.Join(lower, "etc/passwd"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(passwd), "user:x:1000:1000:user:/home/user:") {
			t.Errorf("passwd lacks user 1000:\n%s", passwd)
		}
		fi, err := os.Stat(filepath.Join(lower, "home/user"))
		if err != nil {
			t.Fatal(err)
		}
		if st := statOwner(fi); st != [2]uint32{1000, 1000} {
			t.Errorf("home/user owned by %v", st)
		}
		if fi, err := os.Stat(filepath.Join(lower, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
			t.Errorf("tmp mode %v, %v", fi.Mode(), err)
		}
	})
	t.Run("awk resolvable", func(t *testing.T) {
		// /usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/<impl>: the middle
		// link must exist in the image, and its target on the bound /usr.
		target, err := os.Readlink(filepath.Join(lower, "etc/alternatives/awk"))
		if err != nil {
			t.Skipf("host has no awk alternative: %v", err)
		}
		if !strings.HasPrefix(target, "/usr/") {
			t.Fatalf("awk alternative points at %s", target)
		}
		if _, err := os.Stat(target); err != nil {
			t.Fatalf("awk target: %v", err)
		}
		found := false
		for _, b := range r.ReadOnlyBinds {
			if b.Target == "/usr" {
				found = true
			}
		}
		if !found {
			t.Errorf("no /usr bind in %+v", r.ReadOnlyBinds)
		}
	})
	t.Run("stable", func(t *testing.T) {
		// A second build of the same host content gets the same name.
		hostMu.Lock()
		delete(hostCache, filepath.Clean(dir))
		hostMu.Unlock()
		r2, err := Build(dir)
		if err != nil {
			t.Fatal(err)
		}
		if r2.Lower != lower {
			t.Errorf("rebuild moved the lower dir: %s != %s", r2.Lower, lower)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "images"))
		if len(entries) != 1 {
			t.Errorf("images dir holds %d entries, want 1", len(entries))
		}
	})
}
