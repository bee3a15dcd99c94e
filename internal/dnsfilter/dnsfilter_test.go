package dnsfilter

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestFilterAnswer(t *testing.T) {
	private := netip.MustParsePrefix("10.0.0.0/8")
	blocked := func(a netip.Addr) bool { return private.Contains(a.Unmap()) }
	a := func(name, ip string, ttl uint32) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
	}
	aaaa := func(name, ip string) dns.RR {
		return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP(ip)}
	}
	cname := func(name, target string) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target}
	}
	https := func(v4 ...string) dns.RR {
		var hint []net.IP
		for _, ip := range v4 {
			hint = append(hint, net.ParseIP(ip).To4())
		}
		return &dns.HTTPS{SVCB: dns.SVCB{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: 60},
			Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{&dns.SVCBIPv4Hint{Hint: hint}}}}
	}
	tests := []struct {
		name        string
		answer      []dns.RR
		extra       []dns.RR
		wantAddrs   []string
		wantTTL     time.Duration
		wantDropped int
		wantAnswer  int
		wantRefuse  bool
	}{
		{"public", []dns.RR{a("x.", "93.184.216.34", 300)}, nil, []string{"93.184.216.34"}, 300 * time.Second, 0, 1, false},
		{"private", []dns.RR{a("x.", "10.0.0.5", 60)}, nil, nil, MaxTTL, 1, 0, true},
		{"mapped private", []dns.RR{aaaa("x.", "::ffff:10.0.0.5")}, nil, nil, MaxTTL, 1, 0, true},
		{"cname chain into private", []dns.RR{cname("x.", "y."), cname("y.", "z."), a("z.", "10.1.1.1", 60)}, nil, nil, MaxTTL, 1, 2, true},
		{"mixed keeps the public one", []dns.RR{a("x.", "10.0.0.5", 10), a("x.", "93.184.216.34", 120)}, nil,
			[]string{"93.184.216.34"}, 120 * time.Second, 1, 1, false},
		{"private glue", []dns.RR{a("x.", "93.184.216.34", 60)}, []dns.RR{a("ns.", "10.9.9.9", 60)}, []string{"93.184.216.34"}, time.Minute, 1, 1, false},
		{"https hints", []dns.RR{https("10.0.0.1", "93.184.216.34")}, nil, nil, MaxTTL, 1, 1, false},
		{"https hints all private", []dns.RR{https("10.0.0.1")}, nil, nil, MaxTTL, 1, 1, false},
		{"no addresses", []dns.RR{cname("x.", "y.")}, nil, nil, MaxTTL, 0, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &dns.Msg{Answer: tt.answer, Extra: tt.extra}
			addrs, ttl, dropped, refuse := FilterAnswer(m, blocked)
			var got []string
			for _, a := range addrs {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.wantAddrs) || ttl != tt.wantTTL || dropped != tt.wantDropped || len(m.Answer) != tt.wantAnswer ||
				refuse != tt.wantRefuse {
				t.Fatalf("FilterAnswer = %v, %v, %d dropped, %d answers, refuse %v; want %v, %v, %d, %d, %v",
					got, ttl, dropped, len(m.Answer), refuse, tt.wantAddrs, tt.wantTTL, tt.wantDropped, tt.wantAnswer, tt.wantRefuse)
			}
			for _, rr := range slices.Concat(m.Answer, m.Extra) {
				if h, ok := rr.(*dns.HTTPS); ok {
					for _, kv := range h.Value {
						if v4, ok := kv.(*dns.SVCBIPv4Hint); ok && (len(v4.Hint) != 1 || v4.Hint[0].String() != "93.184.216.34") {
							t.Fatalf("ipv4hint = %v, want only the public address", v4.Hint)
						}
					}
					if _, err := dns.NewRR(h.String()); err != nil {
						t.Fatalf("filtered record %q does not parse: %v", h, err)
					}
				}
			}
		})
	}
}
