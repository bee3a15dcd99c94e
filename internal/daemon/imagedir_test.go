package daemon

import (
	"archive/tar"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// openReplicaImages opens an image store of its own for the replica
// named replica, sharing refs through st's image directory.
func openReplicaImages(t *testing.T, st store.Store, replica string) *image.Store {
	t.Helper()
	return openReplicaImagesWith(t, st, replica, image.StoreOptions{})
}

// openReplicaImagesWith is openReplicaImages with opts (its caps), the
// logger and guard set.
func openReplicaImagesWith(t *testing.T, st store.Store, replica string, opts image.StoreOptions) *image.Store {
	t.Helper()
	opts.Logger, opts.Guard = slog.New(slog.DiscardHandler), netguard.Guard{AllowPrivate: true}
	s, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.ShareRefs(t.Context(), imageDirectory{s: st, replica: replica}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestImagesKnownToEveryReplica: two replicas share a store, each with its
// own image store. An image pulled through a is created from through b,
// which pulls it by the digest a recorded (the tag has moved since); an
// image imported through a is a clear error on b; another team does not
// see the first team's ref; a ref removed through b is gone for a too.
func TestImagesKnownToEveryReplica(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	imagesA, imagesB := openReplicaImages(t, st, "replica-a"), openReplicaImages(t, st, "replica-b")

	reg := imagetest.Registry(t)
	ref := reg + "/team/app:v1"
	v1img := imagetest.Image(t, []string{"V=1"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "version", []byte("1\n"), 0o644)
	}))
	imagetest.Push(t, ref, v1img)
	pulled, err := imagesA.Pull(ctx, "team-a", ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The tag moves in the registry; the directory still names v1.
	imagetest.Push(t, ref, imagetest.Image(t, []string{"V=2"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "version", []byte("2\n"), 0o644)
	})))
	if _, err := imagesB.Get("team-a", ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("replica b's own store before any create: %v, want not found", err)
	}

	mB, err := node.New(node.Config{DataDir: t.TempDir(), Driver: fake.NewDriver(t, fake.DriverConfig{}),
		MaxResources: sandbox.Resources{VCPUs: 2, MemoryMB: 4096, PIDs: 4096}, Logger: slog.New(slog.DiscardHandler),
		Records: newNodeRecords(st, "replica-b"), Images: imagesB})
	if err != nil {
		t.Fatal(err)
	}
	if err := mB.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mB.Close() })
	sb, err := mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", Image: ref})
	if err != nil {
		t.Fatalf("create through replica b from an image pulled through a: %v", err)
	}
	if sb.ImageDigest != pulled.Digest {
		t.Errorf("sandbox image digest = %s, want %s (the one replica a pulled)", sb.ImageDigest, pulled.Digest)
	}
	got, err := imagesB.Get("team-a", ref)
	if err != nil || got.Digest != pulled.Digest || got.Team != "team-a" {
		t.Fatalf("replica b's store after the create: %+v, %v", got, err)
	}
	if b, err := os.ReadFile(filepath.Join(got.Layers[0], "version")); err != nil || string(b) != "1\n" {
		t.Errorf("replica b's layer: %q, %v; want v1's", b, err)
	}

	// Another team: not found, as a local ref of the first team is.
	_, err = mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-b", Image: ref})
	if !errors.Is(err, sandbox.ErrNotFound) || sandbox.CodeOf(err) != "image_not_found" {
		t.Errorf("team b creating from team a's ref: %v, want image_not_found", err)
	}
	if _, err := imagesB.Get("team-b", ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("team b sees team a's ref in replica b's store: %v", err)
	}

	// Imported through a: in no registry, so b says where it is.
	archive := filepath.Join(t.TempDir(), "img.tar")
	tag, err := name.NewTag("example.com/imported/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, v1img); err != nil {
		t.Fatal(err)
	}
	if _, err := imagesA.Import(ctx, "team-a", archive); err != nil {
		t.Fatal(err)
	}
	_, err = mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", Image: "example.com/imported/app:v1"})
	if sandbox.CodeOf(err) != "image_on_other_replica" || !strings.Contains(err.Error(), "replica-a") || !strings.Contains(err.Error(), "import it again") {
		t.Errorf("create through b from an image imported through a: %v, want image_on_other_replica naming replica-a", err)
	}

	// Pulled again through a after the tag moved: b follows the directory.
	if err := mB.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	v2, err := imagesA.Pull(ctx, "team-a", ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb, err = mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", Image: ref})
	if err != nil || sb.ImageDigest != v2.Digest || v2.Digest == pulled.Digest {
		t.Fatalf("create through b after the ref moved through a: %s, %v; want digest %s", sb.ImageDigest, err, v2.Digest)
	}

	// Removed through b (which holds it now): gone from the directory, and
	// a, asked for it, drops its own.
	if err := mB.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := mB.RemoveImage(ctx, "team-a", ref); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetImageRef(ctx, "team-a", pulled.Ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the directory after the remove: %v, want not found", err)
	}
	if _, err := imagesA.Resolve(ctx, "team-a", ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("replica a resolving a ref removed through b: %v, want not found", err)
	}
	if _, err := imagesA.Get("team-a", ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("replica a still holds the removed ref: %v", err)
	}
	// The imported ref, only in a's store and the directory, is removed
	// through b too.
	if err := mB.RemoveImage(ctx, "team-a", "example.com/imported/app:v1"); err != nil {
		t.Errorf("remove through b of a ref only a holds: %v", err)
	}
	if _, err := st.GetImageRef(ctx, "team-a", "example.com/imported/app:v1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the directory after removing the imported ref: %v", err)
	}
}

// TestShareRefsRecordsEarlierRefs: a store that pulled before it had a
// directory records its refs in it at its first ShareRefs (as pulled from
// their own names), once; another replica then pulls them from there.
func TestShareRefsRecordsEarlierRefs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	ref := imagetest.Registry(t) + "/team/old:v1"
	imagetest.Push(t, ref, imagetest.Image(t, nil, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "old", []byte("old\n"), 0o644)
	})))
	dir := filepath.Join(t.TempDir(), "images")
	old, err := image.OpenStore(dir, image.StoreOptions{Logger: slog.New(slog.DiscardHandler), Guard: netguard.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := old.Pull(ctx, image.Published, ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()

	reopened, err := image.OpenStore(dir, image.StoreOptions{Logger: slog.New(slog.DiscardHandler), Guard: netguard.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reopened.Close() })
	if err := reopened.ShareRefs(ctx, imageDirectory{s: st, replica: "replica-a"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetImageRef(ctx, image.Published, pulled.Ref)
	if err != nil || got.Digest != pulled.Digest || got.Source != pulled.Ref || got.Replica != "replica-a" {
		t.Fatalf("the directory after ShareRefs: %+v, %v", got, err)
	}
	// Once: a ref removed from the directory since is not recorded again.
	if _, err := st.DeleteImageRef(ctx, image.Published, pulled.Ref, ""); err != nil {
		t.Fatal(err)
	}
	if err := reopened.ShareRefs(ctx, imageDirectory{s: st, replica: "replica-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetImageRef(ctx, image.Published, pulled.Ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("a second ShareRefs recorded the ref again: %v", err)
	}

	// Recorded again (as a pull through a would), another replica pulls
	// the published ref for any team.
	if err := st.PutImageRef(ctx, store.ImageRef{Scope: image.Published, Ref: pulled.Ref, Digest: pulled.Digest, Source: pulled.Ref, Replica: "replica-a"}); err != nil {
		t.Fatal(err)
	}
	b := openReplicaImages(t, st, "replica-b")
	img, err := b.Resolve(ctx, "team-x", ref)
	if err != nil || img.Digest != pulled.Digest || img.Team != image.Published {
		t.Fatalf("another replica resolving the published ref: %+v, %v", img, err)
	}
}
