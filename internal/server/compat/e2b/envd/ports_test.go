package envd

import (
	"net/http"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestPorts: a request for another port goes to the port proxy's path
// form; a valid traffic token becomes the proxy's own token and declares
// the port; E2B's credentials never reach the proxy (nor the sandbox).
func TestPorts(t *testing.T) {
	traffic := func(e *testEnv, id string) http.Header {
		return http.Header{HeaderTrafficToken: {e.tokens.Traffic(id)}}
	}
	tests := []struct {
		name     string
		req      func(e *testEnv) request
		status   int
		path     string // forwarded path, "" when nothing is forwarded
		token    bool   // forwarded with a valid proxy token
		declared bool   // port 3000 of sbA declared after
	}{
		{"host form with the traffic token", func(e *testEnv) request {
			return request{path: "/a/b?q=1", host: "3000-" + sbA + "." + testDomain, header: traffic(e, sbA)}
		}, http.StatusTeapot, "/s/" + sbA + "/3000/a/b", true, true},
		{"single host form with the traffic token", func(e *testEnv) request {
			return request{path: "/", sandbox: sbA, port: "3000", header: traffic(e, sbA)}
		}, http.StatusTeapot, "/s/" + sbA + "/3000/", true, true},
		{"no traffic token: the proxy decides", func(e *testEnv) request {
			return request{path: "/x", sandbox: sbA, port: "3000", token: e.tokens.Access(sbA)}
		}, http.StatusTeapot, "/s/" + sbA + "/3000/x", false, false},
		{"another sandbox's traffic token", func(e *testEnv) request {
			return request{path: "/", sandbox: sbA, port: "3000", header: traffic(e, sbB)}
		}, http.StatusUnauthorized, "", false, false},
		{"the access token as traffic token", func(e *testEnv) request {
			return request{path: "/", sandbox: sbA, port: "3000", header: http.Header{HeaderTrafficToken: {e.tokens.Access(sbA)}}}
		}, http.StatusUnauthorized, "", false, false},
		{"a gone sandbox", func(e *testEnv) request {
			return request{path: "/", sandbox: "sb-gone", port: "3000", header: traffic(e, "sb-gone")}
		}, http.StatusNotFound, "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			resp, body := e.do(t, tc.req(e))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			reqs := e.ports.forwarded()
			if tc.path == "" {
				if len(reqs) != 0 {
					t.Fatalf("forwarded %d requests", len(reqs))
				}
			} else {
				if len(reqs) != 1 {
					t.Fatalf("forwarded %d requests, want 1", len(reqs))
				}
				r := reqs[0]
				if r.URL.Path != tc.path {
					t.Errorf("forwarded path %q, want %q", r.URL.Path, tc.path)
				}
				for _, k := range []string{HeaderTrafficToken, HeaderAccessToken, HeaderSandboxID, HeaderSandboxPort} {
					if r.Header.Get(k) != "" {
						t.Errorf("%s was forwarded", k)
					}
				}
				err := e.signer.Verify(r.Header.Get(proxy.TokenHeader), sbA, 3000)
				if (err == nil) != tc.token {
					t.Errorf("forwarded proxy token: %v, want valid %v", err, tc.token)
				}
			}
			sb, _ := e.sbs.Get(t.Context(), sbA)
			if got := slices.ContainsFunc(sb.Ports, func(p sandbox.Port) bool { return p.Port == 3000 && !p.Public }); got != tc.declared {
				t.Errorf("port 3000 declared private: %v, want %v (ports %+v)", got, tc.declared, sb.Ports)
			}
		})
	}
}
