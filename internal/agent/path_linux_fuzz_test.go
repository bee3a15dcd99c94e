//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// FuzzOpenInRoot checks the agent's path rules: relPath takes exactly the
// absolute, clean paths (anything else is invalid_path), and a read opened
// through openInRoot lands inside the root whatever symlinks lie on the
// way, including one the input makes (fz -> target).
func FuzzOpenInRoot(f *testing.F) {
	base := f.TempDir()
	root := filepath.Join(base, "root")
	tartest.Watched(f, filepath.Join(base, "outside"))
	tartest.Watched(f, filepath.Join(root, "etc"))
	for name, target := range map[string]string{
		"abs": "/etc", "up": "../../..", "host": filepath.Join(base, "outside"), "self": ".", "loop": "loop",
		"proc": "/proc/self/root", "dotdot": "etc/../..",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			f.Fatal(err)
		}
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	s := &Server{root: r}
	for _, p := range []string{"/", "/etc/passwd", "/abs/passwd", "/up/etc/passwd", "/host/passwd", "/self/self/etc", "/loop", "/proc/1/environ",
		"/dotdot/outside/passwd", "/fz", "/fz/passwd", "etc", "/etc/", "/etc/../..", "//etc", "/a\x00b", ""} {
		for _, target := range []string{"..", "/", "../outside", filepath.Join(base, "outside"), "etc", "abs/..", "up"} {
			f.Add(p, target)
		}
	}
	f.Fuzz(func(t *testing.T, p, target string) {
		name, err := relPath(p)
		if err != nil {
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_path" {
				t.Fatalf("relPath(%q) = %v, want invalid_path", p, err)
			}
			if filepath.IsAbs(p) && filepath.Clean(p) == p && !strings.ContainsRune(p, 0) {
				t.Fatalf("relPath refused the absolute, clean path %q", p)
			}
			return
		}
		if !filepath.IsLocal(name) && name != "." || (name == "." && p != "/") || (name != "." && "/"+name != p) {
			t.Fatalf("relPath(%q) = %q", p, name)
		}
		fz := filepath.Join(root, "fz")
		if target != "" && !strings.ContainsRune(target, 0) {
			if err := os.Symlink(target, fz); errors.Is(err, syscall.ENAMETOOLONG) {
				return // a link target past PATH_MAX cannot be made
			} else if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(fz)
		}
		file, err := s.openInRoot(name)
		if err != nil {
			return
		}
		defer file.Close()
		real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", file.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if real != root && !strings.HasPrefix(real, root+"/") {
			t.Fatalf("openInRoot(%q) with fz -> %q opened %s, outside the root %s", name, target, real, root)
		}
	})
}
