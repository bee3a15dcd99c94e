package layer

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/leakcheck"
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openDisks opens the Disks of a run dir, skipping where disks cannot be made.
func openDisks(t *testing.T, runDir string, poolMB int64) *Disks {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	if why := diskimg.Available(); why != "" {
		t.Skip("sandbox disks cannot work here: " + why)
	}
	d, err := OpenDisks(DisksConfig{RunDir: runDir, PoolMB: poolMB, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// poolReady waits until d's pool holds n made disks.
func poolReady(t *testing.T, d *Disks, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d.pool.mu.Lock()
		ready := slices.Clone(d.pool.ready)
		d.pool.mu.Unlock()
		if len(ready) == n {
			return ready
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d disks, want %d", len(ready), n)
		}
	}
}

// prepare makes a sandbox's host dir in runDir and its layer.
func prepare(t *testing.T, d *Disks, runDir, name string, diskMB int64) (dir, upper string) {
	t.Helper()
	dir = filepath.Join(runDir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	upper, _, err := d.Prepare(context.Background(), dir, diskMB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeDisk(dir) })
	return dir, upper
}

// TestDiskPool: disks of the pool's size are made ahead of time and a
// Prepare takes one (its mount moving with the directory) while the pool
// makes the next; another size is made on the spot; Close removes the
// disks nobody took, and a new Disks removes those a crash left.
func TestDiskPool(t *testing.T) {
	runDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{runDir}})
	d := openDisks(t, runDir, 64)
	ready := poolReady(t, d, poolDisks)
	var made, got unix.Stat_t
	if err := unix.Stat(filepath.Join(ready[0], DiskImageName), &made); err != nil {
		t.Fatal(err)
	}
	dir, upper := prepare(t, d, runDir, "a", 64)
	if err := unix.Stat(filepath.Join(dir, DiskImageName), &got); err != nil || got.Ino != made.Ino {
		t.Fatalf("the sandbox's disk is not the oldest made one (%v)", err)
	}
	if _, err := os.Stat(ready[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the taken disk is still in the pool: %v", err)
	}
	if !diskimg.IsMountpoint(filepath.Join(dir, DiskName)) || upper != UpperDir(dir) {
		t.Fatalf("the taken disk is not mounted in the sandbox's host dir (upper %s)", upper)
	}
	poolReady(t, d, poolDisks) // made again
	if u, ok := DiskStats(dir); !ok || u.BytesLimit == 0 || u.BytesLimit > 64<<20 || u.InodesLimit != 64<<20/BytesPerInode {
		t.Fatalf("stats: %+v %v", u, ok)
	}
	other, _ := prepare(t, d, runDir, "b", 96)
	if n := len(poolReady(t, d, poolDisks)); n != poolDisks {
		t.Fatalf("another size took from the pool")
	}
	for _, dir := range []string{dir, other} {
		if err := removeDisk(dir); err != nil {
			t.Fatal(err)
		}
	}

	// A crash: the made disks stay mounted until the next Disks opens.
	d.pool.cancel()
	<-d.pool.done
	left := poolReady(t, d, poolDisks)
	d.pool = nil
	d.Close()
	if !diskimg.IsMountpoint(filepath.Join(left[0], DiskName)) {
		t.Fatal("the crash left no made disk to clean up")
	}
	d2 := openDisks(t, runDir, 0)
	defer d2.Close()
	for _, dir := range left {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a disk left by a crash is still there: %v", err)
		}
	}

	// Close removes the disks nobody took.
	d3 := openDisks(t, runDir, 64)
	left = poolReady(t, d3, poolDisks)
	d3.Close()
	for _, dir := range left {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a made disk outlives Close: %v", err)
		}
	}
}

// TestMountForRead: a stopped sandbox's disk is mounted read-only for a
// copy and unmounted after; a sandbox without a disk needs nothing.
func TestMountForRead(t *testing.T) {
	runDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{runDir}})
	d := openDisks(t, runDir, 0)
	defer d.Close()
	plain, upper := prepare(t, d, runDir, "plain", 0)
	if upper != filepath.Join(plain, UpperName) || UpperDir(plain) != upper {
		t.Fatalf("uncapped upper dir %s", upper)
	}
	dir, upper := prepare(t, d, runDir, "capped", 64)
	if err := os.WriteFile(filepath.Join(upper, "note"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := UnmountDisk(dir); err != nil {
		t.Fatal(err)
	}
	undo, err := MountForRead(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(UpperDir(dir), "note")); err != nil || string(b) != "kept\n" {
		t.Errorf("read the stopped layer: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(UpperDir(dir), "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to the layer mounted for reading: %v, want EROFS", err)
	}
	undo()
	if diskimg.IsMountpoint(filepath.Join(dir, DiskName)) {
		t.Error("the disk stays mounted after the read")
	}
}
