package leakcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestLeaks(t *testing.T) {
	scope := Scope{Children: true, Dirs: []string{t.TempDir()}}
	before := Snapshot(scope)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	if leaks := before.Leaks(Snapshot(scope)); len(leaks) != 1 {
		t.Errorf("a running child: leaks %v, want one", leaks)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if leaks := before.Leaks(Snapshot(scope)); len(leaks) != 0 {
		t.Errorf("after kill: leaks %v", leaks)
	}
}

func TestParse(t *testing.T) {
	for name, tc := range map[string]struct {
		in, id string
		ok     bool
	}{
		"v1":   {"12:memory:/paddock/abc\n1:name=systemd:/", "abc", true},
		"v2":   {"0::/paddock/x-1/sub", "x-1", true},
		"none": {"0::/user.slice", "", false},
	} {
		t.Run(name, func(t *testing.T) {
			id, ok := paddockCgroup([]byte(tc.in))
			if id != tc.id || ok != tc.ok {
				t.Errorf("got %q %v", id, ok)
			}
		})
	}
}

func TestMountLeak(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := filepath.Join(t.TempDir(), "runc", "lk-1", "rootfs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	scope := Scope{IDs: []string{"lk-*"}}
	before := Snapshot(scope)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Skip(err)
	}
	leaks := before.Leaks(Snapshot(scope))
	syscall.Unmount(dir, 0)
	if len(leaks) != 1 {
		t.Errorf("a mount below an id's dir: leaks %v, want one", leaks)
	}
}
