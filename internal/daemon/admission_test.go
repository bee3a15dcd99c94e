package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/sdk"
)

// replica is one of two daemons sharing a store.
type replica struct {
	d   *Daemon
	url string
	hc  *http.Client
}

// startReplica starts a daemon on its own data dir and fake driver, with
// st as its store and name as its node name, behind a test listener.
func startReplica(t *testing.T, st store.Store, name string) *replica {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	cfg := Config{DataDir: newDataDir(t), NoNetwork: true, NodeName: name, PublicURL: "http://localhost:" + portOf(hs.Listener.Addr())}
	d, err := Start(t.Context(), cfg, WithDriver(fake.NewDriver(t, fake.DriverConfig{})), WithStore(st),
		WithAdmissionConfig(func(c *admission.Config) { c.Poll = 20 * time.Millisecond }))
	if err != nil {
		hs.Close()
		t.Fatalf("Start %s: %v", name, err)
	}
	hs.Config.Handler = d.Handler()
	hs.Start()
	r := &replica{d: d, url: hs.URL, hc: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(func() {
		d.CloseStreams()
		hs.Close()
		r.hc.CloseIdleConnections()
		if err := d.Close(); err != nil {
			t.Errorf("Close %s: %v", name, err)
		}
	})
	return r
}

// create asks for a sandbox with a queue deadline and returns the status,
// the Retry-After and the sandbox's id.
func (r *replica) create(t *testing.T, token string, queueTimeout time.Duration) (int, string, string) {
	t.Helper()
	body, _ := json.Marshal(api.CreateSandboxRequest{})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		r.url+api.Prefix+"/sandboxes?queueTimeoutMs="+itoa(queueTimeout.Milliseconds()), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb api.Sandbox
	_ = json.NewDecoder(resp.Body).Decode(&sb)
	return resp.StatusCode, resp.Header.Get("Retry-After"), sb.ID
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestAdmissionTwoReplicas: two daemons on one store (SQLite, FerretDB)
// share a team's limit and queue: over the limit on either, a create
// waits; past its deadline it is 429 with Retry-After; a sandbox deleted
// on one replica admits the create waiting on the other.
func TestAdmissionTwoReplicas(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) (store.Store, store.Store)
	}{
		{"SQLite", func(t *testing.T) (store.Store, store.Store) {
			path := filepath.Join(t.TempDir(), "paddock.db")
			open := func() store.Store {
				db, err := sqlite.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			return open(), open()
		}},
		{"FerretDB", func(t *testing.T) (store.Store, store.Store) {
			uri, db := mongotest.URI(t), mongotest.NewDB()
			return mongotest.Open(t, uri, db), mongotest.Open(t, uri, db)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sa, sb := tc.open(t)
			a := startReplica(t, sa, "node-a")
			b := startReplica(t, sb, "node-b")
			token, created := a.d.AdminToken()
			if !created {
				t.Fatal("the first replica made no admin token")
			}
			ctx := t.Context()
			admin := sdk.New(a.url, token, sdk.WithHTTPClient(a.hc))
			if _, err := admin.SetTeamLimits(ctx, auth.BootstrapTeamID, api.TeamLimits{Concurrent: 2}); err != nil {
				t.Fatal(err)
			}

			code, _, first := a.create(t, token, time.Second)
			if code != http.StatusCreated {
				t.Fatalf("create on a: %d", code)
			}
			if code, _, _ := b.create(t, token, time.Second); code != http.StatusCreated {
				t.Fatalf("create on b: %d", code)
			}
			// The team's two slots are taken on the two replicas together.
			if code, retry, _ := a.create(t, token, 100*time.Millisecond); code != http.StatusTooManyRequests || retry == "" {
				t.Fatalf("a third create: %d, Retry-After %q; want 429 with one", code, retry)
			}

			// A create waits on b; the sandbox a deletes lets it in.
			done := make(chan int, 1)
			go func() {
				code, _, _ := b.create(t, token, 30*time.Second)
				done <- code
			}()
			for {
				st, err := admin.TeamLimits(ctx, auth.BootstrapTeamID)
				if err != nil {
					t.Fatal(err)
				}
				if st.Usage.Queued == 1 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := a.d.Node().Delete(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			if code := <-done; code != http.StatusCreated {
				t.Fatalf("the waiting create on b: %d", code)
			}
			st, err := admin.TeamLimits(ctx, auth.BootstrapTeamID)
			if err != nil {
				t.Fatal(err)
			}
			if st.Usage.Concurrent != 2 || st.Usage.Queued != 0 {
				t.Fatalf("team use %+v, want 2 held, none queued", st.Usage)
			}
		})
	}
}

// TestAdmissionRoundRobin: when the host is full, two teams' queued
// creates are served in turn, each team's in its order of arrival.
func TestAdmissionRoundRobin(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, MaxSandboxes: 1}, WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx := t.Context()
	r := &replica{d: s.d, url: s.url, hc: s.hc}
	tokens := map[string]string{}
	for _, name := range []string{"a", "b"} {
		team, err := s.client.CreateTeam(ctx, "team-"+name)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.client.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: "t", Role: store.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = tok.Secret
	}
	// The host's one slot is taken.
	admin, _ := s.d.AdminToken()
	code, _, first := r.create(t, admin, time.Second)
	if code != http.StatusCreated {
		t.Fatalf("first create: %d", code)
	}

	type done struct {
		name string
		id   string
		code int
	}
	results := make(chan done, 6)
	queued := 0
	for _, team := range []string{"a", "b"} {
		for i := range 3 {
			name := fmt.Sprintf("%s%d", team, i+1)
			go func() {
				code, _, id := r.create(t, tokens[team], 30*time.Second)
				results <- done{name, id, code}
			}()
			// Wait until it is in the queue, so the order of arrival is known.
			queued++
			for s.d.admit.Waiting() < queued {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	// Each sandbox ends in turn: the next create goes.
	var order []string
	last := first
	for range 6 {
		if err := s.d.Node().Delete(context.Background(), last); err != nil {
			t.Fatal(err)
		}
		res := <-results
		if res.code != http.StatusCreated {
			t.Fatalf("create %s: %d", res.name, res.code)
		}
		order = append(order, res.name)
		last = res.id
	}
	if err := s.d.Node().Delete(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a1", "b1", "a2", "b2", "a3", "b3"}; !slices.Equal(order, want) {
		t.Fatalf("served %v, want %v", order, want)
	}
}

// snapDriver gives the fake driver the Snapshotter power, so that
// sandboxes can pause.
type snapDriver struct{ *fake.Driver }

func (d snapDriver) Snapshot(ctx context.Context, id string, _ *runtime.Rootfs, dst string, maxBytes int64) (int64, error) {
	return 2, os.WriteFile(filepath.Join(dst, "from-"+id), []byte("hi"), 0o644)
}

// TestAdmissionPauseResume: a paused sandbox gives its team's slot back
// (nothing of it runs), so another sandbox can have it; its resume is
// admitted like a create: refused with a Retry-After while the team is
// at its limit, and let in once a slot is free.
func TestAdmissionPauseResume(t *testing.T) {
	hs := httptest.NewUnstartedServer(nil)
	cfg := Config{DataDir: newDataDir(t), NoNetwork: true, PublicURL: "http://localhost:" + portOf(hs.Listener.Addr())}
	d, err := Start(t.Context(), cfg, WithDriver(snapDriver{fake.NewDriver(t, fake.DriverConfig{})}),
		WithAdmissionConfig(func(c *admission.Config) { c.Poll = 20 * time.Millisecond }))
	if err != nil {
		hs.Close()
		t.Fatal(err)
	}
	hs.Config.Handler = d.Handler()
	hs.Start()
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		d.CloseStreams()
		hs.Close()
		hc.CloseIdleConnections()
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx := t.Context()
	token, _ := d.AdminToken()
	admin := sdk.New(hs.URL, token, sdk.WithHTTPClient(hc))
	if _, err := admin.SetTeamLimits(ctx, auth.BootstrapTeamID, api.TeamLimits{Concurrent: 1}); err != nil {
		t.Fatal(err)
	}
	usage := func() api.TeamUsage {
		t.Helper()
		st, err := admin.TeamLimits(ctx, auth.BootstrapTeamID)
		if err != nil {
			t.Fatal(err)
		}
		return st.Usage
	}
	first, err := admin.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	// The pause's release goes through admission's pump.
	for u := usage(); u.Concurrent != 0; u = usage() {
		time.Sleep(10 * time.Millisecond)
	}
	second, err := admin.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatalf("a create while the team's one sandbox is paused: %v", err)
	}
	// The team is at its limit: the resume waits, then is refused.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+api.Prefix+"/sandboxes/"+first.ID+"/resume?queueTimeoutMs=100", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("resume at the team's limit: %d, Retry-After %q; want 429 with one", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if sb, err := d.Node().Get(ctx, first.ID); err != nil || sb.State != sandbox.Paused {
		t.Fatalf("after the refused resume: %s, %v; want it still paused", sb.State, err)
	}
	if err := second.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for u := usage(); u.Concurrent != 0; u = usage() {
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Resume(ctx, 0); err != nil {
		t.Fatalf("resume with a free slot: %v", err)
	}
	if u := usage(); u.Concurrent != 1 {
		t.Fatalf("after the resume the team holds %d, want 1", u.Concurrent)
	}
	if err := first.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}
