package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
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
	mnt, img := filepath.Join(dir, layer.DiskName), filepath.Join(dir, layer.DiskImageName)
	if !diskimg.IsMountpoint(mnt) || diskimg.LoopOf(img) == "" {
		t.Fatalf("disk not mounted while the sandbox runs")
	}
	// A sparse file far larger than the disk: only its data counts,
	// on the disk and in a snapshot.
	sh(t, c, "echo kept > note && head -c 1000000 /dev/urandom > data && truncate -s 8G sparse && echo end >> sparse", false)
	if _, err := os.Stat(filepath.Join(mnt, layer.UpperName, "home/user/note")); err != nil {
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
	if s.DiskLimitBytes == 0 || s.DiskBytes < 1000000 || s.DiskInodesLimit != 128<<20/layer.BytesPerInode {
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
	n, err := d2.Snapshot(ctx, id, nil, dst, 0)
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
	if !diskimg.IsMountpoint(filepath.Join(dir, layer.DiskName)) {
		t.Fatal("the disk went with the sandbox's init: nothing left to test")
	}
	if err := d.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if diskimg.IsMountpoint(filepath.Join(dir, layer.DiskName)) {
		t.Fatal("a dead sandbox's disk stays mounted after Stop")
	}
}
