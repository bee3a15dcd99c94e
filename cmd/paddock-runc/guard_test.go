package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestNodeGuardLists(t *testing.T) {
	g, err := nodeGuard(" 169.254.20.10:53, [fd00::a]:53,", "10.96.0.1/12")
	if err != nil {
		t.Fatal(err)
	}
	wantAllow := []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53"), netip.MustParseAddrPort("[fd00::a]:53")}
	if !slices.Equal(g.Allow, wantAllow) || !slices.Equal(g.NotNode, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}) {
		t.Errorf("guard %+v", g)
	}
	if g, err := nodeGuard("", ""); err != nil || g.Allow != nil || g.NotNode != nil {
		t.Errorf("empty lists: %+v, %v", g, err)
	}
	for _, bad := range [][2]string{
		{"169.254.20.10", ""},   // no port
		{"169.254.20.10:0", ""}, // port 0
		{"dns.local:53", ""},
		{"", "10.96.0.0"}, // not a prefix
		{"", "10.96.0.0/33"},
	} {
		if _, err := nodeGuard(bad[0], bad[1]); err == nil {
			t.Errorf("nodeGuard(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
