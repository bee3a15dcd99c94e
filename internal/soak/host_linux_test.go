package soak

import (
	"net"
	"os"
	"testing"
)

// TestServerPID finds this test process by the port it listens on.
func TestServerPID(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := ServerPID(ln.Addr().String())
	if err != nil || pid != os.Getpid() {
		t.Fatalf("ServerPID(%s) = %d, %v; want %d", ln.Addr(), pid, err, os.Getpid())
	}
	if _, err := ServerPID("192.0.2.1:80"); err == nil {
		t.Error("ServerPID of another host's address succeeded")
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, err := ServerPID(closed); err == nil {
		t.Error("ServerPID of a port nothing listens on succeeded")
	}
}

func TestListeners(t *testing.T) {
	table := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1CFC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1CFC 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
`)
	if got := listeners(table, 7420); len(got) != 1 || got[0] != "4242" {
		t.Errorf("listeners on 7420 = %v, want [4242] (the established one is not)", got)
	}
}

func TestSample(t *testing.T) {
	h, err := NewProcHost(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Sample()
	if err != nil || p.RSSBytes <= 0 || p.RSSAnonBytes <= 0 || p.FDs <= 0 || p.Threads <= 0 {
		t.Errorf("Sample of this process = %+v, %v", p, err)
	}
	sum := 0
	for _, n := range p.FDKinds {
		sum += n
	}
	if sum < p.FDs-1 || p.FDKinds["file"] == 0 { // the ReadDir's own fd may be gone
		t.Errorf("fds by kind %v for %d fds", p.FDKinds, p.FDs)
	}
	if _, err := NewProcHost(1 << 30); err == nil {
		t.Error("NewProcHost of no process succeeded")
	}
}
