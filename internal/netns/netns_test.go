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

func TestStaticBlocked(t *testing.T) {
	p := netip.MustParsePrefix
	base := Config{DataDir: "/d", Pool: DefaultPool}
	open := base
	open.AllowPrivate = []netip.Prefix{p("10.0.0.0/8"), p("100.64.0.0/10"), p("127.0.0.0/8"), p("169.254.0.0/16"), p("fd00::/8")}
	closed := open
	closed.BlockCIDRs = []netip.Prefix{p("10.5.0.0/16"), p("93.184.216.0/24")}
	tests := []struct {
		name    string
		c       Config
		addr    string
		blocked bool
	}{
		{"public", base, "93.184.216.34", false},
		{"public v6", base, "2606:2800:220:1::248", false},
		{"rfc1918", base, "10.1.2.3", true},
		{"rfc1918 172", base, "172.17.0.1", true},
		{"rfc1918 192", base, "192.168.1.1", true},
		{"cgnat", base, "100.64.0.1", true},
		{"alibaba metadata", base, "100.100.100.200", true},
		{"benchmarking", base, "198.18.0.1", true},
		{"ietf", base, "192.0.0.170", true},
		{"this network", base, "0.0.0.1", true},
		{"class E", base, "240.1.2.3", true},
		{"metadata", base, "169.254.169.254", true},
		{"unique local", base, "fd12::1", true},
		{"mapped", base, "::ffff:8.8.8.8", true},
		{"pool", base, "10.213.0.2", true},
		{"allowed rfc1918", open, "10.1.2.3", false},
		{"allowed cgnat", open, "100.64.0.1", false},
		{"allowed unique local", open, "fd12::1", false},
		{"alibaba metadata stays", open, "100.100.100.200", true},
		{"loopback stays", open, "127.0.0.1", true},
		{"link-local stays", open, "169.254.169.254", true},
		{"pool stays", open, "10.213.0.2", true},
		{"still private outside the allow list", open, "192.168.1.1", true},
		{"block wins over allow", closed, "10.5.0.1", true},
		{"allowed next to a block", closed, "10.6.0.1", false},
		{"blocked public", closed, "93.184.216.34", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := tt.c.staticBlocked()
			if err != nil {
				t.Fatal(err)
			}
			if got := set.Contains(netip.MustParseAddr(tt.addr)); got != tt.blocked {
				t.Fatalf("%s blocked = %v, want %v", tt.addr, got, tt.blocked)
			}
		})
	}
}

func TestValidSysctl(t *testing.T) {
	for key, want := range map[string]bool{
		"net.ipv4.ip_unprivileged_port_start": true,
		"net.ipv4.conf.eth0.forwarding":       true,
		"net.core.somaxconn":                  true,
		"net.ipv4.conf.eth0/1.forwarding":     false,
		"net.ipv4..x":                         false,
		"net.":                                false,
		"net":                                 false,
		"kernel.shm_rmid_forced":              false,
		"net.ipv4.ip_forward/../../kernel":    false,
		"net.ipv4.x y":                        false,
	} {
		if got := ValidSysctl(key); got != want {
			t.Errorf("ValidSysctl(%q) = %v, want %v", key, got, want)
		}
	}
}
