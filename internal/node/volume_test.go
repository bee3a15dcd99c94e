package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume"
)

// fakeVolumes is a hand-written Volumes that keeps who holds what.
type fakeVolumes struct {
	mu   sync.Mutex // guards the fields below
	held map[string][]sandbox.VolumeMount
	// refuse makes Acquire of this volume fail as a busy volume would.
	refuse string
	// users records SetUser: sandbox id -> "uid:gid".
	users map[string]string
}

func newFakeVolumes() *fakeVolumes { return &fakeVolumes{held: map[string][]sandbox.VolumeMount{}} }

func (f *fakeVolumes) Acquire(ctx context.Context, id, teamID string, m sandbox.VolumeMount) (volume.Dirs, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.Volume == f.refuse {
		return volume.Dirs{}, sandbox.Errorf(sandbox.ErrConflict, "volume_busy", "volume %q is busy", m.Volume)
	}
	f.held[id] = append(f.held[id], m)
	d := volume.Dirs{Source: "/host/volumes/" + m.Volume}
	if m.Mode == sandbox.VolumeCopyOnWrite {
		d.Upper, d.Work = "/host/cow/"+id+"/upper", "/host/cow/"+id+"/work"
	}
	return d, nil
}

func (f *fakeVolumes) Release(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, id)
	return nil
}

func (f *fakeVolumes) SetUser(ctx context.Context, id string, uid, gid uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users == nil {
		f.users = map[string]string{}
	}
	f.users[id] = fmt.Sprintf("%d:%d", uid, gid)
	return nil
}

func (f *fakeVolumes) Holders() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.held))
}

func (f *fakeVolumes) holds(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held[id]) > 0
}

func TestVolumesUnsupported(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{Volumes: []sandbox.VolumeMount{{Volume: "cache", Path: "/cache"}}})
	wantErr(t, err, sandbox.ErrUnsupported, "volumes_unsupported")
	if sbs, _, _ := e.m.List(t.Context(), sandbox.ListOptions{}); len(sbs) != 0 {
		t.Fatalf("a refused request left %d records", len(sbs))
	}
}

func TestVolumesInvalid(t *testing.T) {
	vols := newFakeVolumes()
	e := newEnv(t, func(c *Config) { c.Volumes = vols })
	many := make([]sandbox.VolumeMount, maxVolumes+1)
	for i := range many {
		many[i] = sandbox.VolumeMount{Volume: string(rune('a' + i)), Path: "/v/" + string(rune('a'+i))}
	}
	for _, tc := range []struct {
		name string
		vols []sandbox.VolumeMount
		code string
	}{
		{"bad name", []sandbox.VolumeMount{{Volume: "../x", Path: "/c"}}, "invalid_volume_name"},
		{"bad mode", []sandbox.VolumeMount{{Volume: "c", Path: "/c", Mode: "ro"}}, "invalid_volume_mode"},
		{"relative path", []sandbox.VolumeMount{{Volume: "c", Path: "c"}}, "invalid_mount_path"},
		{"unclean path", []sandbox.VolumeMount{{Volume: "c", Path: "/a/../proc"}}, "invalid_mount_path"},
		{"root", []sandbox.VolumeMount{{Volume: "c", Path: "/"}}, "invalid_mount_path"},
		{"twice", []sandbox.VolumeMount{{Volume: "c", Path: "/a"}, {Volume: "c", Path: "/b"}}, "duplicate_volume"},
		{"nested", []sandbox.VolumeMount{{Volume: "c", Path: "/a"}, {Volume: "d", Path: "/a/b"}}, "invalid_mount_path"},
		{"too many", many, "too_many_volumes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Create(t.Context(), sandbox.CreateRequest{Volumes: tc.vols})
			wantErr(t, err, sandbox.ErrInvalid, tc.code)
		})
	}
	if h := vols.Holders(); len(h) != 0 {
		t.Fatalf("invalid requests acquired volumes: %v", h)
	}
}

func TestVolumesAcquiredAndReleased(t *testing.T) {
	vols := newFakeVolumes()
	d := fake.NewDriver(t, fake.DriverConfig{})
	e := &env{d: d, clock: fake.NewClock(epoch), dir: t.TempDir()}
	e.m = e.manager(t, func(c *Config) { c.Volumes = vols })
	ctx := t.Context()
	req := sandbox.CreateRequest{Volumes: []sandbox.VolumeMount{
		{Volume: "npm", Path: "/home/user/.npm"},
		{Volume: "base", Path: "/opt/base", Mode: sandbox.VolumeCopyOnWrite},
	}}

	sb, err := e.m.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := []runtime.Mount{{Source: "/host/volumes/npm", Dest: "/home/user/.npm"},
		{Source: "/host/volumes/base", Dest: "/opt/base", Upper: "/host/cow/" + sb.ID + "/upper", Work: "/host/cow/" + sb.ID + "/work"}}
	if got := d.Spec(sb.ID).Mounts; !slices.Equal(got, want) {
		t.Fatalf("driver got mounts %v, want %v", got, want)
	}
	if sb.Volumes[0].Mode != sandbox.VolumeReadWrite || sb.Volumes[1].Mode != sandbox.VolumeCopyOnWrite {
		t.Fatalf("recorded volumes %v: want the default mode filled", sb.Volumes)
	}
	if !vols.holds(sb.ID) {
		t.Fatal("volumes not acquired")
	}
	if _, err := e.m.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if vols.holds(sb.ID) {
		t.Fatal("stop did not release the volumes")
	}

	sb2, err := e.m.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete(ctx, sb2.ID); err != nil {
		t.Fatal(err)
	}
	if vols.holds(sb2.ID) {
		t.Fatal("delete did not release the volumes")
	}

	// The driver fails: what was acquired goes back.
	d.SetCreateErr(errors.New("boom"))
	failed, err := e.m.Create(ctx, req)
	if err == nil || failed.State != sandbox.Failed {
		t.Fatalf("create with a failing driver: %v, %s", err, failed.State)
	}
	if vols.holds(failed.ID) {
		t.Fatal("a failed create kept its volumes")
	}
	d.SetCreateErr(nil)

	// The second volume is busy: the first is given back, the error says why.
	vols.refuse = "base"
	busy, err := e.m.Create(ctx, req)
	wantErr(t, err, sandbox.ErrConflict, "volume_busy")
	if busy.State != sandbox.Failed || vols.holds(busy.ID) || d.Called("create", busy.ID) {
		t.Fatalf("busy volume: state %s, holds %v, driver called %v", busy.State, vols.holds(busy.ID), d.Called("create", busy.ID))
	}
}

func TestVolumesReconcile(t *testing.T) {
	vols := newFakeVolumes()
	e := newEnv(t, func(c *Config) { c.Volumes = vols })
	ctx := t.Context()
	req := sandbox.CreateRequest{Volumes: []sandbox.VolumeMount{{Volume: "cache", Path: "/cache", Mode: sandbox.VolumeCopyOnWrite}}}
	live, err := e.m.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := e.m.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// A holder the node has no record of (a crash between two writes).
	if _, err := vols.Acquire(ctx, "sb-ghost", "", sandbox.VolumeMount{Volume: "cache", Path: "/c"}); err != nil {
		t.Fatal(err)
	}
	e.m.Close()
	e.d.Forget(dead.ID)

	e.m = e.manager(t, func(c *Config) { c.Volumes = vols })
	if got := vols.Holders(); !slices.Equal(got, []string{live.ID}) {
		t.Fatalf("holders after restart: %v, want only the re-adopted %s", got, live.ID)
	}
	if e.get(t, dead.ID).State != sandbox.Failed {
		t.Fatal("the lost sandbox is not failed")
	}
}
