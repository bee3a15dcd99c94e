package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	for _, tc := range []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"create", "first", 0o600},
		{"replace", "second, longer", 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteFile(p, []byte(tc.data), tc.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tc.data {
				t.Fatalf("read %q, %v; want %q", got, err, tc.data)
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm() != tc.perm {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), tc.perm)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("%d entries in the dir, want 1 (no temp file left)", len(ents))
			}
		})
	}
	if err := WriteFile(filepath.Join(dir, "missing", "key"), nil, 0o600); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
}
