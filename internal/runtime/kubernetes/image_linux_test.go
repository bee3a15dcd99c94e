package kubernetes

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// pushed are the images image pushed, by reference, for restore.
var pushed sync.Map // string -> v1.Image

// image pushes an image of layers (lowest first) to the test registry and
// unpacks it into an image store on this host, as the node resolves a
// registry image for a Pod: its registry name, and its layers here for a
// snapshot to tell deletions from.
func (e *env) image(t *testing.T, layers ...v1.Layer) *runtime.Rootfs {
	t.Helper()
	img := imagetest.Image(t, []string{"PATH=/bin"}, "/", layers...)
	ref := e.registry + "/paddock/layers:" + strings.ToLower(strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()))
	imagetest.Push(t, ref, img)
	pushed.Store(ref, img)
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	archive := filepath.Join(t.TempDir(), "img.tar")
	tag, err := name.NewTag("example.com/k8stest/layers:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	local, err := store.Import(t.Context(), image.Published, archive)
	if err != nil {
		t.Fatal(err)
	}
	return &runtime.Rootfs{Ref: ref, Lowers: local.Lowerdirs()}
}

// restore pushes base's image with the snapshot layer dir on top, as a
// registry image: what a Pod starts from a snapshot as (the node's way to
// publish a snapshot is not this package's; this is the test's own).
// A snapshot of the host image stacks on the host image, read from the
// registry, and runs with its binds (OnHost).
func (e *env) restore(t *testing.T, base *runtime.Rootfs, dir string) *runtime.Rootfs {
	t.Helper()
	if base == nil {
		r, err := name.ParseReference(e.hostImage, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		host, err := remote.Image(r)
		if err != nil {
			t.Fatalf("restore: the host image %s: %v", e.hostImage, err)
		}
		out, err := mutate.AppendLayers(host, overlayLayer(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		ref := e.registry + "/paddock/layers:" + strings.ToLower(strings.NewReplacer("/", "-", "#", "-").Replace(t.Name())) + "-restored"
		imagetest.Push(t, ref, out)
		return &runtime.Rootfs{Ref: ref, Lowers: []string{dir}, OnHost: true}
	}
	img, ok := pushed.Load(base.Ref)
	if !ok {
		t.Fatalf("restore: %s was not made by image", base.Ref)
	}
	out, err := mutate.AppendLayers(img.(v1.Image), overlayLayer(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	ref := base.Ref + "-restored"
	imagetest.Push(t, ref, out)
	return &runtime.Rootfs{Ref: ref}
}

// overlayLayer is the layer dir (overlayfs's form) as an image layer, as
// the node pushes a snapshot's (image.WriteLayerTar).
func overlayLayer(t *testing.T, dir string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	if err := image.WriteLayerTar(t.Context(), &buf, dir); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}
