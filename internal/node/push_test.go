package node

import (
	"archive/tar"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// registryDriver is a snapDriver whose sandboxes run registry images
// (runtime.RegistryImager), as the Kubernetes driver's do.
type registryDriver struct {
	snapDriver
	host string
}

func (d registryDriver) HostImageRef() string { return d.host }

// pushEnv is a manager over a registryDriver whose host image is in a
// loopback registry; repo gives the snapshot registry's repository from
// that registry's host ("" for none).
func pushEnv(t *testing.T, repo func(reg string) string) (*env, *image.Store, string) {
	t.Helper()
	reg := imagetest.Registry(t)
	imagetest.Push(t, reg+"/host:1", imagetest.Image(t, []string{"PATH=/bin"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "base", []byte("base"), 0o644)
	})))
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{Logger: discardLogger(),
		// So that the failing push below fails at its registry, not at
		// the base image from another one.
		Guard: netguard.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Images = store
		c.Driver = registryDriver{snapDriver{c.Driver.(*fake.Driver)}, reg + "/host:1"}
		c.SnapshotRegistry = repo(reg)
	})
	return e, store, reg
}

// TestSnapshotPushed: on a runtime that runs registry images a snapshot is
// pushed on top of the image its sandbox runs, and sandboxes made from it
// (created, forked, resumed) run the pushed image.
func TestSnapshotPushed(t *testing.T) {
	e, store, reg := pushEnv(t, func(reg string) string { return reg + "/snaps" })
	ctx := t.Context()
	src := e.create(t)
	if src.ImageRef != reg+"/host:1" {
		t.Errorf("a host-image sandbox's ImageRef = %q, want the driver's host image", src.ImageRef)
	}
	if err := e.m.CanSnapshot(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	snap, err := e.m.Snapshot(ctx, src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(snap.Ref, reg+"/snaps@sha256:") {
		t.Fatalf("Ref = %q", snap.Ref)
	}
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{Snapshot: snap.ID})
	if err != nil {
		t.Fatal(err)
	}
	if spec := e.d.Spec(sb.ID); spec.Rootfs == nil || spec.Rootfs.Ref != snap.Ref || !spec.Rootfs.OnHost {
		t.Errorf("the driver got rootfs %+v, want Ref %s", spec.Rootfs, snap.Ref)
	}
	if sb.ImageRef != snap.Ref {
		t.Errorf("ImageRef = %q, want %q", sb.ImageRef, snap.Ref)
	}

	// A fork of it stacks on its snapshot's image: three layers.
	fork, err := e.m.Fork(ctx, sb.ID, sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	forkSnap, err := store.GetSnapshot(fork.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(digestRef(t, forkSnap.Ref))
	if err != nil {
		t.Fatal(err)
	}
	if layers, err := img.Layers(); err != nil || len(layers) != 3 {
		t.Errorf("a snapshot of a snapshot has %d layers (%v), want 3", len(layers), err)
	}

	// Paused and resumed: the sandbox runs its pause snapshot's image.
	paused, err := e.m.Pause(ctx, fork.ID)
	if err != nil {
		t.Fatal(err)
	}
	pauseSnap, err := store.GetSnapshot(paused.Pause.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := e.m.Resume(ctx, fork.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.ImageRef != pauseSnap.Ref || e.d.Spec(fork.ID).Rootfs.Ref != pauseSnap.Ref {
		t.Errorf("resumed ImageRef %q, rootfs %+v, want %s", resumed.ImageRef, e.d.Spec(fork.ID).Rootfs, pauseSnap.Ref)
	}

	// Deleting a snapshot deletes its image.
	if err := e.m.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(digestRef(t, snap.Ref)); err == nil {
		t.Error("a deleted snapshot's image is still in the registry")
	}
}

// TestSnapshotPushRefused: without a snapshot registry such a runtime's
// snapshots are refused before anything is copied, and a push that fails
// fails the snapshot with nothing recorded and the sandbox untouched.
func TestSnapshotPushRefused(t *testing.T) {
	t.Run("no registry", func(t *testing.T) {
		e, store, _ := pushEnv(t, func(string) string { return "" })
		sb := e.create(t)
		wantErr(t, e.m.CanSnapshot(t.Context(), sb.ID), sandbox.ErrUnsupported, "snapshot_registry_unset")
		_, err := e.m.Snapshot(t.Context(), sb.ID)
		wantErr(t, err, sandbox.ErrUnsupported, "snapshot_registry_unset")
		_, err = e.m.Pause(t.Context(), sb.ID)
		wantErr(t, err, sandbox.ErrUnsupported, "snapshot_registry_unset")
		if n := len(store.Snapshots()); n != 0 {
			t.Errorf("%d snapshots recorded", n)
		}
		if got := e.get(t, sb.ID); got.State != sandbox.Running {
			t.Errorf("sandbox is %s", got.State)
		}
	})
	t.Run("push fails", func(t *testing.T) {
		e, store, reg := pushEnv(t, func(string) string { return "127.0.0.1:1/snaps" })
		sb := e.create(t)
		_, err := e.m.Snapshot(t.Context(), sb.ID)
		wantErr(t, err, sandbox.ErrUnavailable, "snapshot_push_failed")
		if n := len(store.Snapshots()); n != 0 {
			t.Errorf("%d snapshots recorded", n)
		}
		if got := e.get(t, sb.ID); got.State != sandbox.Running || got.ImageRef != reg+"/host:1" {
			t.Errorf("sandbox after a failed push: %+v", got)
		}
	})
}

func digestRef(t *testing.T, ref string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
