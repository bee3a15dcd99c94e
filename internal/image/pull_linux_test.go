package image

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestPullGuard: a registry the guard allows cannot make paddock connect
// to an address the guard refuses, neither by redirecting a blob there nor
// by naming it as its token realm; with the address allowed, the same pulls
// work. The registries listen on 127.0.0.2 (the allowed /32), the service
// they point at on 127.0.0.1, named "localhost": go-containerregistry
// refuses private IP literals itself, but not names that resolve to them,
// which only a check of the dialled address catches.
func TestPullGuard(t *testing.T) {
	needRoot(t)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	t.Setenv("DOCKER_CONFIG", t.TempDir())

	// Inside: what the registries point at, a token server and blob mirror.
	var insideHits atomic.Int32
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		insideHits.Add(1)
		if r.URL.Path == "/token" {
			json.NewEncoder(w).Encode(map[string]string{"token": "internal-secret"})
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(inside.Close)
	insideURL := "http://localhost:" + strings.TrimPrefix(inside.URL, "http://127.0.0.1:")

	serve := func(h http.HandlerFunc) string {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.2: %v", err)
		}
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
		srv.Start()
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	// A registry whose blobs redirect inside.
	redirecting := serve(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, insideURL+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	})
	// A registry whose token realm is inside.
	realm := serve(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer internal-secret" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+insideURL+`/token",service="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})

	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(redirecting+"/guard/img:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil { // pushes are not redirected
		t.Fatal(err)
	}
	registryOnly := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}

	tests := []struct {
		name     string
		registry string
		guard    netguard.Guard
		allowed  bool
	}{
		{"redirect refused", redirecting, netguard.Guard{Allow: registryOnly}, false},
		{"redirect allowed", redirecting, netguard.Guard{AllowPrivate: true}, true},
		{"realm refused", realm, netguard.Guard{Allow: registryOnly}, false},
		{"realm allowed", realm, netguard.Guard{AllowPrivate: true}, true},
		{"loopback registry refused by default", redirecting, netguard.Guard{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenStore(filepath.Join(t.TempDir(), "images"),
				StoreOptions{Guard: tt.guard, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			insideHits.Store(0)
			_, err = s.Pull(t.Context(), testTeam, tt.registry+"/guard/img:v1", PullOptions{Insecure: true}, nil)
			if tt.allowed {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				if insideHits.Load() == 0 {
					t.Fatal("the pull worked without the inside address: the test shows nothing")
				}
				return
			}
			if !errors.Is(err, sandbox.ErrForbidden) || sandbox.CodeOf(err) != "registry_address_forbidden" {
				t.Fatalf("pull = %v (code %q), want ErrForbidden registry_address_forbidden", err, sandbox.CodeOf(err))
			}
			if n := insideHits.Load(); n != 0 {
				t.Fatalf("the refused address got %d requests", n)
			}
		})
	}
}
