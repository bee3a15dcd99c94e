package proxy

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// hostSeeds are (host, domain) pairs: the table of TestParseHost's shapes.
var hostSeeds = [][2]string{
	{"3000-sb-abc.localhost:7420", "localhost"},
	{"8080-abc.sandbox.example.com", "sandbox.example.com"},
	{"3000-SB-ABC.Sandbox.Example.COM", "sandbox.example.com"},
	{"3000-sb.localhost.", "localhost"},
	{"3000-sb.localhost", ".localhost."},
	{"1-0.localhost", "localhost"},
	{"65535-sb.localhost", "localhost"},
	{"65536-sb.localhost", "localhost"},
	{"03000-sb.localhost", "localhost"},
	{"+3000-sb.localhost", "localhost"},
	{"3000--sb.localhost", "localhost"},
	{"3000-sb.extra.localhost", "localhost"},
	{"3000-sb.evillocalhost", "localhost"},
	{"[::1]:7420", "localhost"},
	{"3000-sb:99.localhost", "localhost"},
	{"3000-sb\u212a.localhost", "localhost"}, // KELVIN SIGN lowercases to k
	{"3000-sb.local\u0130host", "localhost"}, // dotted capital I
	{"app-p1.localhost", "localhost"},
}

// FuzzParseHost checks that a host the port proxy accepts names exactly one
// (sandbox, port): a valid id, a port in range, and the one spelling that
// RouteFor and PathPrefix give for them.
func FuzzParseHost(f *testing.F) {
	for _, s := range hostSeeds {
		f.Add(s[0], s[1])
	}
	f.Add("3000-"+strings.Repeat("a", 63)+".localhost", "localhost")
	f.Fuzz(func(t *testing.T, host, domain string) {
		id, port, ok := ParseHost(host, domain)
		if !ok {
			if id != "" || port != 0 {
				t.Fatalf("ParseHost(%q, %q) refused but returned %q, %d", host, domain, id, port)
			}
			return
		}
		checkRoute(t, id, port)
		name := host
		if h, _, err := net.SplitHostPort(host); err == nil {
			name = h
		}
		for _, c := range []byte(name) {
			if c >= 0x80 {
				t.Fatalf("ParseHost(%q, %q) accepted a host name that is not ASCII: %q, %d", host, domain, id, port)
			}
		}
		// The host is the route's host name up to ASCII case and a root dot.
		d := strings.Trim(strings.ToLower(domain), ".")
		want := fmt.Sprintf("%d-%s.%s", port, id, d)
		if got := strings.TrimSuffix(name, "."); !strings.EqualFold(got, want) || len(got) != len(want) {
			t.Fatalf("ParseHost(%q, %q) = %q, %d: the route's host is %q", host, domain, id, port, want)
		}
		// What RouteFor builds from it parses back to the same pair.
		r, err := RouteFor(id, port, "http://"+d+":7420")
		if err != nil {
			return // a domain url.Parse refuses: no URL to build
		}
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatalf("RouteFor(%q, %d) = %q: %v", id, port, r.URL, err)
		}
		if gid, gport, ok := ParseHost(u.Host, domain); !ok || gid != id || gport != port {
			t.Fatalf("ParseHost(RouteFor(%q, %d).URL host %q) = %q, %d, %v", id, port, u.Host, gid, gport, ok)
		}
	})
}

// FuzzParsePath checks the path form the same way: an accepted path is
// PathPrefix(id, port) followed by the rest, and the pair is valid.
func FuzzParsePath(f *testing.F) {
	for _, p := range []string{
		"/s/sb-abc/3000/", "/s/sb-abc/3000", "/s/sb/8080/api/v1/x", "/s/sb/8080/dir/", "/s/sb/", "/s//3000/",
		"/s/SB/3000/", "/s/sb/30x0/", "/s/sb/080/", "/s/sb/70000/", "/x/sb/3000/", "s/sb/3000/", "/s/",
		"/s/sb/3000/../../etc", "/s/sb/3000//x", "/s/sb/3000?x", "/s/sb/-1/", "/s/sb/ 80/",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		id, port, rest, ok := ParsePath(p)
		if !ok {
			if id != "" || port != 0 || rest != "" {
				t.Fatalf("ParsePath(%q) refused but returned %q, %d, %q", p, id, port, rest)
			}
			return
		}
		checkRoute(t, id, port)
		prefix := PathPrefix(id, port)
		if !strings.HasPrefix(rest, "/") || (p != prefix+rest && !(p == prefix && rest == "/")) {
			t.Fatalf("ParsePath(%q) = %q, %d, %q: not PathPrefix %q + rest", p, id, port, rest, prefix)
		}
	})
}

// checkRoute checks what both forms promise of an accepted pair.
func checkRoute(t *testing.T, id string, port int) {
	t.Helper()
	if !sandbox.ValidID(id) {
		t.Fatalf("accepted id %q fails sandbox.ValidID", id)
	}
	if port < 1 || port > 65535 {
		t.Fatalf("accepted port %d is out of range", port)
	}
	if gid, gport, rest, ok := ParsePath(PathPrefix(id, port) + "/x"); !ok || gid != id || gport != port || rest != "/x" {
		t.Fatalf("ParsePath(PathPrefix(%q, %d)+/x) = %q, %d, %q, %v", id, port, gid, gport, rest, ok)
	}
	if gid, gport, ok := ParseHost(fmt.Sprintf("%d-%s.example.com", port, id), "example.com"); !ok || gid != id || gport != port {
		t.Fatalf("ParseHost of the label of %q, %d = %q, %d, %v", id, port, gid, gport, ok)
	}
}
