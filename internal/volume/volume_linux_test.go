package volume

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// testTeam owns the volumes of tests about something other than teams.
const testTeam = "team-t"

func open(t *testing.T, dir string) *Manager {
	t.Helper()
	m, err := Open(Config{Dir: dir, DefaultSize: MinSize, MaxSize: 64 << 20, LegacyTeam: "default",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// volDir is where team's volume name lives.
func volDir(dir, team, name string) string { return filepath.Join(dir, teamsName, team, name) }

func create(t *testing.T, m *Manager, name string) Volume {
	t.Helper()
	return createIn(t, m, testTeam, name)
}

func createIn(t *testing.T, m *Manager, team, name string) Volume {
	t.Helper()
	v, err := m.Create(context.Background(), team, name, 0)
	if err != nil {
		t.Fatalf("create %s in %s: %v", name, team, err)
	}
	return v
}

func acquire(t *testing.T, m *Manager, id, name, mode string) Dirs {
	t.Helper()
	return acquireIn(t, m, testTeam, id, name, mode)
}

func acquireIn(t *testing.T, m *Manager, team, id, name, mode string) Dirs {
	t.Helper()
	d, err := m.Acquire(context.Background(), id, team, sandbox.VolumeMount{Volume: name, Path: "/cache", Mode: mode})
	if err != nil {
		t.Fatalf("acquire %s of %s for %s (%s): %v", name, team, id, mode, err)
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
	if _, err := m.Create(ctx, testTeam, "b.2_x", 20<<20+1); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get(t.Context(), testTeam, "b.2_x")
	if err != nil || got.SizeBytes != 21<<20 {
		t.Fatalf("get: %+v, %v; want the size rounded up to a MiB", got, err)
	}
	if got.UsedBytes <= 0 || got.UsedBytes >= got.SizeBytes/2 {
		t.Errorf("a fresh image uses %d bytes of %d: want it sparse", got.UsedBytes, got.SizeBytes)
	}
	names := []string{}
	for _, v := range list(t, m, testTeam) {
		names = append(names, v.Name)
	}
	if !slices.Equal(names, []string{"b.2_x", "npm-cache"}) {
		t.Fatalf("list: %v", names)
	}

	for _, tc := range []struct {
		team string
		name string
		size int64
		code string
	}{
		{testTeam, "", 0, "invalid_volume_name"},
		{testTeam, "Upper", 0, "invalid_volume_name"},
		{testTeam, ".hidden", 0, "invalid_volume_name"},
		{testTeam, "a/b", 0, "invalid_volume_name"},
		{testTeam, "..", 0, "invalid_volume_name"},
		{testTeam, "_teams", 0, "invalid_volume_name"},
		{testTeam, strings.Repeat("a", 64), 0, "invalid_volume_name"},
		{testTeam, "small", MinSize - 1, "invalid_volume_size"},
		{testTeam, "huge", 64<<20 + 1, "invalid_volume_size"},
		{testTeam, "negative", -1, "invalid_volume_size"},
		{"", "noteam", 0, "invalid_team"},
		{"..", "dots", 0, "invalid_team"},
		{"a/b", "slash", 0, "invalid_team"},
		{"_teams", "under", 0, "invalid_team"},
	} {
		t.Run(tc.code+"/"+tc.team+"/"+tc.name, func(t *testing.T) {
			_, err := m.Create(ctx, tc.team, tc.name, tc.size)
			wantCode(t, err, sandbox.ErrInvalid, tc.code)
		})
	}
	_, err = m.Create(ctx, testTeam, "npm-cache", 0)
	wantCode(t, err, sandbox.ErrConflict, "volume_exists")

	if err := m.Delete(ctx, testTeam, "npm-cache"); err != nil {
		t.Fatal(err)
	}
	_, err = m.Get(t.Context(), testTeam, "npm-cache")
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	wantCode(t, m.Delete(ctx, testTeam, "npm-cache"), sandbox.ErrNotFound, "volume_not_found")
	if _, err := os.Stat(volDir(dir, testTeam, "npm-cache")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted volume's dir: %v", err)
	}
	// Metadata survives a restart.
	if v, err := open(t, dir).Get(t.Context(), testTeam, "b.2_x"); err != nil || v.SizeBytes != 21<<20 {
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
	v, _ := m.Get(t.Context(), testTeam, "cache")
	if v.Users["sb-a"] != sandbox.VolumeReadWrite || !slices.Equal(m.Holders(), []string{"sb-a"}) {
		t.Fatalf("users %v, holders %v", v.Users, m.Holders())
	}
	wantCode(t, m.Delete(ctx, testTeam, "cache"), sandbox.ErrConflict, "volume_in_use")
	// A read-write user is alone.
	_, err = m.Acquire(ctx, "sb-b", testTeam, sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: sandbox.VolumeReadWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	_, err = m.Acquire(ctx, "sb-b", testTeam, sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: sandbox.VolumeCopyOnWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	_, err = m.Acquire(ctx, "sb-b", testTeam, sandbox.VolumeMount{Volume: "nope", Path: "/c"})
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	_, err = m.Acquire(ctx, "sb-b", testTeam, sandbox.VolumeMount{Volume: "cache", Path: "/c", Mode: "ro"})
	wantCode(t, err, sandbox.ErrInvalid, "invalid_volume_mode")

	release(t, m, "sb-a")
	if isMounted(t, filepath.Join(volDir(dir, testTeam, "cache"), mntName)) || diskimg.LoopOf(filepath.Join(volDir(dir, testTeam, "cache"), imageName)) != "" {
		t.Fatal("the volume stays mounted or attached after its last user left")
	}
	release(t, m, "sb-a") // idempotent
	p = acquire(t, m, "sb-b", "cache", sandbox.VolumeReadWrite).Source
	if b, err := os.ReadFile(filepath.Join(p, "dep.txt")); err != nil || string(b) != "built" {
		t.Fatalf("the next user reads %q, %v", b, err)
	}
	release(t, m, "sb-b")
	if err := m.Delete(ctx, testTeam, "cache"); err != nil {
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
	if !strings.HasPrefix(da.Upper, filepath.Join(volDir(dir, testTeam, "base"), mntName)+"/") {
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
	_, err = m.Acquire(context.Background(), "sb-c", testTeam, sandbox.VolumeMount{Volume: "base", Path: "/c", Mode: sandbox.VolumeReadWrite})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")

	unmountA() // the driver's Stop
	release(t, m, "sb-a")
	if _, err := os.Stat(filepath.Dir(da.Upper)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a's changes are kept after its release: %v", err)
	}
	if !isMounted(t, filepath.Join(volDir(dir, testTeam, "base"), mntName)) {
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
	if ents, _ := os.ReadDir(filepath.Join(volDir(dir, testTeam, "base"), mntName, cowInner)); len(ents) != 0 {
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
	stray := filepath.Join(volDir(dir, testTeam, "stray"), mntName)
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := (linuxSystem{}).mount(filepath.Join(volDir(dir, testTeam, "stray"), imageName), stray); err != nil {
		t.Fatal(err)
	}
	// Copy-on-write changes of a user that is not recorded.
	orphan := filepath.Join(volDir(dir, testTeam, "cowvol"), mntName, cowInner, "sb-gone")
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}
	// An overlay mounted where paddock mounted them before drivers did.
	legacy := filepath.Join(volDir(dir, testTeam, "cowvol"), cowName, "sb-old")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", legacy, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}

	m2 := open(t, dir) // the old manager is simply dropped, as by a crash
	if !isMounted(t, filepath.Join(volDir(dir, testTeam, "kept"), mntName)) {
		t.Fatal("a recorded user's mount was removed on restart")
	}
	if _, err := os.Stat(cow.Upper); err != nil {
		t.Fatalf("a recorded copy-on-write user's changes were removed on restart: %v", err)
	}
	if isMounted(t, stray) || diskimg.LoopOf(filepath.Join(volDir(dir, testTeam, "stray"), imageName)) != "" {
		t.Fatal("a mount nobody records survived the restart")
	}
	for _, p := range []string{orphan, filepath.Join(volDir(dir, testTeam, "cowvol"), cowName)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if got := m2.Holders(); !slices.Equal(got, []string{"sb-cow", "sb-run"}) {
		t.Fatalf("holders after restart: %v", got)
	}
	_, err := m2.Acquire(context.Background(), "sb-x", testTeam, sandbox.VolumeMount{Volume: "kept", Path: "/c"})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	release(t, m2, "sb-run")
	release(t, m2, "sb-cow")
	for _, name := range []string{"kept", "cowvol"} {
		if isMounted(t, filepath.Join(volDir(dir, testTeam, name), mntName)) {
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
	if err := syscall.Unmount(filepath.Join(volDir(dir, testTeam, "v"), mntName), 0); err != nil {
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
		_, err := m.Create(ctx, team, name, size)
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
	if err := m.Delete(ctx, "team-a", "a1"); err != nil {
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
	mnt := filepath.Join(volDir(dir, testTeam, "v"), mntName)
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
	m, dir := newManager(t)
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
	if uid, _ := ownerOf(filepath.Join(volDir(dir, testTeam, "shared"), mntName, dataName)); uid != sandboxUID {
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

// TestNamesPerTeam: two teams each have a volume of the same name; each
// sees, mounts and deletes only its own, and a third team none.
func TestNamesPerTeam(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	for _, team := range []string{"team-a", "team-b"} {
		if v := createIn(t, m, team, "cache"); v.TeamID != team || v.Name != "cache" {
			t.Fatalf("created in %s: %+v", team, v)
		}
		if _, err := os.Stat(filepath.Join(volDir(dir, team, "cache"), metaName)); err != nil {
			t.Fatalf("%s's volume on disk: %v", team, err)
		}
	}
	_, err := m.Create(ctx, "team-a", "cache", 0)
	wantCode(t, err, sandbox.ErrConflict, "volume_exists")

	for _, team := range []string{"team-a", "team-b"} {
		if v, err := m.Get(t.Context(), team, "cache"); err != nil || v.TeamID != team {
			t.Fatalf("get in %s: %+v, %v", team, v, err)
		}
		if vs := list(t, m, team); len(vs) != 1 || vs[0].TeamID != team {
			t.Fatalf("list of %s: %+v", team, vs)
		}
	}
	for _, team := range []string{"team-c", ""} {
		_, err := m.Get(t.Context(), team, "cache")
		wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
		if vs := list(t, m, team); len(vs) != 0 {
			t.Fatalf("list of %q: %+v", team, vs)
		}
		_, err = m.Acquire(ctx, "sb-c", team, sandbox.VolumeMount{Volume: "cache", Path: "/c"})
		wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
		wantCode(t, m.Delete(ctx, team, "cache"), sandbox.ErrNotFound, "volume_not_found")
	}
	var all []string
	for _, v := range listAll(t, m) {
		all = append(all, v.TeamID+"/"+v.Name)
	}
	if !slices.Equal(all, []string{"team-a/cache", "team-b/cache"}) {
		t.Fatalf("list all: %v", all)
	}

	// Each team's sandbox mounts its own, read-write at once: two volumes.
	da := acquireIn(t, m, "team-a", "sb-a", "cache", sandbox.VolumeReadWrite)
	db := acquireIn(t, m, "team-b", "sb-b", "cache", sandbox.VolumeReadWrite)
	if da.Source == db.Source || !strings.HasPrefix(db.Source, volDir(dir, "team-b", "cache")+"/") {
		t.Fatalf("team a mounts %s, team b %s", da.Source, db.Source)
	}
	if err := os.WriteFile(filepath.Join(da.Source, "f"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(db.Source, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("team b sees team a's file: %v", err)
	}
	if v, _ := m.Get(t.Context(), "team-a", "cache"); !slices.Equal(v.InUseBy(), []string{"sb-a"}) {
		t.Fatalf("team a's volume is used by %v", v.InUseBy())
	}

	wantCode(t, m.Delete(ctx, "team-b", "cache"), sandbox.ErrConflict, "volume_in_use")
	release(t, m, "sb-b")
	if err := m.Delete(ctx, "team-b", "cache"); err != nil {
		t.Fatal(err)
	}
	_, err = m.Get(t.Context(), "team-b", "cache")
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	if _, err := os.Stat(filepath.Join(dir, teamsName, "team-b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the team's dir after its last volume went: %v", err)
	}
	if v, err := m.Get(t.Context(), "team-a", "cache"); err != nil || !slices.Equal(v.InUseBy(), []string{"sb-a"}) {
		t.Fatalf("team a's volume after team b deleted its own: %+v, %v", v, err)
	}
	// And after a restart, each is still its team's.
	release(t, m, "sb-a")
	createIn(t, m, "team-b", "cache")
	m2 := open(t, dir)
	if v, err := m2.Get(t.Context(), "team-a", "cache"); err != nil || v.TeamID != "team-a" {
		t.Fatalf("team a's after reopen: %+v, %v", v, err)
	}
	if got := acquireIn(t, m2, "team-b", "sb-b2", "cache", ""); got.Source == da.Source {
		t.Fatal("team b mounts team a's volume after a restart")
	}
}

// legacyVolume makes, as an older paddock did, the volume name at
// <dir>/<name> owned by team ("" for none) and held by users (mounted if
// any, their copy-on-write dirs made), holding data/f with its name.
func legacyVolume(t *testing.T, dir, name, team string, users map[string]string) string {
	t.Helper()
	vd := filepath.Join(dir, name)
	mnt := filepath.Join(vd, mntName)
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	sys := linuxSystem{}
	if err := sys.format(t.Context(), filepath.Join(vd, imageName), MinSize, name); err != nil {
		t.Fatal(err)
	}
	if err := sys.mount(filepath.Join(vd, imageName), mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.unmount(mnt) }) // unless released by then
	if err := initFS(mnt, users); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, dataName, "f"), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	for id, mode := range users {
		if mode == sandbox.VolumeCopyOnWrite {
			if err := os.MkdirAll(filepath.Join(mnt, cowInner, id, "upper"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(users) == 0 {
		if err := sys.unmount(mnt); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeMeta(vd, Volume{Name: name, SizeBytes: MinSize, TeamID: team, CreatedAt: time.Now().UTC(), Users: users}); err != nil {
		t.Fatal(err)
	}
	return vd
}

// metaOnDisk reads the volume.json in vd.
func metaOnDisk(t *testing.T, vd string) Volume {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vd, metaName))
	if err != nil {
		t.Fatal(err)
	}
	var v Volume
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLegacyAdopted: volumes an older paddock made at <dir>/<name> are
// adopted by LegacyTeam if they have no team (and then only that team
// mounts them), kept by their team if they have one, and moved into their
// team's directory when nothing uses them; one a running sandbox holds
// stays mounted where it is, with its users, across restarts, and moves
// once released.
func TestLegacyAdopted(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}})
	legacyVolume(t, dir, "orphan", "", nil)
	legacyVolume(t, dir, "owned", "team-b", nil)
	busy := legacyVolume(t, dir, "busy", "", map[string]string{"sb-old": sandbox.VolumeCopyOnWrite})
	if err := os.Mkdir(filepath.Join(dir, tmpPrefix+"half-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	m := open(t, dir) // LegacyTeam "default"
	for _, tc := range []struct{ team, name string }{{"default", "orphan"}, {"team-b", "owned"}} {
		vd := volDir(dir, tc.team, tc.name)
		if got := metaOnDisk(t, vd); got.TeamID != tc.team {
			t.Errorf("%s on disk: team %q, want %q", tc.name, got.TeamID, tc.team)
		}
		if _, err := os.Stat(filepath.Join(dir, tc.name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left at its legacy path: %v", tc.name, err)
		}
		if v, err := m.Get(t.Context(), tc.team, tc.name); err != nil || v.TeamID != tc.team {
			t.Errorf("get %s of %s: %+v, %v", tc.name, tc.team, v, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, tmpPrefix+"half-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a half-created legacy volume survived: %v", err)
	}
	// No volume is every team's any more.
	for _, tc := range []struct{ team, name string }{{"team-x", "orphan"}, {"team-b", "orphan"}, {"", "orphan"}, {"team-x", "busy"}, {"default", "owned"}} {
		_, err := m.Acquire(ctx, "sb-x", tc.team, sandbox.VolumeMount{Volume: tc.name, Path: "/c"})
		wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	}
	if got := acquireIn(t, m, "default", "sb-d", "orphan", sandbox.VolumeReadWrite).Source; !strings.HasPrefix(got, volDir(dir, "default", "orphan")+"/") {
		t.Fatalf("the adopted volume mounts from %s", got)
	} else if b, err := os.ReadFile(filepath.Join(got, "f")); err != nil || string(b) != "orphan" {
		t.Fatalf("the adopted volume holds %q, %v", b, err)
	}
	release(t, m, "sb-d")

	// The one in use: adopted in place, still mounted, its user kept.
	checkBusy := func(m *Manager) {
		t.Helper()
		if got := metaOnDisk(t, busy); got.TeamID != "default" || got.Users["sb-old"] != sandbox.VolumeCopyOnWrite {
			t.Fatalf("the volume in use on disk: %+v", got)
		}
		if !isMounted(t, filepath.Join(busy, mntName)) {
			t.Fatal("the legacy volume in use was unmounted")
		}
		if _, err := os.Stat(filepath.Join(busy, mntName, cowInner, "sb-old", "upper")); err != nil {
			t.Fatalf("its user's copy-on-write changes: %v", err)
		}
		if !slices.Equal(m.Holders(), []string{"sb-old"}) {
			t.Fatalf("holders: %v", m.Holders())
		}
		_, err := m.Acquire(ctx, "sb-x", "default", sandbox.VolumeMount{Volume: "busy", Path: "/c"})
		wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	}
	checkBusy(m)
	m = open(t, dir) // a restart: the sandbox still runs
	checkBusy(m)
	var all []string
	for _, v := range listAll(t, m) {
		all = append(all, v.TeamID+"/"+v.Name)
	}
	if !slices.Equal(all, []string{"default/busy", "default/orphan", "team-b/owned"}) {
		t.Fatalf("list all: %v", all)
	}

	// Its last user gone, it moves too.
	release(t, m, "sb-old")
	if isMounted(t, filepath.Join(busy, mntName)) {
		t.Fatal("still mounted after its last user left")
	}
	if _, err := os.Stat(busy); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("left at its legacy path after its release: %v", err)
	}
	got := acquireIn(t, m, "default", "sb-d", "busy", sandbox.VolumeReadWrite).Source
	if b, err := os.ReadFile(filepath.Join(got, "f")); err != nil || string(b) != "busy" || !strings.HasPrefix(got, volDir(dir, "default", "busy")+"/") {
		t.Fatalf("after the move it mounts from %s and holds %q, %v", got, b, err)
	}
	release(t, m, "sb-d")
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != teamsName {
		t.Fatalf("entries left beside %s: %v", teamsName, ents)
	}
}

// TestOpenRefused: Open guesses no owner and no winner. Nothing changes
// on disk.
func TestOpenRefused(t *testing.T) {
	requireVolumes(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		cfg   Config
	}{
		{"a volume of no team and no LegacyTeam", func(t *testing.T, dir string) { legacyVolume(t, dir, "cache", "", nil) }, Config{}},
		{"a name in both layouts", func(t *testing.T, dir string) {
			createIn(t, open(t, dir), "default", "cache")
			legacyVolume(t, dir, "cache", "", nil)
		}, Config{LegacyTeam: "default"}},
		{"a bad LegacyTeam", func(t *testing.T, dir string) {}, Config{LegacyTeam: "../x"}},
		{"a symlink for the teams' directory", func(t *testing.T, dir string) {
			elsewhere := t.TempDir()
			createIn(t, open(t, elsewhere), "team-a", "cache")
			if err := os.Symlink(filepath.Join(elsewhere, teamsName), filepath.Join(dir, teamsName)); err != nil {
				t.Fatal(err)
			}
		}, Config{}},
		{"a volume in another team's dir", func(t *testing.T, dir string) {
			createIn(t, open(t, dir), "team-a", "cache")
			if err := os.Rename(filepath.Join(dir, teamsName, "team-a"), filepath.Join(dir, teamsName, "team-b")); err != nil {
				t.Fatal(err)
			}
		}, Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}})
			tc.setup(t, dir)
			before := metas(t, dir)
			tc.cfg.Dir, tc.cfg.Logger = dir, logger
			if _, err := Open(tc.cfg); err == nil {
				t.Fatal("opened")
			} else {
				t.Log(err)
			}
			if after := metas(t, dir); !maps.Equal(before, after) {
				t.Fatalf("metadata changed: %v, was %v", after, before)
			}
		})
	}
}

// metas maps each volume.json below dir to its content.
func metas(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == metaName {
			b, rerr := os.ReadFile(p)
			out[p] = string(b)
			err = rerr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// list is m.List, which never fails on the host.
func list(t *testing.T, m *Manager, team string) []Volume {
	t.Helper()
	vs, err := m.List(t.Context(), team)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// listAll is m.ListAll, which never fails on the host.
func listAll(t *testing.T, m *Manager) []Volume {
	t.Helper()
	vs, err := m.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return vs
}
