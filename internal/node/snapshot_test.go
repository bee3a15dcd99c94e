package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// snapDriver gives the fake driver the Snapshotter power.
type snapDriver struct{ *fake.Driver }

func (d snapDriver) Snapshot(ctx context.Context, id string, _ *runtime.Rootfs, dst string, maxBytes int64) (int64, error) {
	return 2, os.WriteFile(filepath.Join(dst, "from-"+id), []byte("hi"), 0o644)
}

func TestSnapshotAndFork(t *testing.T) {
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Images = store
		c.Driver = snapDriver{c.Driver.(*fake.Driver)}
	})
	ctx := t.Context()
	src, err := e.m.Create(ctx, sandbox.CreateRequest{Env: map[string]string{"A": "src"}, Resources: sandbox.Resources{VCPUs: 2}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := e.m.Snapshot(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Source != src.ID || !snap.OnHost || len(snap.Layers) != 1 || snap.Size != 2 {
		t.Errorf("snapshot = %+v", snap)
	}

	_, err = e.m.Create(ctx, sandbox.CreateRequest{Image: "host", Snapshot: snap.ID})
	wantErr(t, err, sandbox.ErrInvalid, "image_and_snapshot")
	_, err = e.m.Create(ctx, sandbox.CreateRequest{Snapshot: "snap-nope"})
	wantErr(t, err, sandbox.ErrNotFound, "snapshot_not_found")

	sb, err := e.m.Create(ctx, sandbox.CreateRequest{Snapshot: snap.ID, Env: map[string]string{"B": "req"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Snapshot != snap.ID || sb.Env["A"] != "src" || sb.Env["B"] != "req" || len(sb.ImageLayers) != 1 || sb.ImageLayers[0] != snap.Layers[0] {
		t.Errorf("record = %+v", sb)
	}
	if !e.m.SnapshotInUse(snap.ID) || !e.m.LayerInUse(snap.Layers[0]) {
		t.Error("a running sandbox from the snapshot must hold it")
	}

	fork, err := e.m.Fork(ctx, src.ID, sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fork.Snapshot == "" || fork.Snapshot == snap.ID || fork.Resources.VCPUs != 2 {
		t.Errorf("fork = %+v", fork)
	}
	_, err = e.m.Fork(ctx, src.ID, sandbox.CreateRequest{Image: "host"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_fork")

	err = e.m.DeleteSnapshot(ctx, snap.ID)
	wantErr(t, err, sandbox.ErrConflict, "snapshot_in_use")
	if err := e.m.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if e.m.SnapshotInUse(snap.ID) {
		t.Error("a deleted sandbox still holds the snapshot")
	}
	if err := e.m.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.GetSnapshot(snap.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("deleted snapshot: %v", err)
	}
	// Its layer is collected: nothing stacks it any more.
	if _, err := os.Stat(snap.Layers[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the snapshot's layer is left: %v", err)
	}
	wantErr(t, e.m.DeleteSnapshot(ctx, snap.ID), sandbox.ErrNotFound, "snapshot_not_found")
}

func TestSnapshotUnsupported(t *testing.T) {
	e := newEnv(t, nil)
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Snapshot(t.Context(), sb.ID)
	wantErr(t, err, sandbox.ErrUnsupported, "snapshots_unsupported")
}

// runningOnlyDriver snapshots running sandboxes only, as the Kubernetes
// driver does (Stop deletes the Pod, and its changes with it).
type runningOnlyDriver struct{ snapDriver }

func (d runningOnlyDriver) Capabilities() runtime.Capabilities {
	c := d.snapDriver.Capabilities()
	c.Snapshot, c.SnapshotRunningOnly = true, true
	return c
}

// TestCanSnapshotRunningOnly: a caller about to stop a sandbox to snapshot
// it learns first that its runtime cannot snapshot a stopped one, while
// a running one snapshots and pauses (snapshot, then stop) as anywhere.
func TestCanSnapshotRunningOnly(t *testing.T) {
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Images = store
		c.Driver = runningOnlyDriver{snapDriver{c.Driver.(*fake.Driver)}}
	})
	ctx := t.Context()
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.m.CanSnapshot(ctx, sb.ID), sandbox.ErrUnsupported, "snapshot_of_stopped_unsupported")
	if _, err := e.m.Snapshot(ctx, sb.ID); err != nil {
		t.Errorf("snapshot of a running sandbox: %v", err)
	}
	paused, err := e.m.Pause(ctx, sb.ID)
	if err != nil || paused.Pause == nil || paused.Pause.Snapshot == "" {
		t.Errorf("pause = %+v, %v", paused.Pause, err)
	}
}
