package sdk

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

// TestRedirectDropsBearer is the client half of a live hole: an app or a
// sandbox port answers a redirect to another sandbox on the API's own
// origin, and a client that resends its bearer there hands paddock's token
// to that sandbox's code.
func TestRedirectDropsBearer(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // path -> Authorization received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization") + "|" + r.Header.Get(api.HeaderPortToken)
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/app/") {
			http.Redirect(w, r, "/s/attacker/3000/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)

	redirects := 0
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { redirects++; return nil }}
	for name, c := range map[string]*Client{
		"default client": New(srv.URL, "pdk_secret"),
		"own client":     New(srv.URL, "pdk_secret", WithHTTPClient(hc)),
	} {
		t.Run(name, func(t *testing.T) {
			req, err := c.AppRequest(context.Background(), "prj", http.MethodGet, "/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(api.HeaderPortToken, "tok")
			resp, err := c.DoApp(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			if got := seen[api.Prefix+"/projects/prj/app/"]; got != "Bearer pdk_secret|tok" {
				t.Errorf("the app proxy got %q, want the bearer", got)
			}
			if got, ok := seen["/s/attacker/3000/"]; !ok || got != "|" {
				t.Errorf("the redirect target got %q (reached %v), want no credentials", got, ok)
			}
		})
	}
	if redirects != 1 {
		t.Errorf("the caller's CheckRedirect ran %d times, want 1", redirects)
	}
	if hc.CheckRedirect == nil {
		t.Error("the caller's client was changed")
	}
}
