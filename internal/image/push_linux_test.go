package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// countingRegistry serves an in-memory registry on 127.0.0.1 and counts
// the blobs uploaded to it (a mounted or already present blob is not).
func countingRegistry(t *testing.T) (host string, uploads *atomic.Int64) {
	t.Helper()
	uploads = new(atomic.Int64)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			uploads.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), uploads
}

// TestSnapshotPush: a snapshot pushed as an image is its base plus one
// layer that flattens to the snapshot's tree (whiteouts and opaque
// directories as OCI has them), with the snapshot's config, tagged by id
// and recorded pinned by digest; a failed push records nothing.
func TestSnapshotPush(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a snapshot layer has whiteout devices and trusted.* xattrs: needs root")
	}
	ctx := t.Context()
	reg, uploads := countingRegistry(t)
	baseRef := reg + "/base:1"
	imagetest.Push(t, baseRef, imagetest.Image(t, []string{"PATH=/bin"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.Dir(t, tw, "etc/")
		imagetest.File(t, tw, "etc/keep", []byte("keep"), 0o644)
		imagetest.File(t, tw, "etc/gone", []byte("gone"), 0o644)
		imagetest.Dir(t, tw, "opq/")
		imagetest.File(t, tw, "opq/old", []byte("old"), 0o644)
	})))
	uploads.Store(0)

	// The default guard refuses loopback registries: the snapshot
	// registry, the operator's, is reached anyway.
	s, err := OpenStore(t.TempDir(), StoreOptions{SnapshotTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(ctx context.Context, dir string, maxBytes int64) (int64, error) {
		for _, err := range []error{
			os.WriteFile(filepath.Join(dir, "new.txt"), []byte("new"), 0o640),
			os.Mkdir(filepath.Join(dir, "etc"), 0o755),
			unix.Mknod(filepath.Join(dir, "etc", "gone"), unix.S_IFCHR, 0),
			os.Mkdir(filepath.Join(dir, "opq"), 0o700),
			unix.Setxattr(filepath.Join(dir, "opq"), "trusted.overlay.opaque", []byte("y"), 0),
			os.WriteFile(filepath.Join(dir, "opq", "fresh"), []byte("fresh"), 0o644),
			os.Symlink("new.txt", filepath.Join(dir, "link")),
			os.Chown(filepath.Join(dir, "new.txt"), 1000, 1000),
		} {
			if err != nil {
				return 0, err
			}
		}
		return 8, nil
	}
	cfg := ImageConfig{Env: []string{"PATH=/bin", "A=1"}, User: "1000", WorkingDir: "/work"}
	spec := NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: baseRef, OnHost: true, Config: cfg,
		Push: &SnapshotPush{Repo: reg + "/snaps", Base: baseRef}}
	snap, err := s.AddSnapshot(ctx, spec, fill)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(snap.Ref, reg+"/snaps@sha256:") {
		t.Fatalf("Ref = %q, want %s/snaps@sha256:...", snap.Ref, reg)
	}
	// The base layer is mounted from the base's repository, not
	// uploaded again: the new layer and the config are.
	if n := uploads.Load(); n != 2 {
		t.Errorf("%d blobs uploaded, want 2 (the snapshot's layer and config)", n)
	}

	ref, err := name.NewDigest(snap.Ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := img.Digest(); err != nil || d.String() != ref.DigestStr() {
		t.Errorf("pulled digest %v (%v), want %s", d, err, ref.DigestStr())
	}
	tagged, err := remote.Image(ref.Context().Tag(snap.ID))
	if err != nil {
		t.Fatalf("tag %s: %v", snap.ID, err)
	}
	if d, _ := tagged.Digest(); d.String() != ref.DigestStr() {
		t.Errorf("tag %s is %s, want %s", snap.ID, d, ref.DigestStr())
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Env, cfg.Env) || cf.Config.User != "1000" || cf.Config.WorkingDir != "/work" || cf.Config.Labels[SnapshotLabel] != snap.ID {
		t.Errorf("config = %+v", cf.Config)
	}
	if layers, _ := img.Layers(); len(layers) != 2 {
		t.Errorf("%d layers, want the base's one and the snapshot's", len(layers))
	}

	got := flatten(t, mutate.Extract(img))
	want := map[string]string{"etc/": "", "etc/keep": "keep", "opq/": "", "opq/fresh": "fresh", "new.txt": "new", "link": "-> new.txt"}
	for p, content := range want {
		if got[p] != content {
			t.Errorf("flattened %s = %q, want %q", p, got[p], content)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("flattened image has %s, which the snapshot hides or never had", p)
		}
	}

	// The record keeps the ref across a reopen.
	s2, err := OpenStore(s.dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.GetSnapshot(snap.ID); err != nil || got.Ref != snap.Ref {
		t.Errorf("reopened: %+v, %v", got, err)
	}

	// A snapshot of a snapshot stacks on its image.
	spec.Push.Base = snap.Ref
	snap2, err := s.AddSnapshot(ctx, spec, func(ctx context.Context, dir string, _ int64) (int64, error) {
		return 1, os.WriteFile(filepath.Join(dir, "second"), []byte("2"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	img2, err := remote.Image(mustDigest(t, snap2.Ref))
	if err != nil {
		t.Fatal(err)
	}
	got2 := flatten(t, mutate.Extract(img2))
	if got2["second"] != "2" || got2["new.txt"] != "new" || got2["etc/gone"] != "" {
		t.Errorf("snapshot of a snapshot flattens to %v", got2)
	}

	// Deleted from the registry on request, and on expiry.
	if err := s.UnpushSnapshot(ctx, snap.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(ref); err == nil {
		t.Error("the deleted snapshot image is still in the registry")
	}
	if err := s.UnpushSnapshot(ctx, snap.Ref); err != nil {
		t.Errorf("deleting a deleted image: %v", err)
	}
	later := time.Now().Add(2 * time.Hour)
	s.now = func() time.Time { return later }
	if err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(snap2.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("snapshot past its TTL: %v", err)
	}
	if _, err := remote.Image(mustDigest(t, snap2.Ref)); err == nil {
		t.Error("an expired snapshot's image is still in the registry")
	}
}

// TestSnapshotPushFails: a push that fails records nothing and leaves no
// layer behind.
func TestSnapshotPushFails(t *testing.T) {
	reg := imagetest.Registry(t)
	imagetest.Push(t, reg+"/base:1", imagetest.Image(t, nil, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "f", []byte("f"), 0o644)
	})))
	other := imagetest.Registry(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	fill := func(ctx context.Context, dir string, _ int64) (int64, error) {
		return 1, os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644)
	}
	for _, tt := range []struct {
		name    string
		push    SnapshotPush
		guard   netguard.Guard
		guarded bool // refused by the pull guard
	}{
		{"registry down", SnapshotPush{Repo: strings.TrimPrefix(dead.URL, "http://") + "/snaps", Base: reg + "/base:1"}, netguard.Guard{AllowPrivate: true}, false},
		{"base missing", SnapshotPush{Repo: reg + "/snaps", Base: reg + "/nope:1"}, netguard.Guard{}, false},
		// A base from another registry is fetched as pulls are: the
		// default guard refuses loopback ones.
		{"base refused by the pull guard", SnapshotPush{Repo: other + "/snaps", Base: reg + "/base:1"}, netguard.Guard{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenStore(t.TempDir(), StoreOptions{Guard: tt.guard})
			if err != nil {
				t.Fatal(err)
			}
			push := tt.push
			_, err = s.AddSnapshot(t.Context(), NewSnapshot{Source: "sb-a", OnHost: true, Push: &push}, fill)
			var se *sandbox.Error
			if !errors.Is(err, sandbox.ErrUnavailable) || !errors.As(err, &se) || se.Code != "snapshot_push_failed" {
				t.Fatalf("AddSnapshot = %v, want ErrUnavailable snapshot_push_failed", err)
			}
			var be *netguard.BlockedError
			if errors.As(err, &be) != tt.guarded {
				t.Errorf("AddSnapshot = %v: refused by the pull guard %v, want %v", err, !tt.guarded, tt.guarded)
			}
			if snaps := s.Snapshots(); len(snaps) != 0 {
				t.Errorf("a failed push recorded %d snapshots", len(snaps))
			}
			for _, d := range []string{"layers", "tmp"} {
				if ents, err := os.ReadDir(filepath.Join(s.dir, d)); err != nil || len(ents) != 0 {
					t.Errorf("%s after a failed push: %v %v", d, ents, err)
				}
			}
		})
	}
}

func mustDigest(t *testing.T, ref string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// flatten reads a flattened image's tar: path -> content, "" for a
// directory, "-> target" for a symlink.
func flatten(t *testing.T, rc io.ReadCloser) map[string]string {
	t.Helper()
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimPrefix(hdr.Name, "./")
		switch hdr.Typeflag {
		case tar.TypeDir:
			out[strings.TrimSuffix(p, "/")+"/"] = ""
		case tar.TypeSymlink:
			out[p] = "-> " + hdr.Linkname
		default:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = string(b)
		}
	}
}
