package volume

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// requireVolumes skips unless this host can format and loop-mount images.
func requireVolumes(t *testing.T) {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip("volumes cannot work here: " + why)
	}
}

// newManager opens a Manager on a fresh dir; the cleanup checks that no
// mount or loop device is left below it.
func newManager(t *testing.T) (*Manager, string) {
	t.Helper()
	requireVolumes(t)
	dir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}})
	return open(t, dir), dir
}

func open(t *testing.T, dir string) *Manager {
	t.Helper()
	m, err := Open(Config{Dir: dir, DefaultSize: MinSize, MaxSize: 64 << 20, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func create(t *testing.T, m *Manager, name string) Volume {
	t.Helper()
	v, err := m.Create(context.Background(), name, 0, "")
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return v
}

func acquire(t *testing.T, m *Manager, id, name, mode string) Dirs {
	t.Helper()
	d, err := m.Acquire(context.Background(), id, "", sandbox.VolumeMount{Volume: name, Path: "/cache", Mode: mode})
	if err != nil {
		t.Fatalf("acquire %s for %s (%s): %v", name, id, mode, err)
	}
	t.Cleanup(func() { _ = m.Release(context.Background(), id) })
	if (mode == sandbox.VolumeCopyOnWrite) != (d.Upper != "") || d.Source == "" {
		t.Fatalf("acquire %s for %s (%s): dirs %+v", name, id, mode, d)
	}
	return d
}

// mountCow mounts a copy-on-write user's overlay from its dirs, as the
// driver does, and returns it with its unmount (also run at cleanup,
// before the release acquire registered).
func mountCow(t *testing.T, d Dirs) (string, func()) {
	t.Helper()
	if filepath.Dir(d.Upper) != filepath.Dir(d.Work) {
		t.Fatalf("upper and work are not siblings: %+v", d)
	}
	dir := t.TempDir()
	opts := "lowerdir=" + d.Source + ",upperdir=" + d.Upper + ",workdir=" + d.Work
	if err := syscall.Mount("overlay", dir, "overlay", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		t.Fatal(err)
	}
	unmount := func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) }
	t.Cleanup(unmount)
	return dir, unmount
}

func release(t *testing.T, m *Manager, id string) {
	t.Helper()
	if err := m.Release(context.Background(), id); err != nil {
		t.Fatalf("release %s: %v", id, err)
	}
}

func wantCode(t *testing.T, err error, kind error, code string) {
	t.Helper()
	if !errors.Is(err, kind) || sandbox.CodeOf(err) != code {
		t.Fatalf("got %v (code %q), want %v %q", err, sandbox.CodeOf(err), kind, code)
	}
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	mounts, err := linuxSystem{}.mounted(path)
	if err != nil {
		t.Fatal(err)
	}
	return mounts[path]
}

func TestCreateGetListDelete(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	v := create(t, m, "npm-cache")
	if v.SizeBytes != MinSize || v.CreatedAt.IsZero() || len(v.Users) != 0 {
		t.Fatalf("created %+v", v)
	}
	if _, err := m.Create(ctx, "b.2_x", 20<<20+1, ""); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get("b.2_x")
	if err != nil || got.SizeBytes != 21<<20 {
		t.Fatalf("get: %+v, %v; want the size rounded up to a MiB", got, err)
	}
	if got.UsedBytes <= 0 || got.UsedBytes >= got.SizeBytes/2 {
		t.Errorf("a fresh image uses %d bytes of %d: want it sparse", got.UsedBytes, got.SizeBytes)
	}
	names := []string{}
	for _, v := range m.List() {
		names = append(names, v.Name)
	}
	if !slices.Equal(names, []string{"b.2_x", "npm-cache"}) {
		t.Fatalf("list: %v", names)
	}

	for _, tc := range []struct {
		name string
		size int64
		code string
	}{
		{"", 0, "invalid_volume_name"},
		{"Upper", 0, "invalid_volume_name"},
		{".hidden", 0, "invalid_volume_name"},
		{"a/b", 0, "invalid_volume_name"},
		{"..", 0, "invalid_volume_name"},
		{strings.Repeat("a", 64), 0, "invalid_volume_name"},
		{"small", MinSize - 1, "invalid_volume_size"},
		{"huge", 64<<20 + 1, "invalid_volume_size"},
		{"negative", -1, "invalid_volume_size"},
	} {
		t.Run(tc.code+"/"+tc.name, func(t *testing.T) {
			_, err := m.Create(ctx, tc.name, tc.size, "")
			wantCode(t, err, sandbox.ErrInvalid, tc.code)
		})
	}
	_, err = m.Create(ctx, "npm-cache", 0, "")
	wantCode(t, err, sandbox.ErrConflict, "volume_exists")

	if err := m.Delete(ctx, "npm-cache"); err != nil {
		t.Fatal(err)
	}
	_, err = m.Get("npm-cache")
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	wantCode(t, m.Delete(ctx, "npm-cache"), sandbox.ErrNotFound, "volume_not_found")
	if _, err := os.Stat(filepath.Join(dir, "npm-cache")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted volume's dir: %v", err)
	}
	// Metadata survives a restart.
	if v, err := open(t, dir).Get("b.2_x"); err != nil || v.SizeBytes != 21<<20 {
		t.Fatalf("after reopen: %+v, %v", v, err)
	}
}

func TestReadWriteSharedAcrossUsersAndInUse(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	create(t, m, "cache")
	p := acquire(t, m, "sb-a", "cache", "").Source
	if err := os.WriteFile(filepath.Join(p, "dep.txt"), []byte("built"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := owner(fi); uid != sandboxUID || gid != sandboxGID {
		t.Errorf("volume root owned by %d:%d, want the sandbox user", uid, gid)
	}
	v, _ := m.Get("cache")
	if v.Users["sb-a"] != sandbox.VolumeReadWrite || !slices.Equal(m.Holders(), []string{"sb-a"}) {
		t.Fatalf("users %v, holders %v", v.Users, m.Holders())
	}
	wantCode(t, m.Delete(ctx, "cache"), sandbox.ErrConflict, "volume_in_use")
	// A read-write user is alone.
	_, err = m.Acquire(ctx, "sb-b", "", sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: sandbox.VolumeReadWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	_, err = m.Acquire(ctx, "sb-b", "", sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: sandbox.VolumeCopyOnWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	_, err = m.Acquire(ctx, "sb-b", "", sandbox.VolumeMount{Volume: "nope", Path: "/c"})
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	_, err = m.Acquire(ctx, "sb-b", "", sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: "ro"})
	wantCode(t, err, sandbox.ErrInvalid, "invalid_volume_mode")

	release(t, m, "sb-a")
	if isMounted(t, filepath.Join(dir, "cache", mntName)) || diskimg.LoopOf(filepath.Join(dir, "cache", imageName)) != "" {
		t.Fatal("the volume stays mounted or attached after its last user left")
	}
	release(t, m, "sb-a") // idempotent
	p = acquire(t, m, "sb-b", "cache", sandbox.VolumeReadWrite).Source
	if b, err := os.ReadFile(filepath.Join(p, "dep.txt")); err != nil || string(b) != "built" {
		t.Fatalf("the next user reads %q, %v", b, err)
	}
	release(t, m, "sb-b")
	if err := m.Delete(ctx, "cache"); err != nil {
		t.Fatal(err)
	}
}

func TestCapHolds(t *testing.T) {
	m, _ := newManager(t)
	create(t, m, "small")
	p := acquire(t, m, "sb-a", "small", "").Source
	f, err := os.Create(filepath.Join(p, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var written int64
	for written = 0; written < 2*MinSize; written += int64(len(chunk)) {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing %d bytes into a %d-byte volume: %v, want ENOSPC", written, int64(MinSize), err)
	}
	if written > MinSize {
		t.Fatalf("wrote %d bytes into a %d-byte volume", written, int64(MinSize))
	}
	// Freeing space makes it usable again: the filesystem is fine.
	f.Close()
	if err := os.Remove(filepath.Join(p, "big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "small"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCopyOnWrite(t *testing.T) {
	m, dir := newManager(t)
	create(t, m, "base")
	p := acquire(t, m, "sb-w", "base", sandbox.VolumeReadWrite).Source
	if err := os.WriteFile(filepath.Join(p, "f"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	release(t, m, "sb-w")

	da := acquire(t, m, "sb-a", "base", sandbox.VolumeCopyOnWrite)
	db := acquire(t, m, "sb-b", "base", sandbox.VolumeCopyOnWrite)
	if da.Upper == db.Upper || da.Source != db.Source {
		t.Fatalf("copy-on-write users: %+v and %+v, want one lower and uppers of their own", da, db)
	}
	if !strings.HasPrefix(da.Upper, filepath.Join(dir, "base", mntName)+"/") {
		t.Fatalf("upper %s is outside the volume's filesystem: its changes would escape the cap", da.Upper)
	}
	a, unmountA := mountCow(t, da)
	b, _ := mountCow(t, db)
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if uid, _, _ := owner(fi); uid != sandboxUID || fi.Mode().Perm() != 0o755 {
		t.Errorf("copy-on-write root: uid %d mode %v, want the volume's", uid, fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(a, "f"), []byte("changed by a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(b, "f")); string(got) != "original" {
		t.Fatalf("b sees %q after a changed its copy", got)
	}
	_, err = m.Acquire(context.Background(), "sb-c", "", sandbox.VolumeMount{Volume: "base", Path: "/c", Mode: sandbox.VolumeReadWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")

	unmountA() // the driver's Stop
	release(t, m, "sb-a")
	if _, err := os.Stat(filepath.Dir(da.Upper)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a's changes are kept after its release: %v", err)
	}
	if !isMounted(t, filepath.Join(dir, "base", mntName)) {
		t.Fatal("the volume was unmounted while b uses it")
	}
	_ = syscall.Unmount(b, syscall.MNT_DETACH)
	release(t, m, "sb-b")
	p = acquire(t, m, "sb-w", "base", sandbox.VolumeReadWrite).Source
	if got, _ := os.ReadFile(filepath.Join(p, "f")); string(got) != "original" {
		t.Fatalf("the volume holds %q after a copy-on-write change", got)
	}
	if _, err := os.Stat(filepath.Join(p, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy-on-write file reached the volume: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "base", mntName, cowInner)); len(ents) != 0 {
		t.Fatalf("copy-on-write changes left: %v", ents)
	}
}

// TestRestart: a manager opened over mounted volumes keeps those recorded
// users hold, removes those nobody records, and the last release unmounts.
func TestRestart(t *testing.T) {
	m, dir := newManager(t)
	create(t, m, "kept")
	create(t, m, "stray")
	create(t, m, "cowvol")
	acquire(t, m, "sb-run", "kept", "")
	cow := acquire(t, m, "sb-cow", "cowvol", sandbox.VolumeCopyOnWrite)
	// A crash after mounting but before recording: mounted, no users.
	stray := filepath.Join(dir, "stray", mntName)
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := (linuxSystem{}).mount(filepath.Join(dir, "stray", imageName), stray); err != nil {
		t.Fatal(err)
	}
	// Copy-on-write changes of a user that is not recorded.
	orphan := filepath.Join(dir, "cowvol", mntName, cowInner, "sb-gone")
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}
	// An overlay mounted where paddock mounted them before drivers did.
	legacy := filepath.Join(dir, "cowvol", cowName, "sb-old")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", legacy, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}

	m2 := open(t, dir) // the old manager is simply dropped, as by a crash
	if !isMounted(t, filepath.Join(dir, "kept", mntName)) {
		t.Fatal("a recorded user's mount was removed on restart")
	}
	if _, err := os.Stat(cow.Upper); err != nil {
		t.Fatalf("a recorded copy-on-write user's changes were removed on restart: %v", err)
	}
	if isMounted(t, stray) || diskimg.LoopOf(filepath.Join(dir, "stray", imageName)) != "" {
		t.Fatal("a mount nobody records survived the restart")
	}
	for _, p := range []string{orphan, filepath.Join(dir, "cowvol", cowName)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if got := m2.Holders(); !slices.Equal(got, []string{"sb-cow", "sb-run"}) {
		t.Fatalf("holders after restart: %v", got)
	}
	_, err := m2.Acquire(context.Background(), "sb-x", "", sandbox.VolumeMount{Volume: "kept", Path: "/c"})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	release(t, m2, "sb-run")
	release(t, m2, "sb-cow")
	for _, name := range []string{"kept", "cowvol"} {
		if isMounted(t, filepath.Join(dir, name, mntName)) {
			t.Fatalf("%s still mounted after its last user left", name)
		}
	}
}

// TestReleaseAfterReboot: users recorded but nothing mounted (a reboot);
// releasing them is clean and the volume mounts again.
func TestReleaseAfterReboot(t *testing.T) {
	m, dir := newManager(t)
	create(t, m, "v")
	acquire(t, m, "sb-a", "v", sandbox.VolumeCopyOnWrite)
	if err := syscall.Unmount(filepath.Join(dir, "v", mntName), 0); err != nil {
		t.Fatal(err)
	}
	m2 := open(t, dir)
	if !slices.Equal(m2.Holders(), []string{"sb-a"}) {
		t.Fatalf("holders: %v", m2.Holders())
	}
	release(t, m2, "sb-a")
	p, unmount := mountCow(t, acquire(t, m2, "sb-b", "v", sandbox.VolumeCopyOnWrite))
	if err := os.WriteFile(filepath.Join(p, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	unmount()
	release(t, m2, "sb-b")
}

// TestTeams: another team's volume is not found when mounting.
func TestTeams(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "owned", 0, "team-a"); err != nil {
		t.Fatal(err)
	}
	_, err := m.Acquire(ctx, "sb-b", "team-b", sandbox.VolumeMount{Volume: "owned", Path: "/c"})
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	if _, err := m.Acquire(ctx, "sb-a", "team-a", sandbox.VolumeMount{Volume: "owned", Path: "/c"}); err != nil {
		t.Fatal(err)
	}
	release(t, m, "sb-a")
}

// TestTeamQuota: a team's volumes are capped in number and in the sum of
// their sizes; deleting one makes room, and other teams do not count.
func TestTeamQuota(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}})
	m, err := Open(Config{Dir: dir, DefaultSize: MinSize, MaxSize: 64 << 20, TeamMaxVolumes: 2, TeamMaxBytes: 3 * MinSize,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(name string, size int64, team string) error {
		_, err := m.Create(ctx, name, size, team)
		return err
	}
	if err := mk("a1", MinSize, "team-a"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, mk("a2", 3*MinSize, "team-a"), sandbox.ErrForbidden, "volume_quota_exceeded") // 4 x MinSize in all
	if err := mk("a2", 2*MinSize, "team-a"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, mk("a3", MinSize, "team-a"), sandbox.ErrForbidden, "volume_quota_exceeded") // a third volume
	if err := mk("b1", 3*MinSize, "team-b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := mk("a3", MinSize, "team-a"); err != nil {
		t.Fatal(err)
	}
}

// TestRemountedWhenUnmountedBehindOurBack: a volume unmounted by someone
// else while in use is mounted again for the next user, never handed out
// as the bare (uncapped) host directory.
func TestRemountedWhenUnmountedBehindOurBack(t *testing.T) {
	m, dir := newManager(t)
	create(t, m, "v")
	acquire(t, m, "sb-a", "v", sandbox.VolumeCopyOnWrite)
	mnt := filepath.Join(dir, "v", mntName)
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	acquire(t, m, "sb-b", "v", sandbox.VolumeCopyOnWrite)
	if !isMounted(t, mnt) {
		t.Fatal("the volume was handed out unmounted")
	}
}

// TestSetUser: the first sandbox user of an empty volume takes its root; a
// volume with content keeps its owner; a copy-on-write user gets only its
// private overlay's root; a symlink in the data's place is not followed.
func TestSetUser(t *testing.T) {
	m, _ := newManager(t)
	create(t, m, "fresh")
	ownerOf := func(p string) (int, int) {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		uid, gid, _ := owner(fi)
		return uid, gid
	}
	ctx := context.Background()

	data := acquire(t, m, "sb-a", "fresh", sandbox.VolumeReadWrite).Source
	if err := m.SetUser(ctx, "sb-a", 1234, 2345); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(data); uid != 1234 || gid != 2345 {
		t.Errorf("fresh volume's root owned by %d:%d, want 1234:2345", uid, gid)
	}
	if err := os.WriteFile(filepath.Join(data, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	release(t, m, "sb-a")

	// Not empty any more: another user leaves it alone.
	data = acquire(t, m, "sb-b", "fresh", sandbox.VolumeReadWrite).Source
	if err := m.SetUser(ctx, "sb-b", 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if uid, _ := ownerOf(data); uid != 1234 {
		t.Errorf("a used volume's root changed owner to %d", uid)
	}
	release(t, m, "sb-b")

	// Copy-on-write over an empty volume: the overlay's root (its upper
	// dir's) only.
	create(t, m, "shared")
	cow := acquire(t, m, "sb-c", "shared", sandbox.VolumeCopyOnWrite).Upper
	if err := m.SetUser(ctx, "sb-c", 1234, 2345); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(cow); uid != 1234 || gid != 2345 {
		t.Errorf("copy-on-write root owned by %d:%d, want 1234:2345", uid, gid)
	}
	if uid, _ := ownerOf(filepath.Join(m.mnt("shared"), dataName)); uid != sandboxUID {
		t.Errorf("the shared volume's own root changed owner to %d", uid)
	}
	release(t, m, "sb-c")

	// A sandbox that SetUser is asked about but that holds nothing: no-op.
	if err := m.SetUser(ctx, "sb-none", 1, 1); err != nil {
		t.Errorf("SetUser of a sandbox without volumes: %v", err)
	}
}

// TestChownDirNoFollow: chownDir and emptyDir refuse a symlink at the name.
func TestChownDirNoFollow(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	sys := newSystem()
	// O_NOFOLLOW with O_DIRECTORY: ENOTDIR (or ELOOP) for a symlink.
	if err := sys.chownDir(dir, "link", 4321, 4321); !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, syscall.ELOOP) {
		t.Errorf("chownDir through a symlink: %v, want ENOTDIR", err)
	}
	if _, err := sys.emptyDir(dir, "link"); !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, syscall.ELOOP) {
		t.Errorf("emptyDir through a symlink: %v, want ENOTDIR", err)
	}
	fi, _ := os.Stat(target)
	if uid, _, _ := owner(fi); uid == 4321 {
		t.Error("the symlink's target was chowned")
	}
}
