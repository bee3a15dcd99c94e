package doctor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestClashesIn(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const lo, hi = 1000000, 2000000
	for _, tc := range []struct {
		name             string
		content          string
		idField, countAt int
		want             []string
	}{
		{"passwd", "root:x:0:0::/root:/bin/sh\nin:x:1500000:1::/:/bin/sh\nedge:x:2000000:1::/:/bin/sh\nbad:x:nan:1\nshort\n",
			2, -1, []string{"passwd in (1500000+1)"}},
		{"subuid", "alice:100000:65536\nbob:999999:2\ncarol:1999999:1\ndave:2000000:65536\nbroken:1500000\n",
			1, 2, []string{"subuid bob (999999+2)", "subuid carol (1999999+1)"}},
		{"empty", "", 1, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clashesIn(write(tc.name, tc.content), tc.idField, tc.countAt, lo, hi)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := clashesIn(filepath.Join(dir, "missing"), 1, 2, lo, hi); got != nil {
		t.Errorf("a missing file: %q", got)
	}
}

func TestProbeDir(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ dataDir, want string }{
		{dir, dir},
		{filepath.Join(dir, "not", "yet"), dir},
		{"", os.TempDir()},
	} {
		if got := probeDir(tc.dataDir); got != tc.want {
			t.Errorf("probeDir(%q) = %q, want %q", tc.dataDir, got, tc.want)
		}
	}
}
