package main

import (
	"bytes"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestPoolsFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want sandbox.PoolSpec
		ok   bool
	}{
		{"min only", "name=web,min=2", sandbox.PoolSpec{Name: "web", Min: 2, Max: 2}, true},
		{"everything", "name=a,image=goose,min=1,max=5,vcpus=0.5,memory=256,disk=1024",
			sandbox.PoolSpec{Name: "a", Image: "goose", Min: 1, Max: 5, Resources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 256, DiskMB: 1024}}, true},
		{"snapshot", "name=s,snapshot=snap-x,min=0,max=3", sandbox.PoolSpec{Name: "s", Snapshot: "snap-x", Max: 3}, true},
		{"no name", "min=1", sandbox.PoolSpec{}, false},
		{"max below min", "name=a,min=3,max=1", sandbox.PoolSpec{}, false},
		{"unknown key", "name=a,min=1,color=red", sandbox.PoolSpec{}, false},
		{"not key=value", "name=a,min", sandbox.PoolSpec{}, false},
		{"bad number", "name=a,min=two", sandbox.PoolSpec{}, false},
		{"image and snapshot", "name=a,image=i,snapshot=s,min=1", sandbox.PoolSpec{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f poolsFlag
			err := f.Set(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("Set(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if tc.ok && (len(f) != 1 || f[0].Name != tc.want.Name || f[0].Image != tc.want.Image || f[0].Snapshot != tc.want.Snapshot ||
				f[0].Min != tc.want.Min || f[0].Max != tc.want.Max || f[0].Resources != tc.want.Resources) {
				t.Errorf("Set(%q) = %+v, want %+v", tc.in, f, tc.want)
			}
		})
	}
}

func TestPoolUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"pool"},
		{"pool", "bogus"},
		{"pool", "set"},
		{"pool", "rm"},
		{"pool", "ls", "extra"},
	} {
		if err := run(t.Context(), args, &out, &errOut); exitCode(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
