package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var testRes = sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}

// createTest creates sandbox "gv-<name>-<time>" on d, destroyed at cleanup.
func createTest(t *testing.T, d *Driver, name string, spec runtime.Spec) (string, *agent.Client) {
	t.Helper()
	spec.ID = "gv-" + name + "-" + strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
	if spec.Image == "" {
		spec.Image = sandbox.HostImage
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := d.Destroy(context.Background(), spec.ID); err != nil {
			t.Error(err)
		}
	})
	return spec.ID, c
}

func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	return newDriver(t).(*Driver)
}

// TestSnapshotSeesLiveWrites: a snapshot of a running sandbox holds what a
// process wrote and still holds open, through write(2) and through a
// shared mapping it never synced (which the sentry keeps in its own memory
// until a sync), and the sandbox, paused for the copy, runs on after it.
func TestSnapshotSeesLiveWrites(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"gv-*"}})
	d := newTestDriver(t)
	id, c := createTest(t, d, "snaplive", runtime.Spec{Resources: testRes})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := `
import mmap, os, time
f = open('/home/user/written', 'w'); f.write('written\n'); f.flush()
fd = os.open('/home/user/mapped', os.O_RDWR | os.O_CREAT, 0o644); os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED); m[:7] = b'mapped\n'
open('/tmp/ready', 'w').close()
time.sleep(600)
`
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "python3", Args: []string{"-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); run(t, c, "test -e /tmp/ready && echo y") != "y\n"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the writer did not get ready")
		}
	}
	dst := t.TempDir()
	if _, err := d.Snapshot(ctx, id, nil, dst, 0); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"written": "written\n", "mapped": "mapped\n"} {
		got, err := os.ReadFile(filepath.Join(dst, "home/user", name))
		if err != nil || !strings.HasPrefix(string(got), want) {
			t.Errorf("%s in the snapshot: %q, %v; want %q", name, got, err, want)
		}
	}
	if st, err := d.state(ctx, id); err != nil || st.Status != "running" {
		t.Fatalf("after the snapshot: %+v, %v; want running", st, err)
	}
	if got, err := c.Get(ctx, cmd.ID); err != nil || got.Status != "running" {
		t.Errorf("the writer after the snapshot: %+v, %v; want running", got, err)
	}
}

// TestSnapshotStoppedDisk: a stopped sandbox with a disk cap has its disk
// unmounted; a snapshot mounts it read-only for the copy and unmounts it.
func TestSnapshotStoppedDisk(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"gv-*"}})
	d := newTestDriver(t)
	if !d.Capabilities().DiskCap {
		t.Skip("sandbox disks cannot work here: " + diskimg.Available())
	}
	res := testRes
	res.DiskMB = 64
	id, c := createTest(t, d, "snapdisk", runtime.Spec{Resources: res})
	run(t, c, "echo kept > /home/user/note")
	ctx := context.Background()
	mnt := filepath.Join(d.hostDir(id), layer.DiskName)
	if s, err := d.Stats(ctx, id); err != nil || s.DiskLimitBytes == 0 || s.DiskLimitBytes > 64<<20 {
		t.Errorf("stats of a capped sandbox: %+v, %v", s, err)
	}
	if err := d.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if diskimg.IsMountpoint(mnt) {
		t.Fatal("disk still mounted after Stop")
	}
	dst := t.TempDir()
	if _, err := d.Snapshot(ctx, id, nil, dst, 0); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "home/user/note")); err != nil || string(b) != "kept\n" {
		t.Errorf("snapshot of the stopped sandbox: %q, %v", b, err)
	}
	if diskimg.IsMountpoint(mnt) {
		t.Error("disk left mounted by the snapshot")
	}
}

// TestCopyOnWriteVolume: a copy-on-write mount shows its source, keeps the
// sandbox's changes in the upper dir (whiteouts included) and never
// writes the source; Stop unmounts the overlay.
func TestCopyOnWriteVolume(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"gv-*"}})
	d := newTestDriver(t)
	src, rw := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "seed"), []byte("seed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, p := range []string{upper, work} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	id, c := createTest(t, d, "cow", runtime.Spec{Resources: testRes,
		Mounts: []runtime.Mount{{Source: src, Dest: "/data", Upper: upper, Work: work}}})
	if out := run(t, c, "cat /data/seed && echo new > /data/new && rm /data/seed && ls /data"); out != "seed\nnew\n" {
		t.Errorf("inside: %q", out)
	}
	if ents, err := os.ReadDir(src); err != nil || len(ents) != 1 || ents[0].Name() != "seed" {
		t.Errorf("the source changed: %v, %v", ents, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || string(b) != "new\n" {
		t.Errorf("upper/new: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "seed"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper/seed is not a whiteout: mode %o, %v", st.Mode, err)
	}
	if err := d.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if m, err := diskimg.Mounted(d.hostDir(id)); err != nil || len(m) != 0 {
		t.Errorf("mounts left in the host dir after Stop: %v, %v", m, err)
	}
}

// TestResumeLeftover: a sandbox a crash left paused mid-snapshot is
// resumed by List (as reconcile calls it at start) instead of looking lost.
func TestResumeLeftover(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"gv-*"}})
	d := newTestDriver(t)
	id, c := createTest(t, d, "paused", runtime.Spec{Resources: testRes})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.runsc(ctx, nil, "pause", id); err != nil {
		t.Fatal(err)
	}
	list, err := d.List(ctx)
	if err != nil || len(list) != 1 || !list[0].Running {
		t.Fatalf("list: %+v, %v; want the sandbox running", list, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Errorf("the agent after List: %v", err)
	}
}
