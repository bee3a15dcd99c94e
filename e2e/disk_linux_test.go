package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/sdk"
)

func requireDisks(t *testing.T) {
	t.Helper()
	if why := diskimg.Available(); why != "" {
		t.Skip("sandbox disks cannot work here: " + why)
	}
}

// hostFree is what the data dir's filesystem has left: bytes and inodes.
func hostFree(t *testing.T, dir string) (bytes, inodes int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Ffree)
}

// leaveRoom says what a command that fills a sandbox's layer must free
// before it ends, so that the next command can start: nothing when the
// agent keeps its command logs on a mount of their own, a little when they
// are on the layer itself (then no command starts while it is full).
func leaveRoom(t *testing.T, sb *sdk.Sandbox, free string) string {
	t.Helper()
	if _, code := sh(t, sb, "grep -q ' /run/paddock ' /proc/self/mountinfo"); code != 0 {
		t.Logf("the agent's command logs are on the writable layer: commands cannot start while it is full; each fill frees a little")
		return "; rc=$?; " + free + "; exit $rc"
	}
	return ""
}

// TestDiskCapHoldsFromInside: a sandbox with a 1 GiB disk that writes
// 3 GB gets ENOSPC inside and goes on running commands, and the host's
// filesystem loses at most the cap; one that makes files past its disk's
// inode count gets ENOSPC too, without using the host's inodes.
func TestDiskCapHoldsFromInside(t *testing.T) {
	requireDisks(t)
	dataDir := newDataDir(t)
	s := startStack(t, dataDir, stackOptions{})
	ctx := ctxFor(t, 5*time.Minute)
	const capMB = 1024
	sb := s.create(t, api.CreateSandboxRequest{Resources: api.Resources{DiskMB: capMB}})
	if sb.Resources.DiskMB != capMB {
		t.Fatalf("sandbox resources %+v, want a %d MiB disk", sb.Resources, capMB)
	}
	free := leaveRoom(t, sb, "truncate -s -8M big")
	freeBefore, _ := hostFree(t, dataDir)

	// 3 GB from /dev/zero, bounded in time; the error goes to /tmp (a tmpfs).
	start := time.Now()
	if _, code := sh(t, sb, "timeout 120 head -c 3000000000 /dev/zero > big 2>/tmp/err"+free); code != 1 {
		t.Fatalf("writing 3 GB into a 1 GiB disk: exit %d, want 1 (ENOSPC)", code)
	}
	t.Logf("filled the disk in %s", time.Since(start).Round(time.Millisecond))
	if out, code := sh(t, sb, "cat /tmp/err"); code != 0 || !strings.Contains(out, "No space left on device") {
		t.Fatalf("the write failed with %q, want ENOSPC", out)
	}
	// Healthy: commands run, and see a full disk.
	if out, code := sh(t, sb, "echo alive; df -k --output=used,size . | tail -1"); code != 0 || !strings.HasPrefix(out, "alive\n") {
		t.Fatalf("a command after the fill: %q, exit %d", out, code)
	}
	st, err := sb.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DiskLimitBytes > capMB<<20 || st.DiskBytes < st.DiskLimitBytes*9/10 {
		t.Errorf("stats after the fill: %d of %d bytes used", st.DiskBytes, st.DiskLimitBytes)
	}

	// The host lost at most the cap: the image's own blocks exactly, the
	// filesystem's free space with room for what other processes on this
	// host wrote meanwhile.
	var img syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dataDir, "runc", sb.ID, "disk.img"), &img); err != nil {
		t.Fatal(err)
	}
	if used := img.Blocks * 512; used > capMB<<20 {
		t.Errorf("the sandbox's disk takes %d MiB of the host, over its %d MiB cap", used>>20, capMB)
	}
	freeAfter, _ := hostFree(t, dataDir)
	const slack = 512 << 20
	drop := freeBefore - freeAfter
	if drop > capMB<<20+slack {
		t.Errorf("the host's free space dropped by %d MiB, over the %d MiB cap (+%d MiB slack)", drop>>20, capMB, slack>>20)
	}
	t.Logf("3 GB written into a %d MiB disk: ENOSPC inside; the image takes %d MiB of the host, whose free space dropped by %d MiB", capMB, img.Blocks*512>>20, drop>>20)
	if _, code := sh(t, sb, "rm big && echo more > small"); code != 0 {
		t.Fatal("writing after freeing space failed")
	}

	// Files: a 64 MiB disk has 8192 inodes.
	small := s.create(t, api.CreateSandboxRequest{Resources: api.Resources{DiskMB: 64}})
	free = leaveRoom(t, small, "rm -f 1 2 3 4")
	_, inodesBefore := hostFree(t, dataDir)
	if _, code := sh(t, small, "mkdir many && cd many && seq 1 100000 | xargs touch 2>/tmp/err"+free); code == 0 {
		t.Fatal("100000 files on a disk of 8192 inodes: no error")
	}
	if out, _ := sh(t, small, "cat /tmp/err"); !strings.Contains(out, "No space left on device") {
		t.Fatalf("making files failed with %q, want ENOSPC", out)
	}
	if out, code := sh(t, small, "echo alive"); code != 0 || out != "alive\n" {
		t.Fatalf("a command after running out of inodes: %q, exit %d", out, code)
	}
	if _, inodesAfter := hostFree(t, dataDir); inodesBefore-inodesAfter > 20000 {
		t.Errorf("the host lost %d inodes to a sandbox's files", inodesBefore-inodesAfter)
	}
}
