package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/sdk"
)

func requireVolumes(t *testing.T) {
	t.Helper()
	if why := volume.Available(); why != "" {
		t.Skip("volumes cannot work here: " + why)
	}
}

func wantAPICode(t *testing.T, err error, code string) {
	t.Helper()
	if !sdk.IsCode(err, code) {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func deleteSandbox(t *testing.T, sb *sdk.Sandbox) {
	t.Helper()
	if err := sb.Delete(ctxFor(t, time.Minute)); err != nil {
		t.Fatalf("delete %s: %v", sb.ID, err)
	}
}

// TestVolumeReadWrite: a file one sandbox writes into a volume is read by
// the next that mounts it; the cap holds from inside (and the sandbox goes
// on); an in-use volume cannot be deleted nor mounted read-write twice;
// nothing (mount, loop device) is left after (the data dir's leak check).
func TestVolumeReadWrite(t *testing.T) {
	requireVolumes(t)
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	v, err := s.client.CreateVolume(ctx, "deps", testVolumeSize)
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeBytes != testVolumeSize || len(v.InUseBy) != 0 {
		t.Fatalf("created %+v", v)
	}

	a := s.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/home/user/.cache/deps"}}})
	if len(a.Volumes) != 1 || a.Volumes[0].Mode != api.VolumeReadWrite {
		t.Fatalf("sandbox volumes: %+v", a.Volumes)
	}
	if out, code := sh(t, a, "echo built > /home/user/.cache/deps/lib.txt && stat -c %u /home/user/.cache /home/user/.cache/deps/lib.txt"); code != 0 || out != "1000\n1000\n" {
		t.Fatalf("write into the volume as the sandbox user: %q, exit %d", out, code)
	}
	if out, _ := sh(t, a, "grep ' /home/user/.cache/deps ' /proc/self/mountinfo"); !strings.Contains(out, "nosuid") || !strings.Contains(out, "nodev") {
		t.Errorf("volume mount: %q, want nosuid,nodev", out)
	}
	wantAPICode(t, s.client.DeleteVolume(ctx, "deps"), "volume_in_use")
	_, err = s.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/deps"}}})
	wantAPICode(t, err, "volume_busy")
	if v, err := s.client.GetVolume(ctx, "deps"); err != nil || len(v.InUseBy) != 1 || v.InUseBy[0] != a.ID {
		t.Fatalf("in use by: %+v, %v", v, err)
	}
	deleteSandbox(t, a)

	b := s.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/opt/deps", Mode: api.VolumeReadWrite}}})
	if out, code := sh(t, b, "cat /opt/deps/lib.txt"); code != 0 || out != "built\n" {
		t.Fatalf("the next sandbox reads %q, exit %d", out, code)
	}
	// Past the cap: ENOSPC inside, the sandbox carries on.
	out, errOut, code := run(t, b, api.CommandRequest{Cmd: "dd", Args: []string{"if=/dev/zero", "of=/opt/deps/big", "bs=1M", "count=64", "conv=fsync"}})
	if code == 0 || !strings.Contains(errOut, "No space left") {
		t.Fatalf("dd 64 MiB into a 32 MiB volume: exit %d, %q %q", code, out, errOut)
	}
	if out, code := sh(t, b, "du -sm /opt/deps | cut -f1; rm /opt/deps/big && echo ok > /opt/deps/after"); code != 0 {
		t.Fatalf("the sandbox after filling its volume: %q, exit %d", out, code)
	} else if mb := strings.TrimSpace(strings.Split(out, "\n")[0]); len(mb) > 2 {
		t.Fatalf("the volume holds %s MiB, over its 32 MiB cap", mb)
	}
	deleteSandbox(t, b)

	if err := s.client.DeleteVolume(ctx, "deps"); err != nil {
		t.Fatal(err)
	}
	if vols, err := s.client.ListVolumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("volumes after delete: %+v, %v", vols, err)
	}
}

// TestVolumeCopyOnWrite: sandboxes mounting a volume copy-on-write see its
// content and change it privately, at the same time; the volume itself is
// unchanged for the next sandbox.
func TestVolumeCopyOnWrite(t *testing.T) {
	requireVolumes(t)
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	if _, err := s.client.CreateVolume(ctx, "base", 0); err != nil {
		t.Fatal(err)
	}
	rw := []api.VolumeMount{{Volume: "base", Path: "/srv/base"}}
	cow := []api.VolumeMount{{Volume: "base", Path: "/srv/base", Mode: api.VolumeCopyOnWrite}}

	w := s.create(t, api.CreateSandboxRequest{Volumes: rw})
	if _, code := sh(t, w, "echo original > /srv/base/f"); code != 0 {
		t.Fatal("write the original")
	}
	deleteSandbox(t, w)

	b := s.create(t, api.CreateSandboxRequest{Volumes: cow})
	c := s.create(t, api.CreateSandboxRequest{Volumes: cow})
	if out, code := sh(t, b, "cat /srv/base/f && echo changed > /srv/base/f && touch /srv/base/new && cat /srv/base/f"); code != 0 || out != "original\nchanged\n" {
		t.Fatalf("copy-on-write sandbox: %q, exit %d", out, code)
	}
	if out, code := sh(t, c, "cat /srv/base/f; ls /srv/base"); code != 0 || out != "original\nf\n" {
		t.Fatalf("another copy-on-write sandbox sees %q, exit %d", out, code)
	}
	_, err := s.client.Create(ctx, api.CreateSandboxRequest{Volumes: rw})
	wantAPICode(t, err, "volume_busy")
	// Stopping drops b's changes and gives the volume back.
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	deleteSandbox(t, c)
	if v, err := s.client.GetVolume(ctx, "base"); err != nil || len(v.InUseBy) != 0 {
		t.Fatalf("after its users stopped: %+v, %v", v, err)
	}

	d := s.create(t, api.CreateSandboxRequest{Volumes: rw})
	if out, code := sh(t, d, "cat /srv/base/f; ls /srv/base"); code != 0 || out != "original\nf\n" {
		t.Fatalf("the volume after copy-on-write changes: %q, exit %d", out, code)
	}
}

// TestVolumeRefused: bad mounts are refused before anything is built.
func TestVolumeRefused(t *testing.T) {
	requireVolumes(t)
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, time.Minute)
	if _, err := s.client.CreateVolume(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	_, err := s.client.CreateVolume(ctx, "v", 0)
	wantAPICode(t, err, "volume_exists")
	_, err = s.client.CreateVolume(ctx, "Bad/Name", 0)
	wantAPICode(t, err, "invalid_volume_name")
	_, err = s.client.CreateVolume(ctx, "huge", 1<<40)
	wantAPICode(t, err, "invalid_volume_size")
	for _, tc := range []struct {
		mount api.VolumeMount
		code  string
	}{
		{api.VolumeMount{Volume: "nope", Path: "/x"}, "volume_not_found"},
		{api.VolumeMount{Volume: "v", Path: "/proc/x"}, "invalid_mount_path"},
		{api.VolumeMount{Volume: "v", Path: "/usr"}, "invalid_mount_path"},
		{api.VolumeMount{Volume: "v", Path: "/etc"}, "invalid_mount_path"},
		{api.VolumeMount{Volume: "v", Path: "/home/../tmp"}, "invalid_mount_path"},
		{api.VolumeMount{Volume: "v", Path: "/x", Mode: "ro"}, "invalid_volume_mode"},
	} {
		_, err := s.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{tc.mount}})
		if !sdk.IsCode(err, tc.code) {
			t.Errorf("mount %+v: %v, want %s", tc.mount, err, tc.code)
		}
	}
	if v, err := s.client.GetVolume(ctx, "v"); err != nil || len(v.InUseBy) != 0 {
		t.Fatalf("after refused creates: %+v, %v", v, err)
	}
}

// TestVolumeSurvivesRestart: a running sandbox keeps its volume mounted
// across a paddock restart and releases it on delete; one that died while
// paddock was down is released by the restart (its copy-on-write overlay
// removed), and nothing is left mounted (the data dir's leak check).
func TestVolumeSurvivesRestart(t *testing.T) {
	requireVolumes(t)
	dir := newDataDir(t)
	first := startStack(t, dir, stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	if _, err := first.client.CreateVolume(ctx, "keep", 0); err != nil {
		t.Fatal(err)
	}
	w := first.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "keep", Path: "/data"}}})
	if _, code := sh(t, w, "echo before > /data/f"); code != 0 {
		t.Fatal("write the volume")
	}
	deleteSandbox(t, w)
	cow := []api.VolumeMount{{Volume: "keep", Path: "/data", Mode: api.VolumeCopyOnWrite}}
	live := first.create(t, api.CreateSandboxRequest{Volumes: cow})
	lost := first.create(t, api.CreateSandboxRequest{Volumes: cow})
	if _, code := sh(t, live, "echo mine >> /data/f"); code != 0 {
		t.Fatal("write before the restart")
	}
	first.shutdown(t)
	if out, code := killAgent(t, dir, lost.ID); code != 0 {
		t.Fatalf("kill the agent of %s: %s", lost.ID, out)
	}

	second := startStack(t, dir, stackOptions{})
	sb, err := second.client.Get(ctx, live.ID)
	if err != nil || sb.Status != api.StatusRunning {
		t.Fatalf("after restart: %+v, %v", sb, err)
	}
	if out, code := sh(t, sb, "cat /data/f"); code != 0 || out != "before\nmine\n" {
		t.Fatalf("the volume after restart: %q, exit %d", out, code)
	}
	v, err := second.client.GetVolume(ctx, "keep")
	if err != nil || len(v.InUseBy) != 1 || v.InUseBy[0] != live.ID {
		t.Fatalf("after restart the volume is used by %+v (%v), want only %s", v.InUseBy, err, live.ID)
	}
	wantAPICode(t, second.client.DeleteVolume(ctx, "keep"), "volume_in_use")
	deleteSandbox(t, sb)
	if err := second.client.DeleteVolume(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeNamesPerTeam: through the API, two teams each create a volume
// "cache" and each sandbox mounts its own (both read-write at once, which
// one volume would refuse), sees only its team's data, and lists only its
// team's volume; a name only team A has is not found for team B, to get,
// delete or mount.
func TestVolumeNamesPerTeam(t *testing.T) {
	requireVolumes(t)
	testVolumeNamesPerTeam(t, stackOptions{})
}

// TestVolumeNamesPerTeamKubernetes: the same with volumes as
// PersistentVolumeClaims and sandboxes as Pods.
func TestVolumeNamesPerTeamKubernetes(t *testing.T) {
	testVolumeNamesPerTeam(t, onKubernetesWithVolumes(t, 2))
}

func testVolumeNamesPerTeam(t *testing.T, opts stackOptions) {
	s := startStack(t, newDataDir(t), opts)
	ctx := ctxFor(t, 3*time.Minute)
	a, b := s.newTenant(t, "alpha", store.RoleMember), s.newTenant(t, "beta", store.RoleMember)
	mnt := []api.VolumeMount{{Volume: "cache", Path: "/data"}}
	sbs := map[string]*sdk.Sandbox{}
	for _, tn := range []tenant{a, b} {
		v, err := tn.client.CreateVolume(ctx, "cache", 0)
		if err != nil || v.TeamID != tn.teamID {
			t.Fatalf("team %s creates cache: %+v, %v", tn.teamID, v, err)
		}
		sb, err := tn.client.Create(ctx, api.CreateSandboxRequest{Volumes: mnt})
		if err != nil {
			t.Fatalf("team %s mounts its cache: %v", tn.teamID, err)
		}
		sbs[tn.teamID] = sb
		if out, code := sh(t, sb, "cat /data/who 2>/dev/null; echo "+tn.teamID+" > /data/who"); code != 0 || out != "" {
			t.Fatalf("team %s's new volume holds %q (exit %d), want nothing", tn.teamID, out, code)
		}
	}
	for _, tn := range []tenant{a, b} {
		if out, code := sh(t, sbs[tn.teamID], "cat /data/who"); code != 0 || out != tn.teamID+"\n" {
			t.Fatalf("team %s's sandbox reads %q, exit %d", tn.teamID, out, code)
		}
		vols, err := tn.client.ListVolumes(ctx)
		if err != nil || len(vols) != 1 || vols[0].TeamID != tn.teamID || len(vols[0].InUseBy) != 1 || vols[0].InUseBy[0] != sbs[tn.teamID].ID {
			t.Fatalf("team %s lists %+v, %v", tn.teamID, vols, err)
		}
	}
	wantAPICode(t, func() error { _, err := a.client.CreateVolume(ctx, "cache", 0); return err }(), "volume_exists")

	// A name only team A has.
	if _, err := a.client.CreateVolume(ctx, "alpha-only", 0); err != nil {
		t.Fatal(err)
	}
	_, err := b.client.GetVolume(ctx, "alpha-only")
	wantAPICode(t, err, "volume_not_found")
	wantAPICode(t, b.client.DeleteVolume(ctx, "alpha-only"), "volume_not_found")
	_, err = b.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "alpha-only", Path: "/data"}}})
	wantAPICode(t, err, "volume_not_found")
	if _, err := a.client.GetVolume(ctx, "alpha-only"); err != nil {
		t.Fatalf("team A's volume after team B's attempts: %v", err)
	}

	// Deleting team B's cache leaves team A's, in use, as it was.
	deleteSandbox(t, sbs[b.teamID])
	if err := b.client.DeleteVolume(ctx, "cache"); err != nil {
		t.Fatal(err)
	}
	if v, err := a.client.GetVolume(ctx, "cache"); err != nil || len(v.InUseBy) != 1 {
		t.Fatalf("team A's cache after team B deleted its own: %+v, %v", v, err)
	}
	if out, code := sh(t, sbs[a.teamID], "cat /data/who"); code != 0 || out != a.teamID+"\n" {
		t.Fatalf("team A's sandbox reads %q, exit %d", out, code)
	}
}

// TestVolumeReadWriteKubernetes: on Kubernetes a volume is a claim that a
// sandbox Pod writes as the default user and the next Pod reads, with the
// API's rules as on the host (in use, busy, who mounts it); copy-on-write
// is refused.
func TestVolumeReadWriteKubernetes(t *testing.T) {
	s := startStack(t, newDataDir(t), onKubernetesWithVolumes(t, 1))
	ctx := ctxFor(t, 3*time.Minute)
	if _, err := s.client.CreateVolume(ctx, "deps", testVolumeSize); err != nil {
		t.Fatal(err)
	}
	_, err := s.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/deps", Mode: api.VolumeCopyOnWrite}}})
	wantAPICode(t, err, "volume_mode_unsupported")

	a := s.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/home/user/.cache/deps"}}})
	if out, code := sh(t, a, "echo built > /home/user/.cache/deps/lib.txt && stat -c %u /home/user/.cache/deps /home/user/.cache/deps/lib.txt"); code != 0 || out != "1000\n1000\n" {
		t.Fatalf("write into the volume as the sandbox user: %q, exit %d", out, code)
	}
	wantAPICode(t, s.client.DeleteVolume(ctx, "deps"), "volume_in_use")
	_, err = s.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/deps"}}})
	wantAPICode(t, err, "volume_busy")
	if v, err := s.client.GetVolume(ctx, "deps"); err != nil || len(v.InUseBy) != 1 || v.InUseBy[0] != a.ID {
		t.Fatalf("in use by: %+v, %v", v, err)
	}
	deleteSandbox(t, a)

	b := s.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "deps", Path: "/opt/deps"}}})
	if out, code := sh(t, b, "cat /opt/deps/lib.txt && echo more >> /opt/deps/lib.txt"); code != 0 || out != "built\n" {
		t.Fatalf("the next sandbox reads %q, exit %d", out, code)
	}
	deleteSandbox(t, b)
	if err := s.client.DeleteVolume(ctx, "deps"); err != nil {
		t.Fatal(err)
	}
	if vols, err := s.client.ListVolumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("volumes after delete: %+v, %v", vols, err)
	}
}

// TestVolumeLegacyAdopted: a volume an older paddock made with no team
// (which every team could mount) is the host admin's after a restart:
// moved into the bootstrap team's directory, mounted with its data by the
// host admin, not found for another team, whose own volume of the name is
// a different one.
func TestVolumeLegacyAdopted(t *testing.T) {
	requireVolumes(t)
	dir := newDataDir(t)
	first := startStack(t, dir, stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	if _, err := first.client.CreateVolume(ctx, "old", 0); err != nil {
		t.Fatal(err)
	}
	w := first.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "old", Path: "/data"}}})
	if _, code := sh(t, w, "echo legacy > /data/f"); code != 0 {
		t.Fatal("write the volume")
	}
	deleteSandbox(t, w)
	first.shutdown(t)

	// Back to the layout and metadata of a volume made before teams.
	vols := filepath.Join(dir, "volumes")
	legacy := filepath.Join(vols, "old")
	if err := os.Rename(filepath.Join(vols, "_teams", auth.BootstrapTeamID, "old"), legacy); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(legacy, "volume.json")
	data, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "teamId")
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, data, 0o600); err != nil {
		t.Fatal(err)
	}

	second := startStack(t, dir, stackOptions{})
	if _, err := os.Stat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the legacy volume was not moved: %v", err)
	}
	v, err := second.client.GetVolume(ctx, "old")
	if err != nil || v.TeamID != auth.BootstrapTeamID {
		t.Fatalf("the host admin's view of the legacy volume: %+v, %v", v, err)
	}
	other := second.newTenant(t, "other", store.RoleAdmin)
	_, err = other.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "old", Path: "/data"}}})
	wantAPICode(t, err, "volume_not_found")
	if _, err := other.client.CreateVolume(ctx, "old", 0); err != nil {
		t.Fatalf("another team creates its own volume of the name: %v", err)
	}
	sb, err := other.client.Create(ctx, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "old", Path: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := sh(t, sb, "ls /data"); out != "" {
		t.Fatalf("another team's volume of the name holds %q", out)
	}
	r := second.create(t, api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "old", Path: "/data"}}})
	if out, code := sh(t, r, "cat /data/f"); code != 0 || out != "legacy\n" {
		t.Fatalf("the host admin's sandbox reads %q from the adopted volume, exit %d", out, code)
	}
}
