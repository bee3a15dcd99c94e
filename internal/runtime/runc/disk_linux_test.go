package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func requireDisks(t *testing.T, d *Driver) {
	t.Helper()
	if !d.Capabilities().DiskCap {
		t.Skip("sandbox disks cannot work here: " + diskimg.Available())
	}
}

// TestDiskLifecycle follows a capped sandbox's disk: mounted while it
// runs, kept mounted across a restart of paddock, unmounted (and its loop
// device gone) by Stop, mounted read-only for a snapshot of the stopped
// sandbox, removed by Destroy.
func TestDiskLifecycle(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d1 := newDriver(t, dataDir)
	requireDisks(t, d1)
	id := "rt-disk-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	c, err := d1.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64, DiskMB: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d1.Destroy(ctx, id) })
	dir := filepath.Join(dataDir, "runc", id)
	mnt, img := filepath.Join(dir, diskName), filepath.Join(dir, diskImageName)
	if !diskimg.IsMountpoint(mnt) || diskimg.LoopOf(img) == "" {
		t.Fatalf("disk not mounted while the sandbox runs")
	}
	// A sparse file far larger than the disk: only its data counts,
	// on the disk and in a snapshot.
	sh(t, c, "echo kept > note && head -c 1000000 /dev/urandom > data && truncate -s 8G sparse && echo end >> sparse", false)
	if _, err := os.Stat(filepath.Join(mnt, upperName, "home/user/note")); err != nil {
		t.Fatalf("the write did not land on the disk: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil || st.Size != 128<<20 || st.Blocks*512 > 8<<20 {
		t.Fatalf("image: size %d, %d bytes allocated, %v: want 128 MiB, sparse", st.Size, st.Blocks*512, err)
	}

	// A restart of paddock: the disk stays mounted under the running sandbox.
	d1.Close()
	d2 := newDriver(t, dataDir)
	s, err := d2.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.DiskLimitBytes == 0 || s.DiskBytes < 1000000 || s.DiskInodesLimit != 128<<20/BytesPerInode {
		t.Errorf("stats after re-adoption: %+v", s)
	}

	if err := d2.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if diskimg.IsMountpoint(mnt) {
		t.Fatal("disk still mounted after Stop")
	}
	// The loop device goes once the sandbox's mount namespace is gone.
	for deadline := time.Now().Add(5 * time.Second); diskimg.LoopOf(img) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("loop device still attached after Stop")
		}
	}
	dst := t.TempDir()
	n, err := d2.Snapshot(ctx, id, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "home/user/note")); err != nil || string(b) != "kept\n" || n < 1000000 || n > 2000000 {
		t.Fatalf("snapshot of the stopped sandbox: %q %v, %d bytes", b, err, n)
	}
	if err := unix.Stat(filepath.Join(dst, "home/user/sparse"), &st); err != nil || st.Size != 8<<30+4 || st.Blocks*512 > 1<<20 {
		t.Fatalf("sparse file in the snapshot: size %d, %d bytes allocated, %v: want 8 GiB, sparse", st.Size, st.Blocks*512, err)
	}
	if diskimg.IsMountpoint(mnt) {
		t.Fatal("disk left mounted by the snapshot")
	}
	if err := d2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("host dir after Destroy: %v", err)
	}
}

// TestDiskCreateRefused: a disk cap the host's filesystem cannot hold
// above the reserve is refused before anything is made.
func TestDiskCreateRefused(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d, err := New(Config{DataDir: dataDir, AgentPath: testAgent(t), Logger: testLogger(), DiskReserve: 1 << 50})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id := "rt-full-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	_, err = d.Create(context.Background(), runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 32, DiskMB: 64}})
	if !errors.Is(err, sandbox.ErrUnavailable) || sandbox.CodeOf(err) != "host_disk_full" {
		t.Fatalf("create on a host under its reserve: %v, want host_disk_full", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host dir made: %v", err)
	}
}

// TestDiskCreateFailureCleansUp: a create that fails after its disk is
// mounted leaves no mount, loop device or file behind.
func TestDiskCreateFailureCleansUp(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	bad := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	testAgent(t)
	d, err := New(Config{DataDir: dataDir, AgentPath: bad})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	requireDisks(t, d)
	id := "rt-dfail-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	if _, err := d.Create(context.Background(), runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 32, DiskMB: 64}}); err == nil {
		t.Fatal("Create with a dying agent succeeded")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host dir left behind: %v", err)
	}
}

// poolReady waits until the driver's pool holds n made disks.
func poolReady(t *testing.T, d *Driver, n int) []string {
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

// TestDiskPool: disks of the pool's size are made ahead of time and a
// create takes one (its mount moving with the directory) while the pool
// makes the next; another size is made on the spot; Close removes the
// disks nobody took, and a new driver removes those a crash left.
func TestDiskPool(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	testAgent(t)
	d, err := New(Config{DataDir: dataDir, AgentPath: agentPath, Logger: testLogger(), PoolDiskMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	requireDisks(t, d)
	ready := poolReady(t, d, poolDisks)
	var made, got unix.Stat_t
	if err := unix.Stat(filepath.Join(ready[0], diskImageName), &made); err != nil {
		t.Fatal(err)
	}
	id := "rt-pool-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id, id + "-x"}})
	c, err := d.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 64, DiskMB: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(ctx, id)
	dir := filepath.Join(dataDir, "runc", id)
	if err := unix.Stat(filepath.Join(dir, diskImageName), &got); err != nil || got.Ino != made.Ino {
		t.Fatalf("the sandbox's disk is not the oldest made one (%v)", err)
	}
	if _, err := os.Stat(ready[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the taken disk is still in the pool: %v", err)
	}
	if !diskimg.IsMountpoint(filepath.Join(dir, diskName)) {
		t.Fatal("the taken disk is not mounted in the sandbox's host dir")
	}
	sh(t, c, "echo pooled > note", false)
	if _, err := os.Stat(filepath.Join(dir, diskName, upperName, "home/user/note")); err != nil {
		t.Fatalf("the write did not land on the taken disk: %v", err)
	}
	poolReady(t, d, poolDisks) // made again
	if s, err := d.Stats(ctx, id); err != nil || s.DiskLimitBytes == 0 || s.DiskLimitBytes > 64<<20 {
		t.Fatalf("stats: %+v %v", s, err)
	}
	if _, err := d.Create(ctx, runtime.Spec{ID: id + "-x", Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 64, DiskMB: 96}}); err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(ctx, id+"-x")
	if n := len(poolReady(t, d, poolDisks)); n != poolDisks {
		t.Fatalf("another size took from the pool")
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, id+"-x"); err != nil {
		t.Fatal(err)
	}

	// A crash: the made disks stay mounted until the next driver starts.
	d.pool.cancel()
	<-d.pool.done
	left := poolReady(t, d, poolDisks)
	d.pool = nil
	d.Close()
	if !diskimg.IsMountpoint(filepath.Join(left[0], diskName)) {
		t.Fatal("the crash left no made disk to clean up")
	}
	d2, err := New(Config{DataDir: dataDir, AgentPath: agentPath, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	for _, dir := range left {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a disk left by a crash is still there: %v", err)
		}
	}

	// Close removes the disks nobody took.
	d3, err := New(Config{DataDir: dataDir, AgentPath: agentPath, Logger: testLogger(), PoolDiskMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	left = poolReady(t, d3, poolDisks)
	d3.Close()
	for _, dir := range left {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a made disk outlives Close: %v", err)
		}
	}
}

// TestDiskOfDeadSandbox: a sandbox whose init died on its own (as reconcile
// finds one after a restart) has its disk unmounted by Stop, and its loop
// device goes.
func TestDiskOfDeadSandbox(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d := newDriver(t, dataDir)
	requireDisks(t, d)
	id := "rt-ddead-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	if _, err := d.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 64, DiskMB: 64}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(ctx, id) })
	list, err := d.List(ctx)
	if err != nil || len(list) != 1 || list[0].PID == 0 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := unix.Kill(list[0].PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if l, _ := d.List(ctx); len(l) == 1 && !l[0].Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox still runs after its init was killed")
		}
	}
	dir := filepath.Join(dataDir, "runc", id)
	if !diskimg.IsMountpoint(filepath.Join(dir, diskName)) {
		t.Fatal("the disk went with the sandbox's init: nothing left to test")
	}
	if err := d.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if diskimg.IsMountpoint(filepath.Join(dir, diskName)) {
		t.Fatal("a dead sandbox's disk stays mounted after Stop")
	}
}
