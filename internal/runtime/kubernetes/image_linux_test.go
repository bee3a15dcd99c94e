package kubernetes

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
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

// overlayLayer is the layer dir (overlayfs's form) as an image layer:
// whiteouts become .wh. entries and opaque directories .wh..wh..opq.
func overlayLayer(t *testing.T, dir string) v1.Layer {
	t.Helper()
	return imagetest.Layer(t, func(tw *tar.Writer) {
		err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err != nil || p == dir {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
				return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(filepath.Dir(rel), ".wh."+fi.Name()), Mode: 0o644})
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			}
			hdr, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			hdr.Name, hdr.Uid, hdr.Gid = rel, int(st.Uid), int(st.Gid)
			if fi.IsDir() {
				hdr.Name += "/"
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if fi.IsDir() {
				buf := make([]byte, 8)
				if n, err := unix.Lgetxattr(p, layer.OpaqueXattr, buf); err == nil && string(buf[:n]) == "y" {
					return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", Mode: 0o644})
				}
				return nil
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = io.Copy(tw, f)
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
