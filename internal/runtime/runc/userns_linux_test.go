package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var smallRes = sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}

// create makes a sandbox that is destroyed when the test ends.
func create(t *testing.T, d *Driver, name string, spec runtime.Spec) (string, *agent.Client) {
	t.Helper()
	spec.ID = fmt.Sprintf("rt-%s-%d", name, time.Now().UnixNano()%1e9)
	if spec.Resources == (sandbox.Resources{}) {
		spec.Resources = smallRes
	}
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{spec.ID}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create %s: %v", spec.ID, err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background(), spec.ID); err != nil {
			t.Errorf("destroy %s: %v", spec.ID, err)
		}
	})
	return spec.ID, c
}

// sh runs a shell script in the sandbox and returns its stdout; it must
// exit 0.
func sh(t *testing.T, c *agent.Client, script string, sudo bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", script}, Sudo: sudo})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var stdout, stderr bytes.Buffer
	for {
		f, err := out.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f.Kind {
		case agent.FrameStdout:
			stdout.Write(f.Data)
		case agent.FrameStderr:
			stderr.Write(f.Data)
		}
	}
	done, err := c.Wait(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.ExitCode == nil || *done.ExitCode != 0 {
		t.Fatalf("%q (sudo=%v): %+v\nstdout: %s\nstderr: %s", script, sudo, done, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// ownerOf is path's uid:gid on the host, as stored on disk.
func ownerOf(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// agentUID is the host uid of the sandbox's agent (root inside).
func agentUID(t *testing.T, d *Driver, id string) uint32 {
	t.Helper()
	list, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range list {
		if info.ID != id {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.PID))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				uid, err := strconv.ParseUint(strings.Fields(v)[0], 10, 32)
				if err != nil {
					t.Fatal(err)
				}
				return uint32(uid)
			}
		}
	}
	t.Fatalf("no agent of %s in %+v", id, list)
	return 0
}

// TestUserNSFiles: the sandbox's root is its range's first host uid, the
// range is recorded where every paddock on the host sees it, and files
// the sandbox makes are stored with the ids it sees (container-relative).
func TestUserNSFiles(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d := newDriver(t, dataDir)
	if !d.Capabilities().UserNS {
		t.Fatal("the runc driver runs sandboxes without user namespaces")
	}
	id, c := create(t, d, "usfiles", runtime.Spec{})
	if got := sh(t, c, "echo hi > ~/f && mkdir ~/d && stat -c %u:%g ~/f ~/d", false); got != "1000:1000\n1000:1000" {
		t.Errorf("the user's files inside: %q", got)
	}
	sh(t, c, "touch /etc/rootfile /etc/owned && chown 1234:2345 /etc/owned", true)
	upper := filepath.Join(dataDir, "runc", id, layer.UpperName)
	for rel, want := range map[string]string{
		"home/user/f": "1000:1000", "home/user/d": "1000:1000", "etc/owned": "1234:2345", "etc/rootfile": "0:0",
	} {
		if got := ownerOf(t, filepath.Join(upper, rel)); got != want {
			t.Errorf("upper/%s stored as %s, want %s", rel, got, want)
		}
	}
	uid := agentUID(t, d, id)
	m, err := d.roots.mapOf(id)
	if err != nil || m == nil {
		t.Fatalf("no range recorded for %s: %v", id, err)
	}
	if uid == 0 || uid != m.base || m.base < DefaultIDBase {
		t.Errorf("agent's host uid %d, recorded range from %d", uid, m.base)
	}
	// The acceptance figure: root inside, not root on the host.
	if got := sh(t, c, "id -u", true); got != "0" {
		t.Errorf("sudo id -u inside = %q, want 0", got)
	}
	t.Logf("inside: sudo id -u = 0; on the host the agent's uid (/proc/<pid>/status) = %d", uid)
	dir := filepath.Join(d.roots.dir, id)
	if got := ownerOf(t, dir); got != fmt.Sprintf("%d:%d", m.base, m.base) {
		t.Errorf("rootfs dir owned by %s", got)
	}
	if err := d.Destroy(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs dir after Destroy: %v", err)
	}
	if _, err := os.Lstat(d.roots.claimPath(m.base)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("range claim after Destroy: %v", err)
	}
}

// TestUserNSImageOwners: an image layer with files of several owners shows
// them inside as they are stored, and the shared layer is never written.
func TestUserNSImageOwners(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d := newDriver(t, dataDir)
	lower := t.TempDir()
	files := []struct {
		rel      string
		uid, gid int
		dir      bool
	}{
		{"srv", 0, 0, true}, {"srv/root", 0, 0, false}, {"srv/user", 1000, 1000, false},
		{"srv/other", 1234, 2345, false}, {"srv/nobody", 65534, 65534, false},
		{"srv/app", 1000, 1000, true}, {"srv/huge", 70000, 70000, false},
	}
	for _, f := range files {
		p := filepath.Join(lower, f.rel)
		var err error
		if f.dir {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, []byte(f.rel), 0o644)
		}
		if err == nil {
			err = os.Lchown(p, f.uid, f.gid)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	before := snapshotTree(t, lower)
	id, c := create(t, d, "usimage", runtime.Spec{Image: "test", Rootfs: &runtime.Rootfs{Lowers: []string{lower}, OnHost: true}})
	got := sh(t, c, "cd /srv && stat -c '%n %u:%g' root user other nobody app huge && stat -c %U:%G /usr/bin/env", false)
	// 70000 is outside every range: it shows as the overflow id.
	want := "root 0:0\nuser 1000:1000\nother 1234:2345\nnobody 65534:65534\napp 1000:1000\nhuge 65534:65534\nroot:root"
	if got != want {
		t.Errorf("owners inside:\n%s\nwant:\n%s", got, want)
	}
	sh(t, c, "echo x > /srv/app/new && echo y >> /srv/user", false)
	upper := filepath.Join(dataDir, "runc", id, layer.UpperName)
	for _, rel := range []string{"srv/app/new", "srv/user"} {
		if got := ownerOf(t, filepath.Join(upper, rel)); got != "1000:1000" {
			t.Errorf("upper/%s stored as %s, want 1000:1000", rel, got)
		}
	}
	if after := snapshotTree(t, lower); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("the image layer changed")
	}
	for _, f := range files {
		if got := ownerOf(t, filepath.Join(lower, f.rel)); got != fmt.Sprintf("%d:%d", f.uid, f.gid) {
			t.Errorf("layer's %s now stored as %s", f.rel, got)
		}
	}
}

// TestUserNSSnapshotAcrossRanges: a snapshot of sandbox A keeps
// container-relative owners and starts right in sandbox B, whose range is
// another (A still holds its own).
func TestUserNSSnapshotAcrossRanges(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d := newDriver(t, dataDir)
	a, ca := create(t, d, "ussnapa", runtime.Spec{})
	sh(t, ca, "mkdir ~/data && echo kept > ~/data/f && chmod 600 ~/data/f", false)
	sh(t, ca, "mkdir /opt/x && echo root > /opt/x/r && chown -R 1234:2345 /opt/x", true)
	snap := t.TempDir()
	if _, err := d.Snapshot(context.Background(), a, nil, snap, 0); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{"home/user/data/f": "1000:1000", "opt/x/r": "1234:2345"} {
		if got := ownerOf(t, filepath.Join(snap, rel)); got != want {
			t.Errorf("snapshot's %s stored as %s, want %s", rel, got, want)
		}
	}
	b, cb := create(t, d, "ussnapb", runtime.Spec{Image: "snap", Rootfs: &runtime.Rootfs{Lowers: []string{snap}, OnHost: true}})
	if ua, ub := agentUID(t, d, a), agentUID(t, d, b); ua == ub {
		t.Fatalf("A and B share host uid %d", ua)
	}
	if got := sh(t, cb, "stat -c %u:%g ~/data/f /opt/x/r && cat ~/data/f && echo more >> ~/data/f", false); got != "1000:1000\n1234:2345\nkept" {
		t.Errorf("in B: %q", got)
	}
}

// TestUserNSVolumes: a volume written in one sandbox reads right in the
// next, whatever their ranges; a copy-on-write mount's changes are stored
// container-relative too, and its lower layer is untouched.
func TestUserNSVolumes(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d := newDriver(t, dataDir)
	vol := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(vol, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	mounts := []runtime.Mount{{Source: vol, Dest: "/home/user/vol"}}
	a, ca := create(t, d, "usvola", runtime.Spec{Mounts: mounts})
	sh(t, ca, "echo from-a > ~/vol/f", false)
	sh(t, ca, "echo root > /home/user/vol/g && chown 1234:2345 /home/user/vol/g", true)
	if err := d.Destroy(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{"f": "1000:1000", "g": "1234:2345"} {
		if got := ownerOf(t, filepath.Join(vol, rel)); got != want {
			t.Errorf("volume's %s stored as %s, want %s", rel, got, want)
		}
	}
	// Another sandbox, with another range (b below holds one meanwhile).
	create(t, d, "usvolb", runtime.Spec{})
	_, cc := create(t, d, "usvolc", runtime.Spec{Mounts: mounts})
	if got := sh(t, cc, "stat -c %u:%g ~/vol/f ~/vol/g && echo from-c >> ~/vol/f && cat ~/vol/f", false); got != "1000:1000\n1234:2345\nfrom-a\nfrom-c" {
		t.Errorf("in the next sandbox: %q", got)
	}

	cow := t.TempDir()
	upper, work := filepath.Join(cow, "upper"), filepath.Join(cow, "work")
	for _, p := range []string{upper, work} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(upper, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	_, cd := create(t, d, "usvold", runtime.Spec{Mounts: []runtime.Mount{{Source: vol, Dest: "/srv/cow", Upper: upper, Work: work}}})
	if got := sh(t, cd, "stat -c %u:%g /srv/cow /srv/cow/f && echo changed > /srv/cow/f && echo new > /srv/cow/new && cat /srv/cow/f", false); got != "1000:1000\n1000:1000\nchanged" {
		t.Errorf("copy-on-write mount: %q", got)
	}
	for _, rel := range []string{"f", "new"} {
		if got := ownerOf(t, filepath.Join(upper, rel)); got != "1000:1000" {
			t.Errorf("copy-on-write change %s stored as %s, want 1000:1000", rel, got)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(vol, "f")); string(b) != "from-a\nfrom-c\n" {
		t.Errorf("the volume under a copy-on-write mount changed: %q", b)
	}
}

// TestNoUserNS: the opt-out runs sandboxes in the host's user namespace,
// and says so in Capabilities.
func TestNoUserNS(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d, err := New(Config{DataDir: dataDir, AgentPath: testAgent(t), Logger: testLogger(), NoUserNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Capabilities().UserNS {
		t.Error("Capabilities says UserNS with NoUserNS")
	}
	id, c := create(t, d, "nouserns", runtime.Spec{})
	if got := sh(t, c, "id -u", true); got != "0" {
		t.Errorf("sudo id -u = %q", got)
	}
	if uid := agentUID(t, d, id); uid != 0 {
		t.Errorf("agent's host uid %d without a user namespace, want 0", uid)
	}
}

// TestRoots: ranges are claimed once across processes sharing the dir,
// exhausted with a clear error, and given back.
func TestRoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown")
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "roots")
	r1 := &roots{dir: dir, base: 1 << 30, ranges: 3}
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r1.init(); err == nil {
		t.Fatal("init accepted a parent others cannot search")
	}
	if err := os.Chmod(filepath.Dir(parent), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := r1.init(); err != nil {
		t.Fatal(err)
	}
	r2 := &roots{dir: dir, base: 1 << 30, ranges: 3} // another process
	seen := map[uint32]string{}
	claim := func(r *roots, id string) *idMap {
		t.Helper()
		m, err := r.claim(id)
		if err != nil {
			t.Fatalf("claim %s: %v", id, err)
		}
		if other, ok := seen[m.base]; ok {
			t.Fatalf("%s got %s's range %d", id, other, m.base)
		}
		seen[m.base] = id
		return m
	}
	ma := claim(r1, "a")
	mb := claim(r2, "b")
	claim(r1, "c")
	if _, err := r2.claim("d"); !errors.Is(err, sandbox.ErrExhausted) {
		t.Fatalf("a fourth claim of three ranges: %v, want ErrExhausted", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed claim left its dir: %v", err)
	}
	if m, err := r1.mapOf("b"); err != nil || m == nil || m.base != mb.base {
		t.Fatalf("mapOf(b) from another process: %v, %v", m, err)
	}
	for range 2 { // idempotent
		if err := r1.release("b"); err != nil {
			t.Fatal(err)
		}
	}
	delete(seen, mb.base)
	if m := claim(r2, "e"); m.base != mb.base {
		t.Errorf("the freed range %d was not reused (got %d)", mb.base, m.base)
	}
	// A dir left by a crash before its claim is taken over.
	if err := os.Mkdir(filepath.Join(dir, "f"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r1.release("a"); err != nil {
		t.Fatal(err)
	}
	delete(seen, ma.base)
	claim(r1, "f")
	for _, id := range []string{"c", "e", "f"} {
		if err := r1.release(id); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, rangesName)); len(ents) != 0 {
		t.Errorf("claims left: %v", ents)
	}
}
