package agent

import (
	"net"
	"slices"
	"strings"
	"testing"
)

func TestParseProcNetTCP(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0
`
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 100 0 0 10 0
`
	got4, err := parseProcNetTCP(strings.NewReader(tcp))
	if err != nil {
		t.Fatal(err)
	}
	got6, err := parseProcNetTCP(strings.NewReader(tcp6))
	if err != nil {
		t.Fatal(err)
	}
	want := []ListeningPort{{3000, "0.0.0.0"}, {8080, "127.0.0.1"}, {3001, "::"}, {80, "::1"}}
	if got := append(got4, got6...); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parseProcNetTCP(strings.NewReader("h\n 0: zz:0BB8 00000000:0000 0A\n")); err == nil {
		t.Error("malformed address accepted")
	}
}

// TestPorts: a listener opened on this host shows up through the agent
// (reading the host's /proc/net here; in a sandbox it is the sandbox's).
func TestPorts(t *testing.T) {
	e := startServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ports, err := e.client.Ports(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ports, ListeningPort{Port: port, Address: "127.0.0.1"}) {
		t.Errorf("listener on %d not reported: %v", port, ports)
	}
}
