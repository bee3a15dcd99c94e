package bench

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// BenchmarkSnapshot times snapshotting a sandbox that wrote 100 MB (the
// copy of its upper dir, the sandbox frozen meanwhile) and creating a
// sandbox from the snapshot until its agent answers.
func BenchmarkSnapshot(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	store, err := image.OpenStore(filepath.Join(e.dataDir, "images"), image.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	const src = "sb-bench-snap-src"
	cl := e.create(b, src)
	b.Cleanup(func() { e.destroy(b, src) })
	// Written from inside, as a sandbox's own writes land in its upper dir
	// (the host never follows a path into a sandbox's root).
	if err := run(ctx, cl, "sh", "-c", "head -c 104857600 /dev/urandom > ~/big"); err != nil {
		b.Fatal(err)
	}

	var snapTook, restoreTook time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		snap, err := store.AddSnapshot(ctx, image.NewSnapshot{Source: src, Image: sandbox.HostImage, OnHost: true},
			func(ctx context.Context, dir string, maxBytes int64) (int64, error) {
				return e.driver.(runtime.Snapshotter).Snapshot(ctx, src, nil, dir, maxBytes)
			})
		if err != nil {
			b.Fatal(err)
		}
		snapTook += time.Since(start)

		id := "sb-bench-snap-" + strconv.Itoa(i)
		start = time.Now()
		if _, err := e.driver.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Rootfs: &runtime.Rootfs{Lowers: snap.Layers, OnHost: snap.OnHost}, Resources: benchResources}); err != nil {
			b.Fatal(err)
		}
		restoreTook += time.Since(start)

		b.StopTimer()
		e.destroy(b, id)
		if err := store.RemoveSnapshot(ctx, snap.ID); err != nil {
			b.Fatal(err)
		}
		if err := store.GC(ctx, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(snapTook.Milliseconds())/float64(b.N), "snapshot-ms/op")
	b.ReportMetric(float64(restoreTook.Milliseconds())/float64(b.N), "restore-ms/op")
}

// BenchmarkSnapshotPush times a snapshot of 100 MB of random data (one
// file) kept on the host, the baseline, and the same snapshot also pushed
// to a registry on loopback as an image on a small base (the Kubernetes
// runtime's snapshots: export to an OCI layer tar, gzip, upload),
// interleaved in one run; ratio is pushed over local.
//
//	go test -run '^$' -bench SnapshotPush -benchtime 3x ./bench/
func BenchmarkSnapshotPush(b *testing.B) {
	ctx := context.Background()
	reg := imagetest.Registry(b)
	base := reg + "/base:1"
	imagetest.Push(b, base, imagetest.Image(b, nil, "/", imagetest.Layer(b, func(tw *tar.Writer) {
		imagetest.File(b, tw, "etc/hostname", []byte("base\n"), 0o644)
	})))
	store, err := image.OpenStore(filepath.Join(b.TempDir(), "images"), image.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 100<<20)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	fill := func(ctx context.Context, dir string, _ int64) (int64, error) {
		return int64(len(data)), os.WriteFile(filepath.Join(dir, "big"), data, 0o644)
	}
	var local, pushed time.Duration
	b.ResetTimer()
	for range b.N {
		for _, push := range []*image.SnapshotPush{nil, {Repo: reg + "/snaps", Base: base}} {
			start := time.Now()
			snap, err := store.AddSnapshot(ctx, image.NewSnapshot{Source: "sb-bench", Image: base, OnHost: true, Push: push}, fill)
			if err != nil {
				b.Fatal(err)
			}
			if push == nil {
				local += time.Since(start)
			} else {
				pushed += time.Since(start)
			}
			b.StopTimer()
			if err := store.RemoveSnapshot(ctx, snap.ID); err != nil {
				b.Fatal(err)
			}
			if snap.Ref != "" {
				if err := store.UnpushSnapshot(ctx, snap.Ref); err != nil {
					b.Fatal(err)
				}
			}
			if err := store.GC(ctx, nil); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(local.Milliseconds())/float64(b.N), "local-ms/op")
	b.ReportMetric(float64(pushed.Milliseconds())/float64(b.N), "pushed-ms/op")
	b.ReportMetric(float64(pushed)/float64(local), "ratio")
}
