package node

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeImages is an image store holding one image, seen by one team. It
// is a Collector: removed lists the refs removed (only the owner's scope
// has one), and gc the layers GC's
// inUse kept, one call each.
type fakeImages struct {
	team    string
	img     *image.Image
	touched []string
	removed []string
	gc      [][]string
}

func (f *fakeImages) Remove(_ context.Context, scope, ref string) error {
	// As image.Store's: only scope's own ref.
	if scope != f.img.Team || ref != f.img.Ref {
		return sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "no %s in scope %q", ref, scope)
	}
	f.removed = append(f.removed, scope+"/"+ref)
	return nil
}

func (f *fakeImages) GC(_ context.Context, inUse func(string) bool) error {
	var kept []string
	for _, l := range f.img.Layers {
		if inUse(l) {
			kept = append(kept, l)
		}
	}
	f.gc = append(f.gc, kept)
	return nil
}

func (f *fakeImages) Get(team, ref string) (*image.Image, error) {
	if team != f.team || ref != f.img.Ref {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "no %s for team %q", ref, team)
	}
	return f.img, nil
}

func (f *fakeImages) Resolve(_ context.Context, team, ref string) (*image.Image, error) {
	return f.Get(team, ref)
}

func (f *fakeImages) Touch(team, ref string) error {
	f.touched = append(f.touched, team+"/"+ref)
	return nil
}

func TestCreateFromImage(t *testing.T) {
	imgs := &fakeImages{team: "team-a", img: &image.Image{
		Ref: "127.0.0.1:5000/app:1", Digest: "sha256:abc", Layers: []string{"/l/base", "/l/top"},
		Config: image.ImageConfig{Env: []string{"PATH=/bin", "A=image", "B=image", "bad"}, WorkingDir: "/work", User: "app"},
	}}
	e := newEnv(t, func(c *Config) { c.Images = imgs })
	// The image is the team's: another team does not find it.
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{Image: "127.0.0.1:5000/app:1", TeamID: "team-b"}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("another team's create = %v, want image not found", err)
	}
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Image: "127.0.0.1:5000/app:1", TeamID: "team-a", Env: map[string]string{"B": "request"}})
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := map[string]string{"PATH": "/bin", "A": "image", "B": "request"}
	if !maps.Equal(sb.Env, wantEnv) || sb.WorkingDir != "/work" || sb.ImageUser != "app" || sb.ImageDigest != "sha256:abc" {
		t.Errorf("record = %+v", sb)
	}
	if len(imgs.touched) != 1 {
		t.Errorf("touched %v, want one touch", imgs.touched)
	}
	if !e.m.LayerInUse("/l/base") || e.m.LayerInUse("/l/other") || !e.m.ImageInUse("sha256:abc") {
		t.Error("in-use answers wrong while running")
	}
	if _, err := e.m.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if e.m.ImageInUse("sha256:abc") || !e.m.LayerInUse("/l/top") {
		t.Error("a stopped sandbox must release the image but keep its layers")
	}
	if err := e.m.Delete(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if e.m.LayerInUse("/l/top") {
		t.Error("a deleted sandbox still holds its layers")
	}

	_, err = e.m.Create(t.Context(), sandbox.CreateRequest{Image: "ubuntu:24.04"})
	wantErr(t, err, sandbox.ErrNotFound, "image_not_found")
}

func TestCreateUnknownImageWithoutStore(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{Image: "ubuntu:24.04"})
	wantErr(t, err, sandbox.ErrNotFound, "image_not_found")
}

// TestRemoveImage: node refuses to remove an image a running sandbox uses,
// and another scope's ref is not found; a removal collects layers, keeping
// a stopped sandbox's.
func TestRemoveImage(t *testing.T) {
	newImages := func(owner string) *fakeImages {
		return &fakeImages{team: "team-a", img: &image.Image{Ref: "127.0.0.1:5000/app:1", Team: owner, Digest: "sha256:abc",
			Layers: []string{"/l/base", "/l/top"}}}
	}
	for _, tc := range []struct {
		name, owner, scope string
		wantErr            error
		wantCode           string
	}{
		{"another team's scope", "team-a", "team-b", sandbox.ErrNotFound, "image_not_found"},
		{"the published ref seen by a team", image.Published, "team-a", sandbox.ErrNotFound, "image_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imgs := newImages(tc.owner)
			e := newEnv(t, func(c *Config) { c.Images = imgs })
			err := e.m.RemoveImage(t.Context(), tc.scope, imgs.img.Ref)
			wantErr(t, err, tc.wantErr, tc.wantCode)
			if len(imgs.removed) != 0 {
				t.Errorf("removed %v", imgs.removed)
			}
		})
	}

	t.Run("in use, then stopped", func(t *testing.T) {
		imgs := newImages("team-a")
		e := newEnv(t, func(c *Config) { c.Images = imgs })
		sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Image: imgs.img.Ref, TeamID: "team-a"})
		if err != nil {
			t.Fatal(err)
		}
		err = e.m.RemoveImage(t.Context(), "team-a", imgs.img.Ref)
		wantErr(t, err, sandbox.ErrConflict, "image_in_use")
		if _, err := e.m.Stop(t.Context(), sb.ID); err != nil {
			t.Fatal(err)
		}
		if err := e.m.RemoveImage(t.Context(), "team-a", imgs.img.Ref); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(imgs.removed, []string{"team-a/" + imgs.img.Ref}) {
			t.Errorf("removed %v", imgs.removed)
		}
		// The stopped sandbox's overlay still needs both layers.
		if len(imgs.gc) != 1 || len(imgs.gc[0]) != 2 {
			t.Errorf("GC kept %v, want both layers of the stopped sandbox", imgs.gc)
		}
	})

	t.Run("no image store", func(t *testing.T) {
		e := newEnv(t, nil)
		wantErr(t, e.m.RemoveImage(t.Context(), "team-a", "app:1"), sandbox.ErrUnsupported, "images_disabled")
	})
}

// TestRegistryRef: the image a driver whose nodes pull (Kubernetes) gets
// is the store's image pinned to its digest, never a tag that may have
// moved since the pull.
func TestRegistryRef(t *testing.T) {
	const dig = "sha256:0123"
	for _, tc := range []struct{ name, ref, digest, want string }{
		{"tag", "registry.local:5000/team/app:v1", dig, "registry.local:5000/team/app:v1@" + dig},
		{"already pinned", "registry.local/app@" + dig, dig, "registry.local/app@" + dig},
		{"digest only", dig, dig, ""},
		{"no digest", "registry.local/app:v1", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := registryRef(&image.Image{Ref: tc.ref, Digest: tc.digest}); got != tc.want {
				t.Errorf("registryRef(%q, %q) = %q, want %q", tc.ref, tc.digest, got, tc.want)
			}
		})
	}
}
