package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// TestPrintListing: names from the sandbox reach the terminal only as
// printable text, relative to the directory listed.
func TestPrintListing(t *testing.T) {
	mt := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	l := api.DirectoryListing{Path: "/work", Entries: []api.FileEntry{
		{Name: "a.txt", Path: "/work/a.txt", Type: api.FileTypeFile, Size: 5, Permissions: "-rw-r--r--", Owner: "user", Group: "user", ModTime: mt},
		{Name: "bin", Path: "/work/bin", Type: api.FileTypeDir, Permissions: "drwxr-xr-x", Owner: "user", Group: "user", ModTime: mt},
		{Name: "run.sh", Path: "/work/bin/run.sh", Type: api.FileTypeFile, Permissions: "-rwxr-xr-x", Owner: "0", Group: "0", ModTime: mt},
		{Name: "etc", Path: "/work/etc", Type: api.FileTypeSymlink, SymlinkTarget: "/etc", Permissions: "Lrwxrwxrwx", Owner: "user", Group: "user", ModTime: mt},
		{Name: "\x1b]0;pwned\x07", Path: "/work/\x1b]0;pwned\x07", Type: api.FileTypeFile, Permissions: "-rw-r--r--", Owner: "user", Group: "user", ModTime: mt},
	}}
	var b strings.Builder
	if err := printListing(&b, l); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"a.txt\n", "bin/\n", "bin/run.sh\n", "etc -> /etc\n", `"\x1b]0;pwned\a"`, "2026-12-06 20:00"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("a control character reached the terminal:\n%q", out)
	}
}

// TestSandboxLsDirectory: `sandbox ls <id> [path]` lists a directory, the
// user's home by default; the sandbox-list filters do not mix with it.
func TestSandboxLsDirectory(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/sandboxes/sb-1":
			json.NewEncoder(w).Encode(api.Sandbox{ID: "sb-1", Status: api.StatusRunning, User: &api.SandboxUser{Home: "/home/user"}})
		case "/api/v1/sandboxes/sb-1/directories":
			dir := r.URL.Query().Get("path")
			json.NewEncoder(w).Encode(api.DirectoryListing{Path: dir, Entries: []api.FileEntry{
				{Name: "x", Path: dir + "/x", Type: api.FileTypeFile, Size: 3, Permissions: "-rw-r--r--"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name  string
		args  []string
		want  string
		asked []string
	}{
		{"home", []string{"sb-1"}, "x\n", []string{"GET /api/v1/sandboxes/sb-1?", "GET /api/v1/sandboxes/sb-1/directories?path=%2Fhome%2Fuser"}},
		{"a path as root, two levels", []string{"--sudo", "--depth", "2", "sb-1", "/etc"}, "x\n",
			[]string{"GET /api/v1/sandboxes/sb-1/directories?depth=2&path=%2Fetc&sudo=true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked = nil
			var out, errOut strings.Builder
			args := append([]string{"ls", "--url", srv.URL, "--token", "pdk_x"}, tc.args...)
			if err := sandboxCmd(context.Background(), args, &out, &errOut); err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
			if !strings.HasSuffix(out.String(), tc.want) || !slices.Equal(asked, tc.asked) {
				t.Fatalf("printed %q, asked %q; want %q after asking %q", out.String(), asked, tc.want, tc.asked)
			}
		})
	}
	for _, args := range [][]string{{"--state", "running", "sb-1"}, {"sb-1", "/a", "/b"}} {
		err := sandboxCmd(context.Background(), append([]string{"ls", "--url", srv.URL, "--token", "pdk_x"}, args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("ls %q: %v, want a usage error", args, err)
		}
	}
}
