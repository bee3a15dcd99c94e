package agent

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// tcpListen is the LISTEN state in /proc/net/tcp.
const tcpListen = "0A"

func (s *Server) handlePorts(w http.ResponseWriter, r *http.Request) {
	ports, err := listeningPorts(s.cfg.ProcNet)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.OwnPort != 0 {
		ports = slices.DeleteFunc(ports, func(p ListeningPort) bool { return p.Port == s.cfg.OwnPort })
	}
	writeJSON(w, http.StatusOK, ports)
}

// listeningPorts reads the TCP sockets in LISTEN state of the sandbox's
// network namespace from procNet (/proc/net in a sandbox), one entry per
// port and address, sorted by port.
func listeningPorts(procNet string) ([]ListeningPort, error) {
	var out []ListeningPort
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procNet, name))
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6 in this kernel
			}
			return nil, fmt.Errorf("read listening ports: %w", err)
		}
		ports, err := parseProcNetTCP(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read listening ports from %s: %w", name, err)
		}
		out = append(out, ports...)
	}
	slices.SortFunc(out, func(a, b ListeningPort) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Address, b.Address)
	})
	return slices.Compact(out), nil
}

// parseProcNetTCP parses the /proc/net/tcp format: after a header line,
// "sl local_address rem_address st ...", addresses as hex IP:port with the
// IP in host byte order per 32-bit word.
func parseProcNetTCP(r io.Reader) ([]ListeningPort, error) {
	var out []ListeningPort
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpListen {
			continue
		}
		ipHex, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("malformed address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("malformed port %q", portHex)
		}
		addr, err := parseProcIP(ipHex)
		if err != nil {
			return nil, err
		}
		out = append(out, ListeningPort{Port: int(port), Address: addr.String()})
	}
	return out, sc.Err()
}

func parseProcIP(h string) (netip.Addr, error) {
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, fmt.Errorf("malformed address %q", h)
	}
	// Each 32-bit word is in the kernel's (little-endian) byte order.
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr.Unmap(), nil
}
