package bench

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// BenchmarkCreateFromImage times create → `true` finished in a sandbox made
// from an OCI image already in the store (two layers: busybox and a small
// app layer), interleaved with the same on the host image, so the figures
// compare within one run.
func BenchmarkCreateFromImage(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	ref := imagetest.Registry(b) + "/bench/busybox:1"
	imagetest.Push(b, ref, busyboxImage(b))
	store := openStore(b, e.dataDir)
	img, err := store.Pull(ctx, image.Published, ref, image.PullOptions{}, nil)
	if err != nil {
		b.Fatalf("pull: %v", err)
	}
	rootfs := &runtime.Rootfs{Lowers: img.Lowerdirs()}

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
	ctx := context.Background()
	ref := imagetest.Registry(b) + "/bench/big:1"
	const layers, layerBytes = 4, 25 << 20
	img := empty.Image
	for i := range layers {
		data := make([]byte, layerBytes)
		rand.Read(data)
		l := imagetest.Layer(b, func(tw *tar.Writer) { imagetest.File(b, tw, fmt.Sprintf("data/%d.bin", i), data, 0o644) })
		var err error
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	imagetest.Push(b, ref, img)
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
		if _, err := store.Pull(ctx, image.Published, ref, image.PullOptions{}, nil); err != nil {
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

func openStore(b *testing.B, dataDir string) *image.Store {
	b.Helper()
	// The benchmarks' registry listens on 127.0.0.1.
	s, err := image.OpenStore(filepath.Join(dataDir, "images"), image.StoreOptions{Logger: slog.New(slog.DiscardHandler),
		Guard: netguard.Guard{AllowPrivate: true}})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// busyboxImage is busybox with a few applets, and a 1 MB app layer above it.
func busyboxImage(b *testing.B) v1.Image {
	b.Helper()
	base := imagetest.Layer(b, func(tw *tar.Writer) { imagetest.WriteBusybox(b, tw, "sh", "true", "ls", "cat") })
	app := make([]byte, 1<<20)
	rand.Read(app)
	top := imagetest.Layer(b, func(tw *tar.Writer) {
		imagetest.Dir(b, tw, "app/")
		imagetest.File(b, tw, "app/blob", app, 0o644)
	})
	return imagetest.Image(b, []string{"PATH=/bin"}, "", base, top)
}
