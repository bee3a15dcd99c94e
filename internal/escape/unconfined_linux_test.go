package escape

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// unconfinedChecks are the checks that are safe to run on the host as root
// (in a private mount, network, UTS and IPC namespace) and that must then
// see their attack work.
var unconfinedChecks = []string{
	"host-file", "open-by-handle", "kmsg", "core-pattern", "caps", "setfcap", "userns-new", "unshare",
	"setns", "chroot", "mount-proc", "mount-sysfs", "mount-tmpfs", "mount-bind", "mount-api", "mknod",
	"modules", "kexec", "reboot", "admin-syscalls", "ioport", "bpf", "perf-event", "keyctl", "io-uring",
	"userfaultfd", "fanotify", "raw-socket", "packet-socket", "netlink-admin", "vsock",
}

// TestEscapeUnconfined is the battery's own positive control: run as root
// with nothing confining it, each check above must report its attack as
// working (or the kernel as lacking it), never as blocked. So "blocked" in
// a sandbox says something about the sandbox, not about a broken check.
func TestEscapeUnconfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the attacks need the privileges a sandbox withholds")
	}
	probe, err := probeOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}, Children: true})
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("host canary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-allowed-caps", strings.Join(sandbox.Capabilities, ","), "-host-file", secret}
	for _, c := range unconfinedChecks {
		args = append(args, "-only", c)
	}
	cmd := exec.Command(probe, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir, "HOME="+dir)
	// Its mounts and network changes stay in namespaces that die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v: %s", err, out)
	}
	got := map[string]wire.Result{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		var r wire.Result
		if json.Unmarshal([]byte(line), &r) == nil && r.Check != "" {
			got[r.Check] = r
		}
	}
	for _, c := range unconfinedChecks {
		r, ok := got[c]
		switch {
		case !ok:
			t.Errorf("%s: no result", c)
		case r.Status == wire.Escaped:
		case r.Status == wire.Skipped && strings.HasPrefix(r.Detail, "the kernel lacks it"):
			t.Logf("%s: %s", c, r.Detail)
		default:
			t.Errorf("%s unconfined: %s (%s), want escaped", c, r.Status, r.Detail)
		}
	}

	// And as an unprivileged user: a setuid-root copy of the probe, on a
	// filesystem that honours setuid and without no_new_privs, gains root.
	udir, err := os.MkdirTemp("", "paddock-escape-suid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(udir) })
	var st syscall.Statfs_t
	if err := syscall.Statfs(udir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID != 0 {
		t.Skipf("%s is on a nosuid mount: no setuid to gain", udir)
	}
	data, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	suid := filepath.Join(udir, "probe-suid")
	if err := os.WriteFile(suid, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{udir: 0o755, suid: os.ModeSetuid | os.ModeSetgid | 0o755} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	cmd = exec.Command(probe, "-only", "setuid-exec", "-suid", suid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("probe as nobody: %v: %s", err, out)
	}
	var r wire.Result
	if line, _, _ := strings.Cut(string(out), "\n"); json.Unmarshal([]byte(line), &r) != nil || r.Status != wire.Escaped {
		t.Errorf("setuid-exec unconfined: %+v, want escaped", r)
	}
}
