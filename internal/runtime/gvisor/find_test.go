package gvisor

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewestCached(t *testing.T) {
	dir := t.TempDir()
	entry := func(name string, stamp bool, age time.Duration) string {
		t.Helper()
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "runsc")
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if stamp {
			s := filepath.Join(d, "stamp")
			if err := os.WriteFile(s, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			when := time.Now().Add(-age)
			if err := os.Chtimes(s, when, when); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	if got := newestCached(dir); got != "" {
		t.Fatalf("empty cache: got %q", got)
	}
	entry("half-built", false, 0)
	if got := newestCached(dir); got != "" {
		t.Fatalf("an entry without its stamp was used: %q", got)
	}
	entry("old", true, time.Hour)
	newest := entry("new", true, time.Minute)
	if got := newestCached(dir); got != newest {
		t.Errorf("got %q, want %q", got, newest)
	}
}

func TestFindEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "runsc")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvRunsc, p)
	if got, err := Find(); err != nil || got != p {
		t.Errorf("Find() = %q, %v; want %q", got, err, p)
	}
	t.Setenv(EnvRunsc, filepath.Join(t.TempDir(), "missing"))
	if _, err := Find(); err == nil {
		t.Error("Find() with a missing $PADDOCK_RUNSC succeeded")
	}
}
