package image

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestTeamMaxImages: a team's scope holds at most TeamMaxImages refs; a
// ref it has can still move, other teams and the published scope are not
// counted against it.
func TestTeamMaxImages(t *testing.T) {
	needRoot(t)
	s := openTestStore(t, StoreOptions{TeamMaxImages: 2})
	img := func(body string) v1.Image {
		return buildImage(t, v1.Config{}, tarLayer(t, entry{name: "f", body: body}))
	}
	importTagged(t, s, "team-a", "one:1", img("1"))
	importTagged(t, s, "team-a", "two:1", img("2"))

	p := filepath.Join(t.TempDir(), "img.tar")
	tg, _ := name.NewTag("three:1")
	if err := tarball.WriteToFile(p, tg, img("3")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Import(t.Context(), "team-a", p)
	if !errors.Is(err, sandbox.ErrForbidden) || sandbox.CodeOf(err) != "image_quota_exceeded" {
		t.Fatalf("a third image for a team allowed two: %v, want image_quota_exceeded", err)
	}
	if _, err := s.Get("team-a", "three:1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("the refused image is there: %v", err)
	}
	importTagged(t, s, "team-a", "two:1", img("2b")) // moving a ref it has
	importTagged(t, s, "team-b", "three:1", img("3"))
	importTagged(t, s, Published, "three:1", img("3"))
	importTagged(t, s, Published, "four:1", img("4"))
	importTagged(t, s, Published, "five:1", img("5"))

	// Negative: no cap.
	s = openTestStore(t, StoreOptions{TeamMaxImages: -1})
	for _, tag := range []string{"a:1", "b:1", "c:1"} {
		importTagged(t, s, "team-a", tag, img(tag))
	}
}
