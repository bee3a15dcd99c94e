package netns

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"allow-all", Policy{Mode: ModeAllowAll}, true},
		{"deny-all", Policy{Mode: ModeDenyAll}, true},
		{"deny-all with deny CIDR", Policy{Mode: ModeDenyAll, DenyCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, true},
		{"custom", Policy{Mode: ModeCustom, AllowDomains: []string{"example.com", "*.github.com", "a-b.c_d.io"},
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}}, true},
		{"empty mode", Policy{}, false},
		{"unknown mode", Policy{Mode: "open"}, false},
		{"domains need custom", Policy{Mode: ModeAllowAll, AllowDomains: []string{"example.com"}}, false},
		{"uppercase domain", Policy{Mode: ModeCustom, AllowDomains: []string{"Example.com"}}, false},
		{"trailing dot", Policy{Mode: ModeCustom, AllowDomains: []string{"example.com."}}, false},
		{"wildcard inside", Policy{Mode: ModeCustom, AllowDomains: []string{"a.*.com"}}, false},
		{"bare wildcard", Policy{Mode: ModeCustom, AllowDomains: []string{"*."}}, false},
		{"label with leading hyphen", Policy{Mode: ModeCustom, AllowDomains: []string{"-a.com"}}, false},
		{"space", Policy{Mode: ModeCustom, AllowDomains: []string{"a b.com"}}, false},
		{"invalid CIDR", Policy{Mode: ModeCustom, AllowCIDRs: []netip.Prefix{{}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && (!errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_policy") {
				t.Fatalf("error %v: want kind ErrInvalid, code invalid_policy", err)
			}
		})
	}
}

func TestAllowsName(t *testing.T) {
	custom := Policy{Mode: ModeCustom, AllowDomains: []string{"example.com", "*.github.com"}}
	tests := []struct {
		name   string
		policy Policy
		host   string
		want   bool
	}{
		{"exact", custom, "example.com", true},
		{"subdomain of exact", custom, "www.example.com", false},
		{"wildcard subdomain", custom, "api.github.com", true},
		{"wildcard deep", custom, "a.b.github.com", true},
		{"wildcard apex", custom, "github.com", false},
		{"suffix trick", custom, "evilgithub.com", false},
		{"other", custom, "example.org", false},
		{"allow-all", Policy{Mode: ModeAllowAll}, "anything.test", true},
		{"deny-all", Policy{Mode: ModeDenyAll}, "example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.allowsName(tt.host); got != tt.want {
				t.Fatalf("allowsName(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	up := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}
	tests := []struct {
		name string
		c    Config
		ok   bool
	}{
		{"default pool", Config{DataDir: "/d", Pool: DefaultPool, Upstream: up}, true},
		{"no data dir", Config{Pool: DefaultPool, Upstream: up}, false},
		{"unmasked pool", Config{DataDir: "/d", Pool: netip.MustParsePrefix("10.213.0.1/16"), Upstream: up}, false},
		{"pool too small", Config{DataDir: "/d", Pool: netip.MustParsePrefix("10.213.0.0/31"), Upstream: up}, false},
		{"ipv6 pool", Config{DataDir: "/d", Pool: netip.MustParsePrefix("fd00::/64"), Upstream: up}, false},
		{"no upstream", Config{DataDir: "/d", Pool: DefaultPool}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestAddressing(t *testing.T) {
	pool := netip.MustParsePrefix("10.213.0.0/16")
	tests := []struct {
		slot     int
		host, sb string
	}{
		{0, "10.213.0.1", "10.213.0.2"},
		{1, "10.213.0.5", "10.213.0.6"},
		{64, "10.213.1.1", "10.213.1.2"},
		{16383, "10.213.255.253", "10.213.255.254"},
	}
	for _, tt := range tests {
		h, s := slotAddrs(pool, tt.slot)
		if h.String() != tt.host || s.String() != tt.sb {
			t.Errorf("slot %d: got %v %v, want %s %s", tt.slot, h, s, tt.host, tt.sb)
		}
		if slotOf(pool, s) != tt.slot || slotOf(pool, h) != tt.slot {
			t.Errorf("slotOf(%v) = %d, want %d", s, slotOf(pool, s), tt.slot)
		}
	}
	if n := poolSlots(pool); n != 16384 {
		t.Errorf("poolSlots = %d", n)
	}
	tag := instanceTag("/var/lib/paddock")
	if n := hostIfName(tag, "sandbox-1"); len(n) != 14 || !isOurIfName(tag, n) || n == hostIfName(tag, "sandbox-2") ||
		isOurIfName(instanceTag("/tmp/other"), n) {
		t.Errorf("hostIfName = %q", n)
	}
}

func TestMergeRanges(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		in   []netip.Prefix
		want []string
	}{
		{"disjoint", []netip.Prefix{p("10.0.0.0/8"), p("192.168.0.0/16")}, []string{"10.0.0.0-10.255.255.255", "192.168.0.0-192.168.255.255"}},
		{"contained", []netip.Prefix{p("10.0.0.0/8"), p("10.1.2.3/32")}, []string{"10.0.0.0-10.255.255.255"}},
		{"adjacent", []netip.Prefix{p("10.0.0.4/30"), p("10.0.0.0/30")}, []string{"10.0.0.0-10.0.0.7"}},
		{"unmasked", []netip.Prefix{p("10.0.0.9/30")}, []string{"10.0.0.8-10.0.0.11"}},
		{"everything", []netip.Prefix{p("0.0.0.0/0"), p("1.2.3.4/32")}, []string{"0.0.0.0-255.255.255.255"}},
		{"v6", []netip.Prefix{p("fe80::/10")}, []string{"fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range mergeRanges(tt.in) {
				got = append(got, r.first.String()+"-"+r.last.String())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}
