//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// watcher reads a watch's events in a test.
type watcher struct {
	t *testing.T
	r *WatchReader
}

func openWatch(t *testing.T, e *testEnv, p string, recursive, sudo bool) *watcher {
	t.Helper()
	r, err := e.client.Watch(testCtx(t), p, recursive, sudo)
	if err != nil {
		t.Fatalf("watch %s: %v", p, err)
	}
	t.Cleanup(func() { r.Close() })
	return &watcher{t: t, r: r}
}

// until reads events until want is among them and returns those read.
func (w *watcher) until(want WatchEvent) []WatchEvent {
	w.t.Helper()
	var got []WatchEvent
	for {
		ev, err := w.r.Next()
		if err != nil {
			w.t.Fatalf("waiting for %+v after %+v: %v", want, got, err)
		}
		got = append(got, ev)
		if ev == want {
			return got
		}
	}
}

// untilAny reads events until one of want and returns it.
func (w *watcher) untilAny(want ...WatchEvent) WatchEvent {
	w.t.Helper()
	for {
		ev, err := w.r.Next()
		if err != nil {
			w.t.Fatalf("waiting for %+v: %v", want, err)
		}
		if slices.Contains(want, ev) {
			return ev
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatchEvents(t *testing.T) {
	e := startServer(t, nil)
	dir := filepath.Join(e.root, "w")
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	w := openWatch(t, e, "/w", false, false)

	f := filepath.Join(dir, "a.txt")
	must(t, os.WriteFile(f, []byte("x"), 0o644))
	w.until(WatchEvent{Type: WatchCreate, Name: "a.txt"})
	w.until(WatchEvent{Type: WatchWrite, Name: "a.txt"})
	must(t, os.Chmod(f, 0o600))
	w.until(WatchEvent{Type: WatchChmod, Name: "a.txt"})
	must(t, os.Rename(f, filepath.Join(dir, "b.txt")))
	w.until(WatchEvent{Type: WatchRename, Name: "a.txt"})
	w.until(WatchEvent{Type: WatchCreate, Name: "b.txt"})
	must(t, os.Remove(filepath.Join(dir, "b.txt")))
	w.until(WatchEvent{Type: WatchRemove, Name: "b.txt"})
	// Not recursive: a change inside sub is not seen, the directory's own is.
	must(t, os.WriteFile(filepath.Join(dir, "sub", "inner"), nil, 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	if got := w.until(WatchEvent{Type: WatchCreate, Name: "d", Dir: true}); slices.ContainsFunc(got, func(ev WatchEvent) bool { return ev.Name == "sub/inner" }) {
		t.Errorf("a watch that is not recursive reported inside sub: %+v", got)
	}
	// The watched directory's removal ends the stream.
	must(t, os.RemoveAll(dir))
	w.until(WatchEvent{Type: WatchRemove, Dir: true})
	for {
		if _, err := w.r.Next(); err != nil {
			break
		}
	}
}

func TestWatchRecursive(t *testing.T) {
	e := startServer(t, nil)
	dir := filepath.Join(e.root, "w")
	must(t, os.MkdirAll(filepath.Join(dir, "x", "y"), 0o755))
	outside := filepath.Join(e.root, "outside")
	must(t, os.Mkdir(outside, 0o755))
	must(t, os.Symlink("../outside", filepath.Join(dir, "link")))
	w := openWatch(t, e, "/w", true, false)

	must(t, os.WriteFile(filepath.Join(dir, "x", "y", "f"), []byte("1"), 0o644))
	w.until(WatchEvent{Type: WatchWrite, Name: "x/y/f"})

	// A tree made at once: what was made before its directory was
	// watched is reported by the scan of the new directory.
	must(t, os.MkdirAll(filepath.Join(dir, "n", "m", "k"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "n", "m", "k", "g"), nil, 0o644))
	w.until(WatchEvent{Type: WatchCreate, Name: "n/m/k/g"})

	// A directory moved within the tree reports under its new name.
	must(t, os.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "z")))
	w.until(WatchEvent{Type: WatchRename, Name: "x", Dir: true})
	w.until(WatchEvent{Type: WatchCreate, Name: "z", Dir: true})
	must(t, os.WriteFile(filepath.Join(dir, "z", "y", "f"), []byte("2"), 0o644))
	got := w.until(WatchEvent{Type: WatchWrite, Name: "z/y/f"})

	// Symlinks are not followed: the target's changes are not the tree's.
	must(t, os.WriteFile(filepath.Join(outside, "o"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "end"), nil, 0o644))
	got = append(got, w.until(WatchEvent{Type: WatchCreate, Name: "end"})...)
	for _, ev := range got {
		if ev.Name == "link/o" || ev.Name == "x/y/f" {
			t.Errorf("unexpected event %+v", ev)
		}
	}
}

func TestWatchIdentity(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	// A root-only directory, and the user's symlink to it.
	secret := filepath.Join(e.root, "secret")
	must(t, os.Mkdir(secret, 0o700))
	must(t, os.Mkdir(filepath.Join(e.root, "home"), 0o755))
	must(t, os.Chown(filepath.Join(e.root, "home"), int(UserUID), int(UserGID)))
	must(t, os.Symlink("/secret", filepath.Join(e.root, "home", "s")))
	for _, tc := range []struct {
		name, path string
		sudo       bool
		kind       error
	}{
		{"the user's symlink to root's directory", "/home/s", false, sandbox.ErrForbidden},
		{"root's directory", "/secret", false, sandbox.ErrForbidden},
		{"with sudo", "/home/s", true, nil},
		{"not found", "/nope", false, sandbox.ErrNotFound},
		{"the user's directory", "/home", false, nil},
		{"relative", "home", false, sandbox.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.client.Watch(ctx, tc.path, true, tc.sudo)
			if r != nil {
				r.Close()
			}
			if tc.kind == nil && err != nil || tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("watch %s sudo=%v: %v, want %v", tc.path, tc.sudo, err, tc.kind)
			}
		})
	}
	must(t, os.WriteFile(filepath.Join(e.root, "home", "file"), nil, 0o644))
	if _, err := e.client.Watch(ctx, "/home/file", false, false); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("watch a file: %v, want invalid", err)
	}
}

func TestWatchLimits(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) {
		c.MaxWatches, c.MaxWatchDirs, c.MaxWatchQueue = 2, 4, 4
	})
	ctx := testCtx(t)
	for _, d := range []string{"a/b/c/d/e", "one"} {
		must(t, os.MkdirAll(filepath.Join(e.root, d), 0o755))
	}
	t.Run("directories", func(t *testing.T) {
		if _, err := e.client.Watch(ctx, "/a", true, false); !errors.Is(err, sandbox.ErrExhausted) {
			t.Errorf("five directories past a cap of four: %v, want exhausted", err)
		}
	})
	w := openWatch(t, e, "/one", false, false)
	openWatch(t, e, "/a", false, false)
	t.Run("watches", func(t *testing.T) {
		if _, err := e.client.Watch(ctx, "/a", false, false); !errors.Is(err, sandbox.ErrExhausted) {
			t.Errorf("a third watch past a cap of two: %v, want exhausted", err)
		}
	})
	t.Run("queue", func(t *testing.T) {
		// Nobody reads while the burst fills the socket, then the queue:
		// what does not fit becomes one overflow event, and the watch goes on.
		for i := range 20000 {
			must(t, os.WriteFile(filepath.Join(e.root, "one", fmt.Sprint(i)), nil, 0o644))
		}
		w.until(WatchEvent{Type: WatchOverflow})
		// Once the backlog is read, events flow again: a marker made while
		// the queue is still full is itself lost (another overflow), so
		// try again with a new one.
		for k := 0; ; k++ {
			if k == 100 {
				t.Fatal("no event got through after the overflow")
			}
			marker := fmt.Sprintf("after-%d", k)
			must(t, os.WriteFile(filepath.Join(e.root, "one", marker), nil, 0o644))
			if w.untilAny(WatchEvent{Type: WatchCreate, Name: marker}, WatchEvent{Type: WatchOverflow}).Type == WatchCreate {
				break
			}
		}
	})
}
