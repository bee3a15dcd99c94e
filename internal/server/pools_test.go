package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// fakePools is a hand-written server.Pools: a map of specs.
type fakePools struct {
	mu    sync.Mutex
	specs map[string]sandbox.PoolSpec
}

func (f *fakePools) List() []sandbox.PoolStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sandbox.PoolStatus
	for _, s := range f.specs {
		out = append(out, sandbox.PoolStatus{PoolSpec: s, Idle: s.Min, Hits: 7})
	}
	return out
}

func (f *fakePools) Get(name string) (sandbox.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.specs[name]
	if !ok {
		return sandbox.PoolStatus{}, sandbox.Errorf(sandbox.ErrNotFound, "pool_not_found", "no pool %q", name)
	}
	return sandbox.PoolStatus{PoolSpec: s, Idle: s.Min, Hits: 7}, nil
}

func (f *fakePools) Set(_ context.Context, s sandbox.PoolSpec) (sandbox.PoolStatus, error) {
	if err := s.Validate(); err != nil {
		return sandbox.PoolStatus{}, err
	}
	f.mu.Lock()
	f.specs[s.Name] = s
	f.mu.Unlock()
	return f.Get(s.Name)
}

func (f *fakePools) Remove(_ context.Context, name string) error {
	if _, err := f.Get(name); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.specs, name)
	f.mu.Unlock()
	return nil
}

// TestPools: the host admin sets, reads and removes pools; to a team,
// even its admin, the list is forbidden and a named pool not found.
func TestPools(t *testing.T) {
	e := setupTeams(t)
	pools := &fakePools{specs: map[string]sandbox.PoolSpec{}}
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL

	status, body := e.do(t, e.host, "PUT", "/api/v1/pools/web", `{"image":"host","resources":{"memoryMB":256},"min":2,"max":4,"networkPolicy":{"mode":"deny-all"}}`)
	if status != http.StatusOK {
		t.Fatalf("PUT = %d %s", status, body)
	}
	var p api.Pool
	if err := json.Unmarshal(body, &p); err != nil || p.Name != "web" || p.Min != 2 || p.Max != 4 || p.Idle != 2 ||
		p.Resources.MemoryMB != 256 || p.NetworkPolicy == nil || p.NetworkPolicy.Mode != "deny-all" {
		t.Errorf("PUT answered %s (%v)", body, err)
	}
	for _, tc := range []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"host admin lists", e.host, "GET", "/api/v1/pools", "", http.StatusOK},
		{"host admin gets", e.host, "GET", "/api/v1/pools/web", "", http.StatusOK},
		{"unknown pool", e.host, "GET", "/api/v1/pools/nope", "", http.StatusNotFound},
		{"bad size", e.host, "PUT", "/api/v1/pools/web", `{"min":3,"max":1}`, http.StatusBadRequest},
		{"negative resources", e.host, "PUT", "/api/v1/pools/web", `{"resources":{"memoryMB":-1},"max":1}`, http.StatusBadRequest},
		{"unknown field", e.host, "PUT", "/api/v1/pools/web", `{"max":1,"teamId":"x"}`, http.StatusBadRequest},
		{"team admin lists", e.adminA, "GET", "/api/v1/pools", "", http.StatusForbidden},
		{"team admin gets", e.adminA, "GET", "/api/v1/pools/web", "", http.StatusNotFound},
		{"team admin sets", e.adminA, "PUT", "/api/v1/pools/web", `{"max":1}`, http.StatusNotFound},
		{"member removes", e.memberB, "DELETE", "/api/v1/pools/web", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := e.do(t, tc.token, tc.method, tc.path, tc.body); status != tc.want {
				t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, status, body, tc.want)
			}
		})
	}
	if st, _ := pools.Get("web"); st.Max != 4 {
		t.Errorf("a refused request changed the pool: %+v", st)
	}
	if status, body := e.do(t, e.host, "DELETE", "/api/v1/pools/web", ""); status != http.StatusNoContent {
		t.Errorf("DELETE = %d %s", status, body)
	}
	if status, _ := e.do(t, e.host, "GET", "/api/v1/pools/web", ""); status != http.StatusNotFound {
		t.Errorf("GET after DELETE = %d", status)
	}

	// Without pools the routes answer 501.
	e2 := setupTeams(t)
	if status, body := e2.do(t, e2.host, "GET", "/api/v1/pools", ""); status != http.StatusNotImplemented {
		t.Errorf("no pools: %d %s", status, body)
	}
}
