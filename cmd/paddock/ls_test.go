package main

import (
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
