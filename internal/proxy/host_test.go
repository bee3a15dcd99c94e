package proxy

import (
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		name, host, domain string
		wantID             string
		wantPort           int
		wantOK             bool
	}{
		{"localhost with port", "3000-sb-abc.localhost:7420", "localhost", "sb-abc", 3000, true},
		{"configured domain", "8080-abc.sandbox.example.com", "sandbox.example.com", "abc", 8080, true},
		{"upper case", "3000-SB-ABC.Sandbox.Example.COM", "sandbox.example.com", "sb-abc", 3000, true},
		{"upper case domain config", "3000-sb.sandbox.example.com", "Sandbox.Example.com", "sb", 3000, true},
		{"trailing root dot", "3000-sb.localhost.", "localhost", "sb", 3000, true},
		{"domain with dots around", "3000-sb.localhost", ".localhost.", "sb", 3000, true},
		{"no domain configured", "1-0abc.localhost", "", "", 0, false},
		{"numeric id", "1-0.localhost", "localhost", "0", 1, true},
		{"max port", "65535-sb.localhost", "localhost", "sb", 65535, true},
		{"id of 63 chars", "1-" + strings.Repeat("a", 63) + ".localhost", "localhost", strings.Repeat("a", 63), 1, true},
		{"id of 64 chars", "1-" + strings.Repeat("a", 64) + ".localhost", "localhost", "", 0, false},
		{"port zero", "0-sb.localhost", "localhost", "", 0, false},
		{"port too big", "65536-sb.localhost", "localhost", "", 0, false},
		{"leading zero", "03000-sb.localhost", "localhost", "", 0, false},
		{"signed port", "+3000-sb.localhost", "localhost", "", 0, false},
		{"no port", "sb.localhost", "localhost", "", 0, false},
		{"empty port", "-sb.localhost", "localhost", "", 0, false},
		{"no id", "3000-.localhost", "localhost", "", 0, false},
		{"id starting with dash", "3000--sb.localhost", "localhost", "", 0, false},
		{"id with underscore", "3000-s_b.localhost", "localhost", "", 0, false},
		{"two labels", "3000-sb.extra.localhost", "localhost", "", 0, false},
		{"the domain itself", "localhost:7420", "localhost", "", 0, false},
		{"other domain", "3000-sb.example.org", "localhost", "", 0, false},
		{"suffix without dot", "3000-sbxlocalhost", "localhost", "", 0, false},
		{"lookalike domain", "3000-sb.evillocalhost", "localhost", "", 0, false},
		{"empty domain", "3000-sb.localhost", "", "", 0, false},
		{"empty host", "", "localhost", "", 0, false},
		{"ip literal", "[::1]:7420", "localhost", "", 0, false},
		{"port-looking id suffix", "3000-sb:99.localhost", "localhost", "", 0, false},
		{"non-ASCII letter that lowercases to ASCII", "3000-sb\u212a.localhost", "localhost", "", 0, false},
		{"non-ASCII domain letter", "3000-sb.\u212aube.example", "kube.example", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, port, ok := ParseHost(tt.host, tt.domain)
			if id != tt.wantID || port != tt.wantPort || ok != tt.wantOK {
				t.Errorf("ParseHost(%q, %q) = %q, %d, %v; want %q, %d, %v",
					tt.host, tt.domain, id, port, ok, tt.wantID, tt.wantPort, tt.wantOK)
			}
		})
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, path string
		wantID     string
		wantPort   int
		wantRest   string
		wantOK     bool
	}{
		{"root", "/s/sb-abc/3000/", "sb-abc", 3000, "/", true},
		{"no trailing slash", "/s/sb-abc/3000", "sb-abc", 3000, "/", true},
		{"deep path", "/s/sb/8080/api/v1/x", "sb", 8080, "/api/v1/x", true},
		{"keeps trailing slash", "/s/sb/8080/dir/", "sb", 8080, "/dir/", true},
		{"no port", "/s/sb/", "", 0, "", false},
		{"no id", "/s//3000/", "", 0, "", false},
		{"upper-case id", "/s/SB/3000/", "", 0, "", false},
		{"bad port", "/s/sb/30x0/", "", 0, "", false},
		{"leading zero", "/s/sb/080/", "", 0, "", false},
		{"port too big", "/s/sb/70000/", "", 0, "", false},
		{"wrong root", "/x/sb/3000/", "", 0, "", false},
		{"no leading slash", "s/sb/3000/", "", 0, "", false},
		{"just root", "/s/", "", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, port, rest, ok := ParsePath(tt.path)
			if id != tt.wantID || port != tt.wantPort || rest != tt.wantRest || ok != tt.wantOK {
				t.Errorf("ParsePath(%q) = %q, %d, %q, %v; want %q, %d, %q, %v",
					tt.path, id, port, rest, ok, tt.wantID, tt.wantPort, tt.wantRest, tt.wantOK)
			}
		})
	}
}

func TestRouteFor(t *testing.T) {
	tests := []struct {
		name, id string
		port     int
		base     string
		want     Route
		wantErr  bool
	}{
		{"local", "sb-abc", 3000, "http://localhost:7420", Route{3000, "3000-sb-abc", "http://3000-sb-abc.localhost:7420/"}, false},
		{"https domain", "sb", 8080, "https://Sandbox.Example.com", Route{8080, "8080-sb", "https://8080-sb.sandbox.example.com/"}, false},
		{"bare domain means https", "sb", 80, "sandbox.example.com", Route{80, "80-sb", "https://80-sb.sandbox.example.com/"}, false},
		{"base path ignored", "sb", 80, "https://sandbox.example.com/ignored", Route{80, "80-sb", "https://80-sb.sandbox.example.com/"}, false},
		{"bad id", "SB", 80, "http://localhost", Route{}, true},
		{"bad port", "sb", 0, "http://localhost", Route{}, true},
		{"bad scheme", "sb", 80, "ftp://localhost", Route{}, true},
		{"no host", "sb", 80, "http://", Route{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RouteFor(tt.id, tt.port, tt.base)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("RouteFor(%q, %d, %q) = %+v, %v; want %+v, err %v", tt.id, tt.port, tt.base, got, err, tt.want, tt.wantErr)
			}
			if err != nil {
				return
			}
			// What RouteFor builds, ParseHost reads back.
			host := strings.TrimSuffix(strings.SplitN(got.URL, "://", 2)[1], "/")
			domain := strings.SplitN(host, ".", 2)[1]
			if i := strings.LastIndexByte(domain, ':'); i >= 0 {
				domain = domain[:i]
			}
			if id, port, ok := ParseHost(host, domain); !ok || id != tt.id || port != tt.port {
				t.Errorf("ParseHost(%q, %q) = %q, %d, %v; want the route back", host, domain, id, port, ok)
			}
		})
	}
}

func TestStripQueryParam(t *testing.T) {
	tests := []struct{ name, raw, want string }{
		{"empty", "", ""},
		{"only token", "paddock_token=abc", ""},
		{"middle", "a=1&paddock_token=abc&b=2", "a=1&b=2"},
		{"repeated", "paddock_token=x&a=%20&paddock_token=y", "a=%20"},
		{"escaped name", "paddock%5Ftoken=x&a=1", "a=1"},
		{"no value", "paddock_token&a", "a"},
		{"similar name kept", "paddock_token2=x&my_paddock_token=y", "paddock_token2=x&my_paddock_token=y"},
		{"encoding kept", "q=a%2Bb+c&paddock_token=x", "q=a%2Bb+c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StripQueryParam(tt.raw, TokenParam); got != tt.want {
				t.Errorf("StripQueryParam(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}
