package userns

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const testBase = 1 << 30

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: user namespaces with a mapping, idmapped mounts")
	}
}

// nsGetOwnerUID is NS_GET_OWNER_UID, _IO(0xb7, 0x4) (linux/nsfs.h).
const nsGetOwnerUID = 0xb7<<8 | 0x4

// TestNew: the namespace maps the range, is owned by the range's first id
// (so the kernel charges its per-user limits there, not to root), and its
// holder is gone, reaped, after Close.
func TestNew(t *testing.T) {
	requireRoot(t)
	ns, err := New(testBase)
	if err != nil {
		t.Fatal(err)
	}
	holder := strings.TrimSuffix(strings.TrimPrefix(ns.Path(), "/proc/"), "/ns/user")
	uidMap, err := os.ReadFile("/proc/" + holder + "/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(uidMap)); strings.Join(got, " ") != "0 "+strconv.Itoa(testBase)+" 65536" {
		t.Errorf("uid_map %q", uidMap)
	}
	var owner uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ns.File().Fd(), nsGetOwnerUID, uintptr(unsafe.Pointer(&owner))); e != 0 {
		t.Fatal(e)
	}
	if owner != testBase {
		t.Errorf("namespace owned by %d, want %d", owner, testBase)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	ns.Close() // idempotent
	if _, err := os.Stat("/proc/" + holder); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("holder %s still exists after Close: %v", holder, err)
	}
}

// TestProbe: this host passes, and the probe leaves nothing behind.
func TestProbe(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := Probe(dir, testBase); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// TestAs: files made in As belong to the given id, and the thread keeps
// root's file capabilities (it may chown to anyone).
func TestAs(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	err := As(testBase, func() error {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return err
		}
		return os.Chown(p, testBase+1000, testBase+1000)
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != testBase+1000 {
		t.Errorf("owner %d", st.Uid)
	}
	// The calling goroutine's thread is untouched.
	if got := unix.Getuid(); got != 0 {
		t.Errorf("uid %d after As", got)
	}
	q := filepath.Join(dir, "g")
	if err := os.WriteFile(q, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(q); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Error("a file made after As is not root's")
	}
}
