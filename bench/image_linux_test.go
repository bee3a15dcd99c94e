package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// busyboxPath is Debian's busybox-static, the userland of the images the
// benchmarks build (CI installs it).
const busyboxPath = "/bin/busybox"

// BenchmarkCreateFromImage times create → `true` finished in a sandbox made
// from an OCI image already in the store (two layers: busybox and a small
// app layer), interleaved with the same on the host image, so the figures
// compare within one run.
func BenchmarkCreateFromImage(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	reg := startRegistry(b)
	ref := reg + "/bench/busybox:1"
	pushImage(b, ref, busyboxImage(b))
	store := openStore(b, e.dataDir)
	img, err := store.Pull(ctx, ref, image.PullOptions{}, nil)
	if err != nil {
		b.Fatalf("pull: %v", err)
	}
	rootfs := store.Rootfs(img)

	var ours, base []time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench-img-%d", i)
		start := time.Now()
		cl, err := e.driver.Create(ctx, runtime.Spec{ID: id, Image: img.Ref, Rootfs: rootfs, Resources: benchResources})
		if err != nil {
			b.Fatalf("create from image: %v", err)
		}
		if err := run(ctx, cl, "/bin/true"); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		b.StopTimer()
		e.destroy(b, id)

		hid := fmt.Sprintf("bench-host-%d", i)
		start = time.Now()
		cl = e.create(b, hid)
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(start))
		e.destroy(b, hid)
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(ours, 50)), "image-p50-ms")
	b.ReportMetric(ms(pct(ours, 99)), "image-p99-ms")
	b.ReportMetric(ms(pct(base, 50)), "host-p50-ms")
	b.ReportMetric(ms(pct(base, 99)), "host-p99-ms")
	b.ReportMetric(ms(pct(ours, 50))/ms(pct(base, 50)), "ratio-p50")
}

// BenchmarkPull times pulling and unpacking a 100 MB image (four layers of
// 25 MB of random bytes, so gzip cannot shrink them) from a registry on
// 127.0.0.1 into an empty store, beside the baseline of only downloading
// the same compressed blobs from the same registry.
func BenchmarkPull(b *testing.B) {
	if _, err := os.Stat(busyboxPath); err != nil {
		b.Skipf("needs Debian's busybox-static at %s: %v", busyboxPath, err)
	}
	ctx := context.Background()
	reg := startRegistry(b)
	ref := reg + "/bench/big:1"
	const layers, layerBytes = 4, 25 << 20
	img := empty.Image
	for i := range layers {
		data := make([]byte, layerBytes)
		rand.Read(data)
		l := tarLayer(b, func(tw *tar.Writer) { tarFile(b, tw, fmt.Sprintf("data/%d.bin", i), data, 0o644) })
		var err error
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	pushImage(b, ref, img)
	var total int64
	ls, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range ls {
		n, err := l.Size()
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}

	var pull, download time.Duration
	for b.Loop() {
		dir, err := os.MkdirTemp("", "pb-pull-")
		if err != nil {
			b.Fatal(err)
		}
		store := openStore(b, dir)
		start := time.Now()
		if _, err := store.Pull(ctx, ref, image.PullOptions{}, nil); err != nil {
			b.Fatalf("pull: %v", err)
		}
		pull += time.Since(start)
		b.StopTimer()
		os.RemoveAll(dir)
		download += downloadBlobs(b, ref)
		b.StartTimer()
	}
	mb := float64(total) / (1 << 20)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mb, "image-MiB")
	b.ReportMetric(mb*float64(b.N)/pull.Seconds(), "pull-MiB/s")
	b.ReportMetric(mb*float64(b.N)/download.Seconds(), "download-MiB/s")
	b.ReportMetric(download.Seconds()/pull.Seconds(), "ratio")
}

// downloadBlobs fetches every layer blob of ref and discards it.
func downloadBlobs(b *testing.B, ref string) time.Duration {
	b.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	img, err := remote.Image(r)
	if err != nil {
		b.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
	return time.Since(start)
}

func startRegistry(b *testing.B) string {
	b.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func openStore(b *testing.B, dataDir string) *image.Store {
	b.Helper()
	s, err := image.OpenStore(filepath.Join(dataDir, "images"), image.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func pushImage(b *testing.B, ref string, img v1.Image) {
	b.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		b.Fatalf("push %s: %v", ref, err)
	}
}

// busyboxImage is busybox with a few applets, and a 1 MB app layer above it.
func busyboxImage(b *testing.B) v1.Image {
	b.Helper()
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		b.Skipf("needs Debian's busybox-static at %s (apt-get install busybox-static): %v", busyboxPath, err)
	}
	base := tarLayer(b, func(tw *tar.Writer) {
		tarDir(b, tw, "bin/")
		tarDir(b, tw, "etc/")
		tarFile(b, tw, "bin/busybox", bb, 0o755)
		for _, applet := range []string{"sh", "true", "ls", "cat"} {
			if err := tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}); err != nil {
				b.Fatal(err)
			}
		}
		tarFile(b, tw, "etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"), 0o644)
	})
	app := make([]byte, 1<<20)
	rand.Read(app)
	top := tarLayer(b, func(tw *tar.Writer) {
		tarDir(b, tw, "app/")
		tarFile(b, tw, "app/blob", app, 0o644)
	})
	img, err := mutate.AppendLayers(empty.Image, base, top)
	if err != nil {
		b.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		b.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	return img
}

func tarLayer(b *testing.B, fill func(*tar.Writer)) v1.Layer {
	b.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	fill(tw)
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func tarDir(b *testing.B, tw *tar.Writer, name string) {
	b.Helper()
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		b.Fatal(err)
	}
}

func tarFile(b *testing.B, tw *tar.Writer, name string, data []byte, mode int64) {
	b.Helper()
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}); err != nil {
		b.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		b.Fatal(err)
	}
}
