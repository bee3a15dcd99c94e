// Package imagetest builds small OCI images for tests and benchmarks: layers
// written in code, a userland from Debian's busybox-static, and a registry
// on 127.0.0.1 to push them to. It is test support, like leakcheck: no
// production code imports it.
package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is Debian's busybox-static: one static binary is a whole
// userland (CI installs it).
const BusyboxPath = "/bin/busybox"

// Layer is a layer whose tar fill writes.
func Layer(tb testing.TB, fill func(*tar.Writer)) v1.Layer {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	fill(tw)
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// Dir writes a directory entry (name ends with "/").
func Dir(tb testing.TB, tw *tar.Writer, name string) {
	tb.Helper()
	write(tb, tw, &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
}

// File writes a regular file.
func File(tb testing.TB, tw *tar.Writer, name string, data []byte, mode int64) {
	tb.Helper()
	write(tb, tw, &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data)
}

// Symlink writes a symbolic link.
func Symlink(tb testing.TB, tw *tar.Writer, name, target string) {
	tb.Helper()
	write(tb, tw, &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, nil)
}

func write(tb testing.TB, tw *tar.Writer, hdr *tar.Header, data []byte) {
	tb.Helper()
	if err := tw.WriteHeader(hdr); err != nil {
		tb.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		tb.Fatal(err)
	}
}

// WriteBusybox writes bin/busybox, a link per applet in bin/, and an
// etc/passwd naming root and the sandbox's user (1000). It skips tb when the
// host lacks busybox-static.
func WriteBusybox(tb testing.TB, tw *tar.Writer, applets ...string) {
	tb.Helper()
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		tb.Skipf("needs Debian's busybox-static at %s (apt-get install busybox-static): %v", BusyboxPath, err)
	}
	Dir(tb, tw, "bin/")
	Dir(tb, tw, "etc/")
	File(tb, tw, "bin/busybox", bb, 0o755)
	for _, applet := range applets {
		Symlink(tb, tw, "bin/"+applet, "busybox")
	}
	File(tb, tw, "etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"), 0o644)
}

// Image stacks layers (bottom first) into a linux/amd64 image with env
// and working dir.
func Image(tb testing.TB, env []string, workdir string, layers ...v1.Layer) v1.Image {
	tb.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		tb.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = env
	cf.Config.WorkingDir = workdir
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		tb.Fatal(err)
	}
	return img
}

// WithUser returns img with its config's User set (Docker's USER).
func WithUser(tb testing.TB, img v1.Image, user string) v1.Image {
	tb.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.User = user
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		tb.Fatal(err)
	}
	return img
}

// Registry serves an in-memory registry on 127.0.0.1 until tb ends and
// returns its host:port.
func Registry(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push writes img to ref over plain HTTP.
func Push(tb testing.TB, ref string, img v1.Image) {
	tb.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		tb.Fatalf("push %s: %v", ref, err)
	}
}
