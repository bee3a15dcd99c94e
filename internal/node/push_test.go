package node

import (
	"archive/tar"
	"os"
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

// TestSnapshotSharedFromLocalDriver: on a driver that runs this host's
// layers, a server with a snapshot registry pushes the snapshots of
// sandboxes of registry images too, so that other replicas can pull them;
// a snapshot of the host image, a pause's, or one whose push fails is kept
// on this host only, and taken all the same.
func TestSnapshotSharedFromLocalDriver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	for _, tc := range []struct {
		name   string
		repo   func(reg string) string
		pushed bool
	}{
		{"pushed", func(reg string) string { return reg + "/snaps" }, true},
		{"push fails", func(string) string { return "127.0.0.1:1/snaps" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			reg := imagetest.Registry(t)
			ref := reg + "/team/app:v1"
			imagetest.Push(t, ref, imagetest.Image(t, []string{"PATH=/bin"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
				imagetest.File(t, tw, "base", []byte("base"), 0o644)
			})))
			store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{Logger: discardLogger(),
				Guard: netguard.Guard{AllowPrivate: true}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			img, err := store.Pull(ctx, "", ref, image.PullOptions{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, func(c *Config) {
				c.Images = store
				c.Driver = snapDriver{c.Driver.(*fake.Driver)}
				c.SnapshotRegistry = tc.repo(reg)
			})
			sb, err := e.m.Create(ctx, sandbox.CreateRequest{Image: ref})
			if err != nil {
				t.Fatal(err)
			}
			if want := ref + "@" + img.Digest; sb.ImageRef != want {
				t.Errorf("ImageRef = %q, want %q", sb.ImageRef, want)
			}
			snap, err := e.m.Snapshot(ctx, sb.ID)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			if got := strings.HasPrefix(snap.Ref, tc.repo(reg)+"@sha256:"); got != tc.pushed {
				t.Fatalf("Ref = %q, pushed %v", snap.Ref, tc.pushed)
			}
			if tc.pushed {
				pushed, err := remote.Image(digestRef(t, snap.Ref))
				if err != nil {
					t.Fatal(err)
				}
				if layers, err := pushed.Layers(); err != nil || len(layers) != 2 {
					t.Errorf("the pushed snapshot has %d layers (%v), want the image's and its own", len(layers), err)
				}
				// A sandbox made from it stacks on its image: so does its
				// snapshot.
				from, err := e.m.Create(ctx, sandbox.CreateRequest{Snapshot: snap.ID})
				if err != nil {
					t.Fatal(err)
				}
				if from.ImageRef != snap.Ref {
					t.Errorf("ImageRef of a sandbox of the snapshot = %q, want %q", from.ImageRef, snap.Ref)
				}
			}

			// A pause's snapshot stays here: it resumes here.
			paused, err := e.m.Pause(ctx, sb.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ps, err := store.GetSnapshot(paused.Pause.Snapshot); err != nil || ps.Ref != "" {
				t.Errorf("pause snapshot: %+v, %v; want one kept here", ps, err)
			}
			// The host image is in no registry: kept here.
			host := e.create(t)
			if host.ImageRef != "" {
				t.Errorf("a host-image sandbox's ImageRef = %q", host.ImageRef)
			}
			hs, err := e.m.Snapshot(ctx, host.ID)
			if err != nil || hs.Ref != "" {
				t.Errorf("snapshot of a host-image sandbox: %+v, %v; want one kept here", hs, err)
			}
		})
	}
}
