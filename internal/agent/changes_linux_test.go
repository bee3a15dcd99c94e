package agent

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestChanges: the changes stream holds what changed since the agent
// started, each entry after its parent, the unchanged ancestors of changed
// entries as plain directories, hard links as links, the name lists of
// the directories whose entries changed, and nothing unchanged.
func TestChanges(t *testing.T) {
	var root string
	e := startServer(t, func(c *ServerConfig) {
		root = c.Root
		for _, d := range []string{"a", "b/dir", "deep/x/y"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"a/old", "a/keep", "b/dir/f", "deep/x/y/z"} {
			if err := os.WriteFile(filepath.Join(root, f), []byte(f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// Past the mark's slack: the image is older than the sandbox.
		time.Sleep(100 * time.Millisecond)
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(root, "a/old")))
	must(os.Chmod(filepath.Join(root, "a/keep"), 0o600))
	must(os.Mkdir(filepath.Join(root, "c"), 0o750))
	must(os.WriteFile(filepath.Join(root, "c/new"), []byte("new"), 0o755))
	must(unix.Chmod(filepath.Join(root, "c/new"), 0o4755))
	must(os.Link(filepath.Join(root, "c/new"), filepath.Join(root, "c/twin")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "c/link")))
	must(unix.Mkfifo(filepath.Join(root, "c/fifo"), 0o644))
	must(os.WriteFile(filepath.Join(root, "deep/x/y/z"), []byte("changed"), 0o644))

	rc, err := e.client.Changes(testCtx(t))
	must(err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var order []string
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(err)
		key := h.Name
		if h.Typeflag == TypeDirNames {
			key = "names:" + h.Name
		}
		if _, dup := hdrs[key]; dup {
			t.Errorf("%s twice", key)
		}
		b, err := io.ReadAll(tr)
		must(err)
		hdrs[key], data[key] = h, string(b)
		if dir := filepath.Dir(strings.TrimSuffix(h.Name, "/")); h.Typeflag != TypeDirNames && dir != "." && !slices.Contains(order, dir+"/") {
			t.Errorf("%s before its parent", h.Name)
		}
		order = append(order, key)
	}
	want := []string{"a/", "a/keep", "names:a", "c/", "c/fifo", "c/link", "c/new", "c/twin", "names:c", "deep/", "deep/x/", "deep/x/y/", "deep/x/y/z", "names:."}
	got := slices.Clone(order)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("entries %q, want %q", order, want)
	}
	if h := hdrs["a/keep"]; h.Mode != 0o600 || data["a/keep"] != "a/keep" {
		t.Errorf("a/keep: mode %o, data %q", h.Mode, data["a/keep"])
	}
	if names := strings.Split(data["names:a"], "\x00"); !slices.Equal(names, []string{"keep", ""}) {
		t.Errorf("a lists %q, want keep alone", names)
	}
	names := strings.Split(strings.TrimSuffix(data["names:."], "\x00"), "\x00")
	slices.Sort(names)
	if !slices.Equal(names, []string{"a", "b", "c", "deep"}) {
		t.Errorf("the root lists %q", names)
	}
	// Hard links: one file, then a link to it, whichever name came first.
	newH, twinH := hdrs["c/new"], hdrs["c/twin"]
	if newH.Typeflag == tar.TypeLink {
		newH, twinH = twinH, newH
	}
	if newH.Typeflag != tar.TypeReg || twinH.Typeflag != tar.TypeLink || twinH.Linkname != newH.Name {
		t.Errorf("hard links: %c %q, %c -> %q", newH.Typeflag, newH.Name, twinH.Typeflag, twinH.Linkname)
	}
	if newH.Mode != 0o4755 {
		t.Errorf("c/new mode %o: the stream says what is there; the host drops set-id bits", newH.Mode)
	}
	if h := hdrs["c/link"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" {
		t.Errorf("c/link: %c -> %q", h.Typeflag, h.Linkname)
	}
	if h := hdrs["c/fifo"]; h.Typeflag != tar.TypeFifo {
		t.Errorf("c/fifo: %c", h.Typeflag)
	}
	if h := hdrs["deep/x/"]; h.Typeflag != tar.TypeDir || hdrs["names:deep/x"] != nil {
		t.Errorf("an unchanged ancestor is a plain directory without a list: %+v", h)
	}
}

// TestChangesRedirects: a root overlay that records renames as redirects
// is refused, since a renamed directory's entries keep their ctime.
func TestChangesRedirects(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, mountinfo string
		refused         bool
	}{
		{"off", "22 1 0:21 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n", false},
		{"on", "22 1 0:21 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=on\n", true},
		{"on, then another root", "22 1 0:21 / / rw - overlay overlay rw,redirect_dir=on\n23 22 0:22 / / rw - ext4 /dev/vda rw\n", false},
		{"elsewhere", "22 1 0:21 / /data rw - overlay overlay rw,redirect_dir=on\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte(tc.mountinfo), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := checkRootOverlay(p); (err != nil) != tc.refused {
				t.Errorf("checkRootOverlay = %v, refused %v", err, tc.refused)
			}
		})
	}
}

// TestChangesBaseNames: with the image's pristine tree (BaseRoot), each
// changed directory's name list comes right after the names the image has
// there; none where the image has no directory, or a symlink on the way
// (never followed).
func TestChangesBaseNames(t *testing.T) {
	var root string
	base := t.TempDir()
	for _, d := range []string{"a", "link-target"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a/old", "a/keep", "top", "link-target/secret"} {
		if err := os.WriteFile(filepath.Join(base, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The image's "s" is a symlink to a directory: no names for /s.
	if err := os.Symlink("link-target", filepath.Join(base, "s")); err != nil {
		t.Fatal(err)
	}
	e := startServer(t, func(c *ServerConfig) {
		root, c.BaseRoot = c.Root, base
		for _, d := range []string{"a", "s"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"a/old", "a/keep"} {
			if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	})
	if err := os.Remove(filepath.Join(root, "a/old")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "s/new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := e.client.Changes(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string][]string{}
	var last byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(b) == 0 {
			names = nil
		}
		slices.Sort(names)
		switch h.Typeflag {
		case TypeBaseNames:
			got["base:"+h.Name] = names
		case TypeDirNames:
			if last != TypeBaseNames {
				t.Errorf("the names of /%s without the image's before them", h.Name)
			}
			got["names:"+h.Name] = names
		}
		last = h.Typeflag
	}
	for key, want := range map[string][]string{
		"base:a":  {"keep", "old"},
		"names:a": {"keep"},
		"base:s":  nil,
		"names:s": {"new"},
	} {
		if !slices.Equal(got[key], want) {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
}
