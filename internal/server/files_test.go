package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/sdk"
)

func TestListDirectory(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb := e.client.Sandbox("run")
	e.agent.PutFile("/work/a.txt", []byte("alpha"), 0o644)
	e.agent.PutFile("/work/bin/run.sh", []byte("#!/bin/sh\n"), 0o755)
	e.agent.PutSymlink("/work/etc", "/etc")
	e.agent.PutSymlink("/work/up", "../../root")

	names := func(l api.DirectoryListing) []string {
		var out []string
		for _, en := range l.Entries {
			s := en.Path + " " + en.Type
			if en.SymlinkTarget != "" {
				s += " -> " + en.SymlinkTarget
			}
			out = append(out, s)
		}
		return out
	}
	tests := []struct {
		name  string
		dir   string
		depth int
		want  []string
	}{
		{"own entries", "/work", 0, []string{"/work/a.txt file", "/work/bin dir", "/work/etc symlink -> /etc", "/work/up symlink -> /root"}},
		{"two levels", "/work", 2, []string{"/work/a.txt file", "/work/bin dir", "/work/bin/run.sh file", "/work/etc symlink -> /etc", "/work/up symlink -> /root"}},
		{"a subdirectory", "/work/bin", 1, []string{"/work/bin/run.sh file"}},
		{"unclean path", "/work//bin/.", 1, []string{"/work/bin/run.sh file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := sb.ListDir(ctx, tc.dir, tc.depth)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(l); !slices.Equal(got, tc.want) {
				t.Errorf("listing\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
	l, err := sb.ListDir(ctx, "/work/bin", 1, sdk.ReadSudo())
	if err != nil {
		t.Fatal(err)
	}
	if f := l.Entries[0]; l.Path != "/work/bin" || f.Name != "run.sh" || f.Size != 10 || f.Mode != 0o755 || f.Permissions != "-rwxr-xr-x" || f.ModTime.IsZero() {
		t.Errorf("entry %+v of %q", f, l.Path)
	}
	if reads := e.agent.Reads(); reads[len(reads)-1] != "/v1/list /work/bin sudo=true" {
		t.Errorf("the agent was asked %q, want the listing as root", reads[len(reads)-1])
	}

	// Refused before the agent is asked; what the agent refuses keeps its kind.
	asked := len(e.agent.Reads())
	errs := []struct {
		name, query string
		status      int
		code        string
	}{
		{"no path", "", http.StatusBadRequest, "invalid_path"},
		{"relative", "path=work", http.StatusBadRequest, "invalid_path"},
		{"dot-dot", "path=/work/../etc", http.StatusBadRequest, "invalid_path"},
		{"encoded dot-dot", "path=%2Fwork%2F..%2F..%2Fetc", http.StatusBadRequest, "invalid_path"},
		{"NUL", "path=/work%00/etc", http.StatusBadRequest, "invalid_path"},
		{"zero depth", "path=/work&depth=0", http.StatusBadRequest, "invalid_query"},
		{"word depth", "path=/work&depth=all", http.StatusBadRequest, "invalid_query"},
		{"bad sudo", "path=/work&sudo=maybe", http.StatusBadRequest, "invalid_query"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := e.raw(t, "GET", "/api/v1/sandboxes/run/directories?"+tc.query, nil, nil)
			if status != tc.status || errorCode(t, body).Code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	if n := len(e.agent.Reads()); n != asked {
		t.Errorf("the agent was asked %d times for refused listings", n-asked)
	}
	for _, tc := range []struct {
		name, path string
		status     int
		code       string
	}{
		{"missing", "/nowhere", http.StatusNotFound, "file_not_found"},
		{"a file", "/work/a.txt", http.StatusBadRequest, "not_a_directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := e.raw(t, "GET", "/api/v1/sandboxes/run/directories?path="+tc.path, nil, nil)
			if status != tc.status || errorCode(t, body).Code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	if _, err := sb.ListDir(ctx, "/nowhere", 1); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("missing directory: %v, want ErrNotFound", err)
	}
	if status, _, _ := e.raw(t, "GET", "/api/v1/sandboxes/stopped/directories?path=/", nil, nil); status != http.StatusConflict {
		t.Errorf("stopped sandbox: %d, want 409", status)
	}
}

// TestListDirectoryDropsHostileEntries: an agent answer is the sandbox's
// word, and only entries below the directory asked for, named by their
// path, pass.
func TestListDirectoryDropsHostileEntries(t *testing.T) {
	e := setup(t)
	e.agent.SetListing([]agent.Entry{
		{Name: "passwd", Path: "/etc/passwd", Type: agent.EntryFile},
		{Name: "work", Path: "/work", Type: agent.EntryDir},
		{Name: "x", Path: "/work/../x", Type: agent.EntryFile},
		{Name: "x", Path: "/work/./x", Type: agent.EntryFile},
		{Name: "x", Path: "work/x", Type: agent.EntryFile},
		{Name: "y", Path: "/work/x", Type: agent.EntryFile},
		{Name: "", Path: "/work/", Type: agent.EntryFile},
		{Name: "z\x00", Path: "/work/z\x00", Type: agent.EntryFile},
		{Name: "workshop", Path: "/workshop", Type: agent.EntryFile},
		{Name: "<i>ok &amp; \"q\"\n", Path: "/work/<i>ok &amp; \"q\"\n", Type: "block-device", SymlinkTarget: ""},
		{Name: "link", Path: "/work/link", Type: agent.EntrySymlink, SymlinkTarget: "/etc/shadow"},
	})
	status, _, body := e.raw(t, "GET", "/api/v1/sandboxes/run/directories?path=/work", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var l api.DirectoryListing
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	want := []api.FileEntry{
		{Name: "<i>ok &amp; \"q\"\n", Path: "/work/<i>ok &amp; \"q\"\n", Type: api.FileTypeOther},
		{Name: "link", Path: "/work/link", Type: api.FileTypeSymlink, SymlinkTarget: "/etc/shadow"},
	}
	if !slices.EqualFunc(l.Entries, want, func(a, b api.FileEntry) bool { return a == b }) {
		t.Errorf("entries %+v, want %+v", l.Entries, want)
	}
}
