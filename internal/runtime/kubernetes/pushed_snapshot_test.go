package kubernetes

import (
	"archive/tar"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestPushedSnapshot: a snapshot pushed to the registry as an image runs
// as a Pod when node creates a sandbox from it: the Pod sees the
// snapshot's file, not the file the snapshot deleted. The snapshot is made
// in the store directly, as the node would make it from the driver's copy
// of a Pod's changes (the driver cannot copy them yet).
func TestPushedSnapshot(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	const team = "team-k8s"
	base := e.registry + "/paddock/snapbase:test"
	imagetest.Push(t, base, imagetest.Image(t, []string{"PATH=/bin"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat", "test")
		imagetest.File(t, tw, "etc/keep", []byte("kept\n"), 0o644)
		imagetest.File(t, tw, "etc/gone", []byte("gone\n"), 0o644)
	})))
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{Logger: log,
		Guard: netguard.Guard{AllowPrivate: true}}) // the registry is on 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	img, err := store.Pull(ctx, team, base, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	repo := e.registry + "/paddock/snapshots"
	snap, err := store.AddSnapshot(ctx, image.NewSnapshot{
		Source: "sb-gone", TeamID: team, Image: img.Ref, Digest: img.Digest, Runtime: "kubernetes",
		Config: image.ImageConfig{Env: []string{"PATH=/bin"}, WorkingDir: "/"},
		Lowers: img.Lowerdirs(),
		Push:   &image.SnapshotPush{Repo: repo, Base: img.Ref + "@" + img.Digest},
	}, func(ctx context.Context, dir string, _ int64) (int64, error) {
		if err := os.WriteFile(filepath.Join(dir, "snapfile"), []byte("from the snapshot\n"), 0o644); err != nil {
			return 0, err
		}
		if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
			return 0, err
		}
		return 18, unix.Mknod(filepath.Join(dir, "etc", "gone"), unix.S_IFCHR, 0)
	})
	if err != nil {
		t.Fatal(err)
	}

	m, err := node.New(node.Config{DataDir: t.TempDir(), Driver: d, Images: store, SnapshotRegistry: repo, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	sb, err := m.Create(ctx, sandbox.CreateRequest{TeamID: team, Snapshot: snap.ID,
		Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Delete(context.Background(), sb.ID) })
	if sb.ImageRef != snap.Ref {
		t.Errorf("ImageRef = %q, want the snapshot's image %s", sb.ImageRef, snap.Ref)
	}
	pod, err := e.c.Client.CoreV1().Pods(d.cfg.Namespace).Get(ctx, podName(sb.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "sandbox" && c.Image != snap.Ref {
			t.Errorf("the sandbox container runs %s, want %s", c.Image, snap.Ref)
		}
	}

	c, err := d.Agent(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := sh(t, c, "cat /snapfile /etc/keep; test -e /etc/gone || echo no-gone", false)
	if want := "from the snapshot\nkept\nno-gone\n"; got != want {
		t.Errorf("the Pod sees %q, want %q", got, want)
	}

	// A snapshot of the host image runs with the host image's binds (the
	// node's /usr) over its image.
	hostSnap, err := store.AddSnapshot(ctx, image.NewSnapshot{
		Source: "sb-host", TeamID: team, Image: sandbox.HostImage, OnHost: true, Runtime: "kubernetes",
		Push: &image.SnapshotPush{Repo: repo, Base: e.hostImage},
	}, func(ctx context.Context, dir string, _ int64) (int64, error) {
		return 5, os.WriteFile(filepath.Join(dir, "hostsnap"), []byte("host\n"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	hsb, err := m.Create(ctx, sandbox.CreateRequest{TeamID: team, Snapshot: hostSnap.ID,
		Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Delete(context.Background(), hsb.ID) })
	hc, err := d.Agent(ctx, hsb.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if got := sh(t, hc, "cat /hostsnap; test -x /usr/bin/env && echo usr", false); got != "host\nusr\n" {
		t.Errorf("the host snapshot's Pod sees %q", got)
	}
}
