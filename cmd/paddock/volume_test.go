package main

import (
	"io"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"512M", 512 << 20, true},
		{"10G", 10 << 30, true},
		{"2GiB", 2 << 30, true},
		{"1Gi", 1 << 30, true},
		{"1t", 1 << 40, true},
		{"", 0, false},
		{"G", 0, false},
		{"-1M", 0, false},
		{"1.5G", 0, false},
		{"99999999999T", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseMB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, // the server's default
		{"1G", 1024, true},
		{"512M", 512, true},
		{"1500K", 2, true}, // rounded up to whole MiB
		{"1", 1, true},
		{"0", 0, true},
		{"ten", 0, false},
	} {
		got, err := parseMB(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMB(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestServeDiskCaps(t *testing.T) {
	for _, tc := range []struct {
		def, max         string
		wantDef, wantMax int64
		ok               bool
	}{
		{"10G", "100G", 10 << 10, 100 << 10, true},
		{"0", "100G", 0, 100 << 10, true}, // uncapped layers, asked for explicitly
		{"200G", "100G", 0, 0, false},
		{"1M", "100G", 0, 0, false},
		{"10G", "1M", 0, 0, false},
		{"lots", "100G", 0, 0, false},
	} {
		f, err := parseServeFlags([]string{"--data-dir", t.TempDir(), "--sandbox-disk", tc.def, "--max-sandbox-disk", tc.max}, io.Discard)
		def, max := f.cfg.SandboxDiskMB, f.cfg.MaxSandboxDiskMB
		if (err == nil) != tc.ok || (tc.ok && (def != tc.wantDef || max != tc.wantMax)) {
			t.Errorf("--sandbox-disk %s --max-sandbox-disk %s: %d, %d, %v; want %d, %d, ok=%v", tc.def, tc.max, def, max, err, tc.wantDef, tc.wantMax, tc.ok)
		}
	}
}

func TestVolumesFlag(t *testing.T) {
	var vols []api.VolumeMount
	f := volumesFlag{vols: &vols}
	for _, ok := range []string{"cache:/home/user/.cache", "base:/opt/base:cow", "x:/x:rw"} {
		if err := f.Set(ok); err != nil {
			t.Errorf("Set(%q): %v", ok, err)
		}
	}
	want := []api.VolumeMount{{Volume: "cache", Path: "/home/user/.cache"}, {Volume: "base", Path: "/opt/base", Mode: "cow"}, {Volume: "x", Path: "/x", Mode: "rw"}}
	if len(vols) != len(want) {
		t.Fatalf("got %v", vols)
	}
	for i := range want {
		if vols[i] != want[i] {
			t.Errorf("got %v, want %v", vols[i], want[i])
		}
	}
	for _, bad := range []string{"cache", ":/x", "cache:", "c:/x:ro", "c:/x:cow:extra"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
