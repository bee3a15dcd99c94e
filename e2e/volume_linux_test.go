package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
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
