package e2e

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// TestListDirectory lists directories of a real sandbox through the API
// (GET /sandboxes/{id}/directories, the agent's listing as PID 1 with its
// seccomp profile): symlinks are listed and never followed below the path,
// a symlink in the path resolves inside the sandbox's root, and the
// sandbox user's permissions hold unless sudo.
func TestListDirectory(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{})
	sb := s.create(t, api.CreateSandboxRequest{})
	if out, code := sh(t, sb, `set -e
		mkdir -p ~/tree/sub
		printf alpha > ~/tree/a.txt
		printf deep > ~/tree/sub/z.txt
		ln -s / ~/tree/root-link
		ln -s ../../../.. ~/tree/up
		mkfifo ~/tree/fifo`); code != 0 {
		t.Fatalf("setup: %s", out)
	}
	if _, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "mkdir -m 700 /opt/private && touch /opt/private/x"}, Sudo: true}); code != 0 {
		t.Fatalf("setup as root: %s", errOut)
	}
	ctx := ctxFor(t, time.Minute)
	list := func(dir string, depth int, opts ...sdk.ReadOption) []string {
		t.Helper()
		l, err := sb.ListDir(ctx, dir, depth, opts...)
		if err != nil {
			t.Fatalf("list %s: %v", dir, err)
		}
		var out []string
		for _, e := range l.Entries {
			s := strings.TrimPrefix(strings.TrimPrefix(e.Path, l.Path), "/") + " " + e.Type
			if e.SymlinkTarget != "" {
				s += " -> " + e.SymlinkTarget
			}
			out = append(out, s)
		}
		return out
	}

	got := list("/home/user/tree", 3)
	want := []string{"a.txt file", "fifo other", "root-link symlink -> /", "sub dir", "sub/z.txt file", "up symlink -> /"}
	if !slices.Equal(got, want) {
		t.Errorf("three levels of ~/tree\n  %s\nwant (links not followed)\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	l, err := sb.ListDir(ctx, "/home/user/tree", 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := l.Entries[0]; a.Size != 5 || a.Mode != 0o644 || a.Owner != "user" || a.ModTime.IsZero() || a.Permissions != "-rw-r--r--" {
		t.Errorf("a.txt: %+v", a)
	}
	// A symlink on the way resolves in the sandbox's root: "up" climbs
	// past it and lands on the sandbox's own /. (Targets of links there are
	// made absolute against the path asked for, lexically, so compare
	// names and types.)
	names := func(es []string) []string {
		out := make([]string, len(es))
		for i, e := range es {
			out[i], _, _ = strings.Cut(e, " -> ")
		}
		return out
	}
	if root, viaLink := names(list("/", 1)), names(list("/home/user/tree/up", 1)); !slices.Equal(root, viaLink) || !slices.Contains(root, "home dir") {
		t.Errorf("/ lists\n  %s\nbut through ~/tree/up\n  %s", strings.Join(root, "\n  "), strings.Join(viaLink, "\n  "))
	}
	if _, err := sb.ListDir(ctx, "/opt/private", 1); !errors.Is(err, sdk.ErrForbidden) {
		t.Errorf("a root-only directory as the user: %v, want forbidden", err)
	}
	if got := list("/opt/private", 1, sdk.ReadSudo()); !slices.Equal(got, []string{"x file"}) {
		t.Errorf("a root-only directory with sudo: %q", got)
	}
	for path, want := range map[string]error{"/home/user/tree/a.txt": sdk.ErrInvalid, "/home/user/none": sdk.ErrNotFound} {
		if _, err := sb.ListDir(ctx, path, 1); !errors.Is(err, want) {
			t.Errorf("list %s: %v, want %v", path, err, want)
		}
	}
}
