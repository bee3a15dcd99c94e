package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/paddock-dev/paddock/internal/netns"
)

// nodeGuard is the guard that the baked-in lists say: allow, addresses
// with a port ("169.254.20.10:53", "[fd00::a]:53"), and notNode, prefixes
// ("10.96.0.0/12"), each separated by commas.
func nodeGuard(allow, notNode string) (netns.NodeGuard, error) {
	var g netns.NodeGuard
	for _, s := range splitList(allow) {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return g, fmt.Errorf("guardAllow %q: want address:port: %w", s, err)
		}
		g.Allow = append(g.Allow, ap)
	}
	for _, s := range splitList(notNode) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return g, fmt.Errorf("guardNotNode %q: want a prefix: %w", s, err)
		}
		g.NotNode = append(g.NotNode, p.Masked())
	}
	return g, g.Validate()
}

// splitList splits a comma-separated list, without blanks.
func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
