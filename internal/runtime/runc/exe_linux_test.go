package runc

import "testing"

func TestExeDirHolds(t *testing.T) {
	for _, c := range []struct {
		exe, dir string
		want     bool
	}{
		{"/tmp/bench.test", "/tmp/pb-1/runc/.state", true},
		{"/opt/paddock/paddock", "/opt/paddock/data/runc/.state", true},
		{"/opt/paddock/paddock", "/opt/paddock", true},
		{"/tmp/go-build1/b001/exe/paddock", "/tmp/pb-1/runc/.state", false},
		{"/usr/local/bin/paddock", "/var/lib/paddock/runc/.state", false},
		{"/opt/paddock/paddock", "/opt/paddock-data/runc/.state", false},
		{"/opt/paddock/bin/paddock", "/opt/paddock/runc/.state", false},
	} {
		if got := exeDirHolds(c.exe, c.dir); got != c.want {
			t.Errorf("exeDirHolds(%q, %q) = %v, want %v", c.exe, c.dir, got, c.want)
		}
	}
}
