// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Option adjusts the suite.
type Option func(*options)

type options struct {
	reopen func(t *testing.T, closed store.Store) store.Store
}

// Reopen lets the suite check that data outlives the store: reopen gets a
// store the suite has just closed and returns a new one on the same
// backing data (the same file, the same database).
func Reopen(reopen func(t *testing.T, closed store.Store) store.Store) Option {
	return func(o *options) { o.reopen = reopen }
}

// Run runs the suite. open returns a new, empty store each time it is
// called; it should register the store's Close with t.Cleanup (Close may
// then be called twice: once by the suite, once by the cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Teams", testTeams},
		{"Users", testUsers},
		{"Tokens", testTokens},
		{"Projects", testProjects},
		{"ProjectUpdates", testProjectUpdates},
		{"ActivationRace", testActivationRace},
		{"NoLostUpdates", testNoLostUpdates},
		{"Activations", testActivations},
		{"Pagination", testPagination},
		{"PageLimits", testPageLimits},
		{"Sandboxes", testSandboxes},
		{"SandboxMoves", testSandboxMoves},
		{"Commands", testCommands},
		{"CommandRetention", testCommandRetention},
		{"Usage", testUsage},
		{"UsageRollups", testUsageRollups},
		{"Budgets", testBudgets},
		{"Events", testEvents},
		{"ConcurrentEvents", testConcurrentEvents},
		{"Times", testTimes},
		{"Invalid", testInvalid},
	}
	tests = append(tests, vercelCases...)
	tests = append(tests, admissionCases...)
	tests = append(tests, e2bCases...)
	tests = append(tests, webhookCases...)
	tests = append(tests, leaseCases...)
	tests = append(tests, replicaCases...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	t.Run("Reopen", func(t *testing.T) {
		if o.reopen == nil {
			t.Skip("the opener cannot reopen a store")
		}
		testReopen(t, open(t), o.reopen)
	})
	t.Run("VercelReopen", func(t *testing.T) {
		if o.reopen == nil {
			t.Skip("the opener cannot reopen a store")
		}
		testVercelReopen(t, open(t), o.reopen)
	})
}

// ---- helpers ----

// base is a time with more precision than stores keep, in a zone other
// than UTC: what comes back must be store.Time of it.
var base = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+1", 3600))

func at(d time.Duration) time.Time { return base.Add(d) }

func ctx(t *testing.T) context.Context { return t.Context() }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless err matches kind and, if code is set, has that code.
func wantErr(t *testing.T, err, kind error, code string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error = %v, want kind %v", err, kind)
	}
	if code != "" && sandbox.CodeOf(err) != code {
		t.Fatalf("error code = %q (%v), want %q", sandbox.CodeOf(err), err, code)
	}
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func ids[T any](items []T, id func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// ---- teams, users, tokens ----

func testTeams(t *testing.T, s store.Store) {
	a := store.Team{ID: "team-a", Name: "Alpha", CreatedAt: at(0)}
	b := store.Team{ID: "team-b", Name: "Beta", CreatedAt: at(time.Second)}
	must(t, s.CreateTeam(ctx(t), b))
	must(t, s.CreateTeam(ctx(t), a))

	got, err := s.GetTeam(ctx(t), "team-a")
	must(t, err)
	a.CreatedAt = store.Time(a.CreatedAt)
	b.CreatedAt = store.Time(b.CreatedAt)
	equal(t, "GetTeam", got, a)

	list, err := s.ListTeams(ctx(t))
	must(t, err)
	equal(t, "ListTeams", list, []store.Team{a, b})

	wantErr(t, s.CreateTeam(ctx(t), store.Team{ID: "team-a", Name: "Other"}), sandbox.ErrConflict, "team_exists")
	wantErr(t, s.CreateTeam(ctx(t), store.Team{ID: "team-c", Name: "Alpha"}), sandbox.ErrConflict, "team_exists")
	_, err = s.GetTeam(ctx(t), "team-x")
	wantErr(t, err, sandbox.ErrNotFound, "team_not_found")

	// A zero CreatedAt is set by the store.
	before := time.Now().Add(-time.Second)
	must(t, s.CreateTeam(ctx(t), store.Team{ID: "team-now", Name: "Now"}))
	got, err = s.GetTeam(ctx(t), "team-now")
	must(t, err)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) || got.CreatedAt != store.Time(got.CreatedAt) {
		t.Fatalf("default CreatedAt = %v", got.CreatedAt)
	}
}

func testUsers(t *testing.T, s store.Store) {
	alice := store.User{ID: "u-alice", TeamID: "team-a", Issuer: "https://idp.example", Subject: "alice",
		Email: "alice@example.com", Name: "Alice", Role: store.RoleAdmin, CreatedAt: at(0)}
	bob := store.User{ID: "u-bob", TeamID: "team-a", Role: store.RoleMember, CreatedAt: at(time.Second)}
	carol := store.User{ID: "u-carol", TeamID: "team-b", Role: store.RoleMember, CreatedAt: at(2 * time.Second)}
	// Same subject at another issuer is another person.
	alice2 := store.User{ID: "u-alice2", TeamID: "team-b", Issuer: "https://other.example", Subject: "alice",
		Role: store.RoleMember, CreatedAt: at(3 * time.Second)}
	for _, u := range []store.User{alice, bob, carol, alice2} {
		must(t, s.CreateUser(ctx(t), u))
	}
	for _, u := range []*store.User{&alice, &bob, &carol, &alice2} {
		u.CreatedAt = store.Time(u.CreatedAt)
	}

	got, err := s.GetUser(ctx(t), "u-alice")
	must(t, err)
	equal(t, "GetUser", got, alice)
	got, err = s.GetUserBySubject(ctx(t), "https://idp.example", "alice")
	must(t, err)
	equal(t, "GetUserBySubject", got, alice)
	got, err = s.GetUserBySubject(ctx(t), "https://other.example", "alice")
	must(t, err)
	equal(t, "GetUserBySubject other issuer", got, alice2)

	_, err = s.GetUserBySubject(ctx(t), "https://idp.example", "nobody")
	wantErr(t, err, sandbox.ErrNotFound, "user_not_found")
	// Users without an identity are not found by an empty one.
	_, err = s.GetUserBySubject(ctx(t), "", "")
	wantErr(t, err, sandbox.ErrNotFound, "user_not_found")
	_, err = s.GetUser(ctx(t), "u-nobody")
	wantErr(t, err, sandbox.ErrNotFound, "user_not_found")

	wantErr(t, s.CreateUser(ctx(t), store.User{ID: "u-alice", TeamID: "team-a"}), sandbox.ErrConflict, "user_exists")
	wantErr(t, s.CreateUser(ctx(t), store.User{ID: "u-alice3", TeamID: "team-c", Issuer: "https://idp.example", Subject: "alice"}),
		sandbox.ErrConflict, "user_exists")

	list, err := s.ListUsers(ctx(t), "team-a")
	must(t, err)
	equal(t, "ListUsers team-a", list, []store.User{alice, bob})
	list, err = s.ListUsers(ctx(t), "")
	must(t, err)
	equal(t, "ListUsers all", ids(list, func(u store.User) string { return u.ID }), []string{"u-alice", "u-bob", "u-carol", "u-alice2"})
	list, err = s.ListUsers(ctx(t), "team-none")
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("ListUsers of an unknown team = %v", list)
	}

	// Deleting a user frees its identity for someone else.
	must(t, s.DeleteUser(ctx(t), "u-alice"))
	wantErr(t, s.DeleteUser(ctx(t), "u-alice"), sandbox.ErrNotFound, "user_not_found")
	_, err = s.GetUserBySubject(ctx(t), "https://idp.example", "alice")
	wantErr(t, err, sandbox.ErrNotFound, "user_not_found")
	must(t, s.CreateUser(ctx(t), store.User{ID: "u-alice4", TeamID: "team-c", Issuer: "https://idp.example", Subject: "alice", CreatedAt: at(time.Minute)}))
	list, err = s.ListUsers(ctx(t), "team-a")
	must(t, err)
	equal(t, "ListUsers team-a after delete", list, []store.User{bob})
}

func testTokens(t *testing.T, s store.Store) {
	t1 := store.Token{ID: "tok-1", TeamID: "team-a", UserID: "u-alice", Name: "ci", Hash: hash("secret-1"),
		Role: store.RoleMember, CreatedAt: at(0), ExpiresAt: at(24 * time.Hour)}
	t2 := store.Token{ID: "tok-2", TeamID: "team-a", Name: "admin", Hash: hash("secret-2"), Role: store.RoleAdmin, CreatedAt: at(time.Second)}
	t3 := store.Token{ID: "tok-3", TeamID: "team-b", Name: "b", Hash: hash("secret-3"), Role: store.RoleMember, CreatedAt: at(2 * time.Second)}
	for _, tk := range []store.Token{t1, t2, t3} {
		must(t, s.CreateToken(ctx(t), tk))
	}
	for _, tk := range []*store.Token{&t1, &t2, &t3} {
		tk.CreatedAt, tk.ExpiresAt = store.Time(tk.CreatedAt), store.Time(tk.ExpiresAt)
	}

	got, err := s.GetTokenByHash(ctx(t), hash("secret-1"))
	must(t, err)
	equal(t, "GetTokenByHash", got, t1)
	got, err = s.GetTokenByHash(ctx(t), hash("secret-2"))
	must(t, err)
	equal(t, "GetTokenByHash no expiry", got, t2)
	_, err = s.GetTokenByHash(ctx(t), hash("wrong"))
	wantErr(t, err, sandbox.ErrNotFound, "token_not_found")
	// A prefix of a hash is not the hash.
	_, err = s.GetTokenByHash(ctx(t), hash("secret-1")[:16])
	wantErr(t, err, sandbox.ErrNotFound, "token_not_found")

	wantErr(t, s.CreateToken(ctx(t), store.Token{ID: "tok-1", TeamID: "team-a", Hash: hash("other")}), sandbox.ErrConflict, "token_exists")
	wantErr(t, s.CreateToken(ctx(t), store.Token{ID: "tok-9", TeamID: "team-a", Hash: hash("secret-1")}), sandbox.ErrConflict, "token_exists")

	list, err := s.ListTokens(ctx(t), "team-a")
	must(t, err)
	equal(t, "ListTokens", list, []store.Token{t1, t2})
	list, err = s.ListTokens(ctx(t), "")
	must(t, err)
	equal(t, "ListTokens all", ids(list, func(t store.Token) string { return t.ID }), []string{"tok-1", "tok-2", "tok-3"})

	must(t, s.DeleteToken(ctx(t), "tok-1"))
	_, err = s.GetTokenByHash(ctx(t), hash("secret-1"))
	wantErr(t, err, sandbox.ErrNotFound, "token_not_found")
	wantErr(t, s.DeleteToken(ctx(t), "tok-1"), sandbox.ErrNotFound, "token_not_found")
	// The hash is free again.
	must(t, s.CreateToken(ctx(t), store.Token{ID: "tok-4", TeamID: "team-a", Hash: hash("secret-1")}))
}

// ---- projects ----

// oddSpec has keys a document database treats specially.
var oddSpec = json.RawMessage(`{"a.b":{"$x":1,"c":[1,2.5,"z",null,true]},"":"empty","unicode":"é\u2028"}`)

func project(id, team, name string, d time.Duration) store.Project {
	return store.Project{ID: id, TeamID: team, Name: name, Spec: json.RawMessage(`{"run":"npm start","runtime":"gvisor"}`), CreatedAt: at(d)}
}

func testProjects(t *testing.T, s store.Store) {
	p := project("prj-1", "team-a", "web", 0)
	p.Spec = oddSpec
	p.StateRef = "state-1"
	must(t, s.CreateProject(ctx(t), p))
	must(t, s.CreateProject(ctx(t), project("prj-2", "team-a", "api", time.Second)))
	must(t, s.CreateProject(ctx(t), project("prj-3", "team-b", "web", 2*time.Second))) // names are per team

	want := p
	want.Version = 1
	want.CreatedAt = store.Time(p.CreatedAt)
	want.UpdatedAt = want.CreatedAt
	got, err := s.GetProject(ctx(t), "team-a", "prj-1")
	must(t, err)
	equal(t, "GetProject", got, want)
	if string(got.Spec) != string(oddSpec) {
		t.Fatalf("spec = %s, want the bytes it was given", got.Spec)
	}
	got, err = s.GetProject(ctx(t), "", "prj-1")
	must(t, err)
	equal(t, "GetProject without team", got, want)

	// Another team's project is not found, however it is asked for.
	_, err = s.GetProject(ctx(t), "team-b", "prj-1")
	wantErr(t, err, sandbox.ErrNotFound, "project_not_found")
	_, err = s.GetProject(ctx(t), "team-a", "prj-404")
	wantErr(t, err, sandbox.ErrNotFound, "project_not_found")
	wantErr(t, s.DeleteProject(ctx(t), "team-b", "prj-1"), sandbox.ErrNotFound, "project_not_found")
	other := got
	other.TeamID = "team-b"
	_, err = s.UpdateProject(ctx(t), other)
	wantErr(t, err, sandbox.ErrNotFound, "project_not_found")

	wantErr(t, s.CreateProject(ctx(t), project("prj-1", "team-c", "x", 0)), sandbox.ErrConflict, "project_exists")
	wantErr(t, s.CreateProject(ctx(t), project("prj-9", "team-a", "web", 0)), sandbox.ErrConflict, "project_exists")

	list, next, err := s.ListProjects(ctx(t), "team-a", store.Page{})
	must(t, err)
	if next != "" {
		t.Fatalf("next cursor %q on the only page", next)
	}
	equal(t, "ListProjects", ids(list, func(p store.Project) string { return p.ID }), []string{"prj-1", "prj-2"})
	equal(t, "ListProjects[0]", list[0], want)
	list, _, err = s.ListProjects(ctx(t), "", store.Page{})
	must(t, err)
	equal(t, "ListProjects all", ids(list, func(p store.Project) string { return p.ID }), []string{"prj-1", "prj-2", "prj-3"})

	must(t, s.DeleteProject(ctx(t), "team-a", "prj-1"))
	_, err = s.GetProject(ctx(t), "team-a", "prj-1")
	wantErr(t, err, sandbox.ErrNotFound, "project_not_found")
	wantErr(t, s.DeleteProject(ctx(t), "team-a", "prj-1"), sandbox.ErrNotFound, "project_not_found")
	must(t, s.DeleteProject(ctx(t), "", "prj-3"))
	// The name is free again.
	must(t, s.CreateProject(ctx(t), project("prj-4", "team-a", "web", 3*time.Second)))
}

func testProjectUpdates(t *testing.T, s store.Store) {
	must(t, s.CreateProject(ctx(t), project("prj-1", "team-a", "web", 0)))
	must(t, s.CreateProject(ctx(t), project("prj-2", "team-a", "api", 0)))
	p, err := s.GetProject(ctx(t), "team-a", "prj-1")
	must(t, err)

	start := store.Time(time.Now().Add(-time.Second))
	edit := p
	edit.Name = "website"
	edit.Spec = oddSpec
	edit.ActiveActivation = "act-1"
	edit.StateRef = "st-1"
	edit.CreatedAt = at(time.Hour) // ignored: kept from the record
	edit.TeamID = ""               // internal caller: no team check
	upd, err := s.UpdateProject(ctx(t), edit)
	must(t, err)
	if upd.Version != p.Version+1 {
		t.Fatalf("version %d after update of %d", upd.Version, p.Version)
	}
	if upd.UpdatedAt.Before(start) || upd.UpdatedAt != store.Time(upd.UpdatedAt) {
		t.Fatalf("UpdatedAt = %v", upd.UpdatedAt)
	}
	want := p
	want.Name, want.Spec, want.ActiveActivation, want.StateRef = "website", oddSpec, "act-1", "st-1"
	want.Version, want.UpdatedAt = upd.Version, upd.UpdatedAt
	equal(t, "UpdateProject result", upd, want)
	got, err := s.GetProject(ctx(t), "team-a", "prj-1")
	must(t, err)
	equal(t, "GetProject after update", got, want)

	// The old version is stale now.
	stale := p
	stale.StateRef = "lost"
	_, err = s.UpdateProject(ctx(t), stale)
	wantErr(t, err, sandbox.ErrConflict, "stale_version")
	// Renaming onto another project's name conflicts.
	clash := got
	clash.Name = "api"
	_, err = s.UpdateProject(ctx(t), clash)
	wantErr(t, err, sandbox.ErrConflict, "project_exists")
	got2, err := s.GetProject(ctx(t), "team-a", "prj-1")
	must(t, err)
	equal(t, "project after failed updates", got2, want)

	// Clearing fields works.
	clear := got
	clear.ActiveActivation, clear.Spec = "", nil
	upd, err = s.UpdateProject(ctx(t), clear)
	must(t, err)
	if upd.ActiveActivation != "" || upd.Spec != nil || upd.Version != want.Version+1 {
		t.Fatalf("after clearing: %+v", upd)
	}

	_, err = s.UpdateProject(ctx(t), project("prj-404", "team-a", "x", 0))
	wantErr(t, err, sandbox.ErrNotFound, "project_not_found")
}

// testActivationRace is what makes concurrent activations of one project
// share one sandbox: of many writers that read the same version, exactly
// one sets ActiveActivation.
func testActivationRace(t *testing.T, s store.Store) {
	must(t, s.CreateProject(ctx(t), project("prj-race", "team-a", "race", 0)))
	p, err := s.GetProject(ctx(t), "team-a", "prj-race")
	must(t, err)
	const n = 20
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []string
		errs    []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := p
			mine.ActiveActivation = fmt.Sprintf("act-%02d", i)
			<-start
			_, err := s.UpdateProject(context.Background(), mine)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, mine.ActiveActivation)
			} else if !errors.Is(err, sandbox.ErrConflict) || sandbox.CodeOf(err) != "stale_version" {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	if len(winners) != 1 {
		t.Fatalf("%d writers won (%v), want exactly 1", len(winners), winners)
	}
	got, err := s.GetProject(ctx(t), "team-a", "prj-race")
	must(t, err)
	if got.ActiveActivation != winners[0] || got.Version != p.Version+1 {
		t.Fatalf("project after the race: active %q version %d; winner %q", got.ActiveActivation, got.Version, winners[0])
	}
}

// testNoLostUpdates has writers retry on conflict: every increment lands.
func testNoLostUpdates(t *testing.T, s store.Store) {
	must(t, s.CreateProject(ctx(t), project("prj-count", "team-a", "count", 0)))
	const writers, each = 6, 5
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := context.Background()
			for done := 0; done < each; {
				p, err := s.GetProject(c, "team-a", "prj-count")
				if err != nil {
					errc <- err
					return
				}
				n, _ := strconv.Atoi(p.StateRef)
				p.StateRef = strconv.Itoa(n + 1)
				if _, err := s.UpdateProject(c, p); errors.Is(err, sandbox.ErrConflict) {
					continue
				} else if err != nil {
					errc <- err
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	p, err := s.GetProject(ctx(t), "team-a", "prj-count")
	must(t, err)
	if p.StateRef != strconv.Itoa(writers*each) || p.Version != writers*each+1 {
		t.Fatalf("after %d increments: count %s, version %d", writers*each, p.StateRef, p.Version)
	}
}

// ---- activations ----

func testActivations(t *testing.T, s store.Store) {
	a1 := store.Activation{ID: "act-1", ProjectID: "prj-1", TeamID: "team-a", State: "queued", CreatedAt: at(0)}
	a2 := store.Activation{ID: "act-2", ProjectID: "prj-2", TeamID: "team-a", State: "ready", SandboxID: "sb-2", ImageDigest: "sha256:2",
		Replica: "replica-a", CreatedAt: at(time.Second), ReadyAt: at(2 * time.Second), LastActivityAt: at(3 * time.Second)}
	a3 := store.Activation{ID: "act-3", ProjectID: "prj-1", TeamID: "team-a", State: "failed", Error: "boom",
		LogTail: "line 1\nline 2\n", EndReason: "error", CreatedAt: at(2 * time.Second), EndedAt: at(4 * time.Second)}
	a4 := store.Activation{ID: "act-4", ProjectID: "prj-9", TeamID: "team-b", State: "ready", CreatedAt: at(3 * time.Second)}
	for _, a := range []store.Activation{a1, a2, a3, a4} {
		must(t, s.CreateActivation(ctx(t), a))
	}
	norm := func(a store.Activation) store.Activation {
		a.Version = 1
		a.CreatedAt, a.ReadyAt, a.EndedAt, a.LastActivityAt = store.Time(a.CreatedAt), store.Time(a.ReadyAt), store.Time(a.EndedAt), store.Time(a.LastActivityAt)
		return a
	}
	for _, a := range []*store.Activation{&a1, &a2, &a3, &a4} {
		*a = norm(*a)
	}
	got, err := s.GetActivation(ctx(t), "act-3")
	must(t, err)
	equal(t, "GetActivation", got, a3)
	_, err = s.GetActivation(ctx(t), "act-404")
	wantErr(t, err, sandbox.ErrNotFound, "activation_not_found")
	wantErr(t, s.CreateActivation(ctx(t), a1), sandbox.ErrConflict, "activation_exists")

	aid := func(a store.Activation) string { return a.ID }
	for _, tc := range []struct {
		f    store.ActivationFilter
		want []string
	}{
		{store.ActivationFilter{}, []string{"act-1", "act-2", "act-3", "act-4"}},
		{store.ActivationFilter{TeamID: "team-a"}, []string{"act-1", "act-2", "act-3"}},
		{store.ActivationFilter{ProjectID: "prj-1"}, []string{"act-1", "act-3"}},
		{store.ActivationFilter{States: []string{"ready"}}, []string{"act-2", "act-4"}},
		{store.ActivationFilter{TeamID: "team-a", States: []string{"ready", "queued"}}, []string{"act-1", "act-2"}},
		{store.ActivationFilter{TeamID: "team-b", ProjectID: "prj-1"}, []string{}},
	} {
		list, next, err := s.ListActivations(ctx(t), tc.f, store.Page{})
		must(t, err)
		equal(t, fmt.Sprintf("ListActivations %+v", tc.f), ids(list, aid), tc.want)
		if next != "" {
			t.Fatalf("next cursor on the only page")
		}
	}
	list, next, err := s.ListActivations(ctx(t), store.ActivationFilter{TeamID: "team-a"}, store.Page{Limit: 2})
	must(t, err)
	equal(t, "first page", list, []store.Activation{a1, a2})
	list, next, err = s.ListActivations(ctx(t), store.ActivationFilter{TeamID: "team-a"}, store.Page{Limit: 2, Cursor: next})
	must(t, err)
	equal(t, "second page", list, []store.Activation{a3})
	if next != "" {
		t.Fatalf("next cursor %q on the last page", next)
	}

	// Optimistic updates; ProjectID, TeamID and CreatedAt are kept.
	edit := a1
	edit.State, edit.SandboxID, edit.ImageDigest, edit.ReadyAt, edit.LastActivityAt = "ready", "sb-1", "sha256:1", at(5*time.Second), at(6*time.Second)
	edit.Replica = "replica-b"
	edit.ProjectID, edit.TeamID, edit.CreatedAt = "prj-x", "team-x", at(time.Hour)
	upd, err := s.UpdateActivation(ctx(t), edit)
	must(t, err)
	want := a1
	want.State, want.SandboxID, want.ImageDigest, want.ReadyAt, want.LastActivityAt = "ready", "sb-1", "sha256:1", store.Time(at(5*time.Second)), store.Time(at(6*time.Second))
	want.Replica, want.Version = "replica-b", 2
	equal(t, "UpdateActivation", upd, want)
	got, err = s.GetActivation(ctx(t), "act-1")
	must(t, err)
	equal(t, "GetActivation after update", got, want)
	_, err = s.UpdateActivation(ctx(t), a1) // version 1: stale
	wantErr(t, err, sandbox.ErrConflict, "stale_version")
	_, err = s.UpdateActivation(ctx(t), store.Activation{ID: "act-404", Version: 1})
	wantErr(t, err, sandbox.ErrNotFound, "activation_not_found")
	// Zero times clear.
	clear := got
	clear.ReadyAt, clear.LastActivityAt, clear.State = time.Time{}, time.Time{}, "stopped"
	upd, err = s.UpdateActivation(ctx(t), clear)
	must(t, err)
	if !upd.ReadyAt.IsZero() || !upd.LastActivityAt.IsZero() || upd.Version != 3 {
		t.Fatalf("after clearing: %+v", upd)
	}
}

// ---- pagination ----

// testPagination pages through projects while others are inserted between
// pages, before and after the cursor: every project that existed at the
// start is seen exactly once and no project twice. Several share a
// CreatedAt, so the order must break ties by ID.
func testPagination(t *testing.T, s store.Store) {
	const n = 25
	orig := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("prj-%03d", (i*7)%n) // inserted out of ID order
		// Pairs share a creation time.
		must(t, s.CreateProject(ctx(t), project(id, "team-a", id, time.Duration((i*7)%n/2)*time.Minute)))
		orig[id] = false
	}
	must(t, s.CreateProject(ctx(t), project("prj-other", "team-b", "x", 0)))

	seen := map[string]int{}
	var order []store.Project
	cursor := ""
	for page := 0; ; page++ {
		if page > 50 {
			t.Fatal("pagination does not end")
		}
		list, next, err := s.ListProjects(ctx(t), "team-a", store.Page{Cursor: cursor, Limit: 7})
		must(t, err)
		if len(list) > 7 {
			t.Fatalf("page of %d > limit 7", len(list))
		}
		if next != "" && len(list) != 7 {
			t.Fatalf("short page (%d) with a next cursor", len(list))
		}
		for _, p := range list {
			seen[p.ID]++
			order = append(order, p)
		}
		// Inserts between pages: one long before any cursor, one far after
		// every original, one at the very same time as the last seen.
		for j, d := range []time.Duration{-time.Hour, time.Hour + time.Duration(page)*time.Minute} {
			id := fmt.Sprintf("new-%02d-%d", page, j)
			must(t, s.CreateProject(ctx(t), project(id, "team-a", id, d)))
		}
		if len(list) > 0 {
			last := list[len(list)-1]
			id := fmt.Sprintf("tie-%02d", page)
			tie := project(id, "team-a", id, 0)
			tie.CreatedAt = last.CreatedAt
			must(t, s.CreateProject(ctx(t), tie))
		}
		if next == "" {
			break
		}
		cursor = next
	}
	for id, c := range seen {
		if c > 1 {
			t.Errorf("%s seen %d times", id, c)
		}
	}
	for id := range orig {
		if seen[id] != 1 {
			t.Errorf("original %s seen %d times", id, seen[id])
		}
	}
	if _, ok := seen["prj-other"]; ok {
		t.Error("another team's project listed")
	}
	for i := 1; i < len(order); i++ {
		a, b := order[i-1], order[i]
		if b.CreatedAt.Before(a.CreatedAt) || (b.CreatedAt.Equal(a.CreatedAt) && b.ID <= a.ID) {
			t.Fatalf("out of order: %s (%v) before %s (%v)", a.ID, a.CreatedAt, b.ID, b.CreatedAt)
		}
	}

	_, _, err := s.ListProjects(ctx(t), "team-a", store.Page{Cursor: "garbage"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_cursor")
	_, _, err = s.ListCommands(ctx(t), "sb-1", store.Page{Cursor: "c1.!!"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_cursor")
}

func testPageLimits(t *testing.T, s store.Store) {
	const n = store.DefaultPageLimit + 5
	for i := range n {
		must(t, s.AddCommand(ctx(t), store.Command{ID: fmt.Sprintf("cmd-%03d", i), SandboxID: "sb-1", Cmd: "true", StartedAt: at(0)}))
	}
	list, next, err := s.ListCommands(ctx(t), "sb-1", store.Page{})
	must(t, err)
	if len(list) != store.DefaultPageLimit || next == "" {
		t.Fatalf("default page: %d items, next %q", len(list), next)
	}
	list, next, err = s.ListCommands(ctx(t), "sb-1", store.Page{Cursor: next, Limit: store.MaxPageLimit * 10})
	must(t, err)
	if len(list) != 5 || next != "" {
		t.Fatalf("second page: %d items, next %q", len(list), next)
	}
	// A page exactly as long as what is left has no next page.
	list, next, err = s.ListCommands(ctx(t), "sb-1", store.Page{Limit: n})
	must(t, err)
	if len(list) != n || next != "" {
		t.Fatalf("exact page: %d items, next %q", len(list), next)
	}
}

// ---- sandboxes ----

// fullSandbox sets every field of a sandbox record.
func fullSandbox(id string, d time.Duration) sandbox.Sandbox {
	return sandbox.Sandbox{
		ID: id, State: sandbox.Running, Image: "docker.io/library/node:22",
		ImageDigest: "sha256:" + fmt.Sprintf("%064x", 7),
		ImageLayers: []string{"/var/lib/paddock/layers/a", "/var/lib/paddock/layers/b"},
		Snapshot:    "snap-1", ImageUser: "node", WorkingDir: "/app",
		Resources: sandbox.Resources{VCPUs: 1.5, MemoryMB: 2048, PIDs: 512},
		Env:       map[string]string{"PATH": "/usr/bin", "A.B": "dots", "$X": "dollar", "EMPTY": ""},
		Driver:    "gvisor", // the runtime (CreateRequest.Runtime): min has runc's
		CreatedAt: at(d), StartedAt: at(d + time.Second), ExpiresAt: at(d + time.Hour), LastActivityAt: at(d + time.Minute),
		Address: netip.MustParseAddr("10.88.0.6"),
		Ports:   []sandbox.Port{{Port: 3000, Public: true}, {Port: 8080}},
		NetworkPolicy: &sandbox.NetworkPolicy{Mode: "custom", AllowDomains: []string{"registry.npmjs.org"},
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, DenyCIDRs: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
		TeamID:  "team-a",
		Source:  &sandbox.SourceInfo{Type: sandbox.SourceGit, URL: "https://example.com/r.git", Dir: "/app", Revision: "main", Commit: "abc123"},
		Volumes: []sandbox.VolumeMount{{Volume: "cache", Path: "/cache", Mode: sandbox.VolumeCopyOnWrite}},
	}
}

func testSandboxes(t *testing.T, s store.Store) {
	full := fullSandbox("sb-full", 0)
	min := sandbox.Sandbox{ID: "sb-min", State: sandbox.Pending, Image: "host", Driver: "runc", CreatedAt: at(time.Second)}
	other := sandbox.Sandbox{ID: "sb-other", State: sandbox.Stopped, Image: "host", CreatedAt: at(2 * time.Second), StoppedAt: at(3 * time.Second), Error: "x"}
	must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "node-1", Sandbox: full}))
	must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "node-1", Sandbox: min}))
	must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "node-2", Sandbox: other}))

	got, err := s.GetSandbox(ctx(t), "sb-full")
	must(t, err)
	want := store.SandboxRecord{Node: "node-1", Sandbox: store.NormalizeSandbox(full)}
	equal(t, "GetSandbox full", got, want)
	if got.Sandbox.CreatedAt != store.Time(full.CreatedAt) || got.Sandbox.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt %v, want %v in UTC", got.Sandbox.CreatedAt, store.Time(full.CreatedAt))
	}
	got, err = s.GetSandbox(ctx(t), "sb-min")
	must(t, err)
	equal(t, "GetSandbox minimal", got, store.SandboxRecord{Node: "node-1", Sandbox: store.NormalizeSandbox(min)})
	_, err = s.GetSandbox(ctx(t), "sb-404")
	wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")

	sid := func(r store.SandboxRecord) string { return r.Sandbox.ID }
	list, err := s.ListSandboxes(ctx(t), "node-1")
	must(t, err)
	equal(t, "ListSandboxes node-1", ids(list, sid), []string{"sb-full", "sb-min"})
	equal(t, "ListSandboxes node-1 [0]", list[0], want)
	list, err = s.ListSandboxes(ctx(t), "")
	must(t, err)
	equal(t, "ListSandboxes all", ids(list, sid), []string{"sb-full", "sb-min", "sb-other"})

	// Put replaces, including the node.
	min.State, min.StartedAt, min.Ports = sandbox.Running, at(4*time.Second), []sandbox.Port{{Port: 5173}}
	must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "node-2", Sandbox: min}))
	got, err = s.GetSandbox(ctx(t), "sb-min")
	must(t, err)
	equal(t, "GetSandbox after replace", got, store.SandboxRecord{Node: "node-2", Sandbox: store.NormalizeSandbox(min)})
	list, err = s.ListSandboxes(ctx(t), "node-1")
	must(t, err)
	equal(t, "ListSandboxes node-1 after move", ids(list, sid), []string{"sb-full"})

	must(t, s.DeleteSandbox(ctx(t), "sb-full"))
	must(t, s.DeleteSandbox(ctx(t), "sb-full")) // unknown id: not an error
	_, err = s.GetSandbox(ctx(t), "sb-full")
	wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
	list, err = s.ListSandboxes(ctx(t), "node-3")
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("ListSandboxes of an unknown node = %v", list)
	}
}

// testSandboxMoves: a move takes a record only from the node named, and of
// movers racing for one record exactly one wins.
func testSandboxMoves(t *testing.T, s store.Store) {
	sb := fullSandbox("sb-move", 0)
	must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "gone", Sandbox: sb}))
	_, err := s.MoveSandbox(ctx(t), "sb-404", "gone", "node-a")
	wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
	_, err = s.MoveSandbox(ctx(t), "sb-move", "node-x", "node-a")
	wantErr(t, err, sandbox.ErrConflict, "sandbox_moved")

	got, err := s.MoveSandbox(ctx(t), "sb-move", "gone", "node-a")
	must(t, err)
	want := store.SandboxRecord{Node: "node-a", Sandbox: store.NormalizeSandbox(sb)}
	equal(t, "MoveSandbox", got, want)
	got, err = s.GetSandbox(ctx(t), "sb-move")
	must(t, err)
	equal(t, "GetSandbox after the move", got, want)
	_, err = s.MoveSandbox(ctx(t), "sb-move", "gone", "node-b")
	wantErr(t, err, sandbox.ErrConflict, "sandbox_moved")

	// Rounds of movers from one node to each their own: one wins each
	// round, and the record is the winner's.
	const rounds, movers = 5, 4
	for round := range rounds {
		id := "sb-race-" + strconv.Itoa(round)
		must(t, s.PutSandbox(ctx(t), store.SandboxRecord{Node: "gone", Sandbox: sandbox.Sandbox{ID: id, State: sandbox.Running, CreatedAt: at(0)}}))
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []string
		)
		for i := range movers {
			to := "node-" + strconv.Itoa(i)
			wg.Go(func() {
				r, err := s.MoveSandbox(ctx(t), id, "gone", to)
				switch {
				case err == nil:
					if r.Node != to {
						t.Errorf("%s moved to %s, reported %s", id, to, r.Node)
					}
					mu.Lock()
					winners = append(winners, to)
					mu.Unlock()
				case errors.Is(err, sandbox.ErrConflict):
				default:
					t.Errorf("move %s to %s: %v", id, to, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d movers won (%v), want exactly one", round, len(winners), winners)
		}
		got, err := s.GetSandbox(ctx(t), id)
		must(t, err)
		equal(t, "the record's node after the race", got.Node, winners[0])
	}
}

// ---- commands ----

func testCommands(t *testing.T, s store.Store) {
	c1 := store.Command{ID: "cmd-1", SandboxID: "sb-1", TeamID: "team-a", Cmd: "npm", Args: []string{"run", "dev", ""},
		Cwd: "/app", Sudo: true, StartedAt: at(0)}
	c2 := store.Command{ID: "cmd-2", SandboxID: "sb-1", Cmd: "ls", Tag: "listing", PTYRows: 24, PTYCols: 80, StartedAt: at(time.Second)}
	exit := 3
	c3 := store.Command{ID: "cmd-3", SandboxID: "sb-1", Cmd: "false", StartedAt: at(2 * time.Second), FinishedAt: at(3 * time.Second), ExitCode: &exit}
	c1b := store.Command{ID: "cmd-1", SandboxID: "sb-2", Cmd: "echo", StartedAt: at(0)} // ids are per sandbox
	for _, c := range []store.Command{c3, c1, c2, c1b} {
		must(t, s.AddCommand(ctx(t), c))
	}
	for _, c := range []*store.Command{&c1, &c2, &c3, &c1b} {
		c.StartedAt, c.FinishedAt = store.Time(c.StartedAt), store.Time(c.FinishedAt)
	}
	wantErr(t, s.AddCommand(ctx(t), c1), sandbox.ErrConflict, "command_exists")

	list, next, err := s.ListCommands(ctx(t), "sb-1", store.Page{})
	must(t, err)
	equal(t, "ListCommands", list, []store.Command{c1, c2, c3})
	if next != "" {
		t.Fatal("next cursor on the only page")
	}

	must(t, s.FinishCommand(ctx(t), "sb-1", "cmd-2", 0, at(5*time.Second)))
	must(t, s.FinishCommand(ctx(t), "sb-1", "cmd-1", -1, at(6*time.Second)))
	wantErr(t, s.FinishCommand(ctx(t), "sb-1", "cmd-404", 0, at(0)), sandbox.ErrNotFound, "command_not_found")
	wantErr(t, s.FinishCommand(ctx(t), "sb-3", "cmd-1", 0, at(0)), sandbox.ErrNotFound, "command_not_found")
	zero, minus := 0, -1
	c2.ExitCode, c2.FinishedAt = &zero, store.Time(at(5*time.Second))
	c1.ExitCode, c1.FinishedAt = &minus, store.Time(at(6*time.Second))

	page1, next, err := s.ListCommands(ctx(t), "sb-1", store.Page{Limit: 2})
	must(t, err)
	equal(t, "ListCommands page 1", page1, []store.Command{c1, c2})
	page2, next, err := s.ListCommands(ctx(t), "sb-1", store.Page{Limit: 2, Cursor: next})
	must(t, err)
	equal(t, "ListCommands page 2", page2, []store.Command{c3})
	if next != "" {
		t.Fatal("next cursor on the last page")
	}
	list, _, err = s.ListCommands(ctx(t), "sb-2", store.Page{})
	must(t, err)
	equal(t, "ListCommands sb-2", list, []store.Command{c1b})
}

// testCommandRetention: a sandbox's history keeps its newest commands
// (page order: StartedAt, then ID) and nothing of other sandboxes goes;
// pruning by age removes what started before the cut, any sandbox's.
func testCommandRetention(t *testing.T, s store.Store) {
	ids := func(sb string) []string {
		t.Helper()
		list, _, err := s.ListCommands(ctx(t), sb, store.Page{Limit: 100})
		must(t, err)
		var out []string
		for _, c := range list {
			out = append(out, c.ID)
		}
		return out
	}
	// Two commands share a start: ID orders them.
	for i, at0 := range []time.Duration{0, time.Second, time.Second, 2 * time.Second, 3 * time.Second} {
		must(t, s.AddCommand(ctx(t), store.Command{ID: fmt.Sprintf("c%d", i), SandboxID: "sb-keep", Cmd: "true", StartedAt: at(at0)}))
	}
	must(t, s.AddCommand(ctx(t), store.Command{ID: "other", SandboxID: "sb-other", Cmd: "true", StartedAt: at(0)}))

	n, err := s.TrimCommands(ctx(t), "sb-keep", 3)
	must(t, err)
	if got := ids("sb-keep"); n != 2 || !slices.Equal(got, []string{"c2", "c3", "c4"}) {
		t.Errorf("TrimCommands(3) deleted %d, kept %v; want 2 and [c2 c3 c4]", n, got)
	}
	if n, err := s.TrimCommands(ctx(t), "sb-keep", 3); err != nil || n != 0 {
		t.Errorf("TrimCommands again: %d, %v; want 0", n, err)
	}
	if n, err := s.TrimCommands(ctx(t), "sb-none", 0); err != nil || n != 0 {
		t.Errorf("TrimCommands of an unknown sandbox: %d, %v", n, err)
	}
	if _, err := s.TrimCommands(ctx(t), "sb-keep", -1); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("TrimCommands(-1): %v, want ErrInvalid", err)
	}
	if got := ids("sb-other"); !slices.Equal(got, []string{"other"}) {
		t.Errorf("another sandbox's history: %v", got)
	}

	n, err = s.PruneCommands(ctx(t), at(2*time.Second))
	must(t, err)
	if got := ids("sb-keep"); n != 2 || !slices.Equal(got, []string{"c3", "c4"}) || len(ids("sb-other")) != 0 {
		t.Errorf("PruneCommands deleted %d, kept %v and %v; want 2, [c3 c4] and []", n, got, ids("sb-other"))
	}
	n, err = s.TrimCommands(ctx(t), "sb-keep", 0)
	must(t, err)
	if got := ids("sb-keep"); n != 2 || len(got) != 0 {
		t.Errorf("TrimCommands(0) deleted %d, kept %v", n, got)
	}
}

// ---- usage ----

func testUsage(t *testing.T, s store.Store) {
	h := time.Hour
	u1 := store.Usage{ID: "use-1", TeamID: "team-a", ProjectID: "prj-1", SandboxID: "sb-1", Start: at(0), End: at(h),
		CPUSeconds: 12.5, MemoryMBHours: 1024, NetRxBytes: 1 << 40, NetTxBytes: math.MaxInt64,
		MemoryPeakBytes: 3 << 30, Creations: 1, StorageGBHours: 0.25, EndCPUSeconds: 99.5, EndNetRxBytes: 1 << 41, EndNetTxBytes: 7}
	u2 := store.Usage{ID: "use-2", TeamID: "team-a", SandboxID: "sb-2", Start: at(h), End: at(2 * h), CPUSeconds: 0.001}
	u3 := store.Usage{ID: "use-3", TeamID: "team-b", ProjectID: "prj-9", SandboxID: "sb-3", Start: at(2 * h), End: at(3 * h)}
	for _, u := range []store.Usage{u3, u1, u2} {
		must(t, s.AddUsage(ctx(t), u))
	}
	for _, u := range []*store.Usage{&u1, &u2, &u3} {
		u.Start, u.End = store.Time(u.Start), store.Time(u.End)
	}
	wantErr(t, s.AddUsage(ctx(t), u1), sandbox.ErrConflict, "usage_exists")
	wantErr(t, s.AddUsage(ctx(t), store.Usage{ID: "use-big", NetRxBytes: math.MaxUint64}), sandbox.ErrInvalid, "")

	all, err := s.ListUsage(ctx(t), store.UsageFilter{})
	must(t, err)
	equal(t, "ListUsage all", all, []store.Usage{u1, u2, u3})
	uid := func(u store.Usage) string { return u.ID }
	for _, tc := range []struct {
		f    store.UsageFilter
		want []string
	}{
		{store.UsageFilter{TeamID: "team-a"}, []string{"use-1", "use-2"}},
		{store.UsageFilter{ProjectID: "prj-1"}, []string{"use-1"}},
		{store.UsageFilter{SandboxID: "sb-3"}, []string{"use-3"}},
		{store.UsageFilter{TeamID: "team-a", SandboxID: "sb-3"}, []string{}},
		// Overlap with [Since, Until): touching intervals do not overlap.
		{store.UsageFilter{Since: at(h), Until: at(2 * h)}, []string{"use-2"}},
		{store.UsageFilter{Since: at(h - time.Millisecond), Until: at(2*h + time.Millisecond)}, []string{"use-1", "use-2", "use-3"}},
		{store.UsageFilter{Since: at(90 * time.Minute)}, []string{"use-2", "use-3"}},
		{store.UsageFilter{Until: at(h)}, []string{"use-1"}},
		{store.UsageFilter{TeamID: "team-a", Since: at(2 * h)}, []string{}},
	} {
		list, err := s.ListUsage(ctx(t), tc.f)
		must(t, err)
		equal(t, fmt.Sprintf("ListUsage %+v", tc.f), ids(list, uid), tc.want)
	}
	wantErr(t, s.AddUsage(ctx(t), store.Usage{ID: "use-big", EndNetTxBytes: math.MaxUint64}), sandbox.ErrInvalid, "")

	// Pruning deletes by start, and only samples.
	must(t, s.PutUsageRollup(ctx(t), u1))
	n, err := s.PruneUsage(ctx(t), at(h+time.Millisecond))
	must(t, err)
	equal(t, "pruned", n, 2)
	all, err = s.ListUsage(ctx(t), store.UsageFilter{})
	must(t, err)
	equal(t, "ListUsage after prune", ids(all, uid), []string{"use-3"})
	rolled, err := s.ListUsageRollups(ctx(t), store.UsageFilter{})
	must(t, err)
	equal(t, "rollups after prune", rolled, []store.Usage{u1})
}

func testUsageRollups(t *testing.T, s store.Store) {
	h := time.Hour
	r1 := store.Usage{ID: "team-a/prj-1/0", TeamID: "team-a", ProjectID: "prj-1", Start: at(0), End: at(h),
		CPUSeconds: 3, MemoryMBHours: 512, NetRxBytes: 10, NetTxBytes: 20, MemoryPeakBytes: 1 << 20, Creations: 2}
	r2 := store.Usage{ID: "team-b//1", TeamID: "team-b", Start: at(h), End: at(2 * h), StorageGBHours: 4}
	must(t, s.PutUsageRollup(ctx(t), r1))
	must(t, s.PutUsageRollup(ctx(t), r2))
	r1.CPUSeconds = 5 // a recomputed roll-up replaces the old one
	must(t, s.PutUsageRollup(ctx(t), r1))
	r1.Start, r1.End, r2.Start, r2.End = store.Time(r1.Start), store.Time(r1.End), store.Time(r2.Start), store.Time(r2.End)
	all, err := s.ListUsageRollups(ctx(t), store.UsageFilter{})
	must(t, err)
	equal(t, "rollups", all, []store.Usage{r1, r2})
	a, err := s.ListUsageRollups(ctx(t), store.UsageFilter{TeamID: "team-a", Since: at(0), Until: at(h)})
	must(t, err)
	equal(t, "team-a rollups", a, []store.Usage{r1})
	samples, err := s.ListUsage(ctx(t), store.UsageFilter{})
	must(t, err)
	equal(t, "samples", len(samples), 0)
}

// ---- budgets ----

func testBudgets(t *testing.T, s store.Store) {
	_, err := s.GetBudget(ctx(t), "team-a")
	wantErr(t, err, sandbox.ErrNotFound, "budget_not_found")
	b, err := s.PutBudget(ctx(t), store.Budget{TeamID: "team-a", MonthlyLimit: 100, Thresholds: []int{50, 80, 100}, HardCap: true})
	must(t, err)
	equal(t, "created version", b.Version, int64(1))
	if b.UpdatedAt.IsZero() {
		t.Fatal("UpdatedAt not set")
	}
	_, err = s.PutBudget(ctx(t), store.Budget{TeamID: "team-a", MonthlyLimit: 1})
	wantErr(t, err, sandbox.ErrConflict, "budget_exists")
	got, err := s.GetBudget(ctx(t), "team-a")
	must(t, err)
	equal(t, "get", got, b)

	b.Month, b.Notified = "2026-12", 80
	b2, err := s.PutBudget(ctx(t), b)
	must(t, err)
	equal(t, "updated", [3]any{b2.Version, b2.Month, b2.Notified}, [3]any{int64(2), "2026-12", 80})
	_, err = s.PutBudget(ctx(t), b) // b.Version is 1: stale
	wantErr(t, err, sandbox.ErrConflict, "stale_version")
	_, err = s.PutBudget(ctx(t), store.Budget{TeamID: "team-z", MonthlyLimit: 1, Version: 3})
	wantErr(t, err, sandbox.ErrNotFound, "budget_not_found")
	_, err = s.PutBudget(ctx(t), store.Budget{TeamID: "team-b", MonthlyLimit: -1})
	wantErr(t, err, sandbox.ErrInvalid, "")

	_, err = s.PutBudget(ctx(t), store.Budget{TeamID: "team-0", MonthlyLimit: 5})
	must(t, err)
	list, err := s.ListBudgets(ctx(t))
	must(t, err)
	equal(t, "list", ids(list, func(b store.Budget) string { return b.TeamID }), []string{"team-0", "team-a"})
	must(t, s.DeleteBudget(ctx(t), "team-0"))
	wantErr(t, s.DeleteBudget(ctx(t), "team-0"), sandbox.ErrNotFound, "budget_not_found")
}

// ---- events ----

func testEvents(t *testing.T, s store.Store) {
	in := []store.Event{
		{Time: at(0), TeamID: "team-a", ProjectID: "prj-1", ActivationID: "act-1", Type: "activation.queued", Message: "queued",
			Data: map[string]string{"a.b": "1", "$c": "2", "": "3"}},
		{Time: at(time.Second), TeamID: "team-a", ProjectID: "prj-1", ActivationID: "act-1", SandboxID: "sb-1", Type: "activation.ready"},
		{Time: at(2 * time.Second), TeamID: "team-b", ProjectID: "prj-9", Type: "sandbox.stopped"},
		{Time: at(3 * time.Second), TeamID: "team-a", ProjectID: "prj-2", ActivationID: "act-2", Type: "activation.failed", Message: "boom"},
	}
	var out []store.Event
	var last int64
	for _, e := range in {
		got, err := s.AppendEvent(ctx(t), e)
		must(t, err)
		if got.Seq <= last {
			t.Fatalf("Seq %d after %d", got.Seq, last)
		}
		last = got.Seq
		want := e
		want.Seq, want.Time = got.Seq, store.Time(e.Time)
		equal(t, "AppendEvent result", got, want)
		out = append(out, want)
	}
	// A zero time is set by the store.
	now, err := s.AppendEvent(ctx(t), store.Event{Type: "host.started"})
	must(t, err)
	if now.Time.IsZero() || now.Time != store.Time(now.Time) || now.Seq <= last {
		t.Fatalf("event with default time: %+v", now)
	}
	out = append(out, now)

	all, err := s.ListEvents(ctx(t), store.EventFilter{})
	must(t, err)
	equal(t, "ListEvents", all, out)
	seq := func(e store.Event) string { return strconv.FormatInt(e.Seq, 10) }
	str := func(es ...store.Event) []string { return ids(es, seq) }
	for _, tc := range []struct {
		f    store.EventFilter
		want []string
	}{
		{store.EventFilter{TeamID: "team-a"}, str(out[0], out[1], out[3])},
		{store.EventFilter{ProjectID: "prj-1"}, str(out[0], out[1])},
		{store.EventFilter{ActivationID: "act-2"}, str(out[3])},
		{store.EventFilter{AfterSeq: out[1].Seq}, str(out[2], out[3], out[4])},
		{store.EventFilter{TeamID: "team-a", AfterSeq: out[0].Seq}, str(out[1], out[3])},
		{store.EventFilter{AfterSeq: out[4].Seq}, []string{}},
		{store.EventFilter{Limit: 2}, str(out[0], out[1])},
		{store.EventFilter{TeamID: "team-a", AfterSeq: out[0].Seq, Limit: 1}, str(out[1])},
	} {
		list, err := s.ListEvents(ctx(t), tc.f)
		must(t, err)
		equal(t, fmt.Sprintf("ListEvents %+v", tc.f), ids(list, seq), tc.want)
	}
}

// testConcurrentEvents appends from several goroutines: Seqs are unique,
// each writer's strictly increase, and a reader paging with AfterSeq
// sees every event once, in Seq order, both while the writers run (no
// event becomes visible behind one the reader has already passed) and
// after.
func testConcurrentEvents(t *testing.T, s store.Store) {
	const writers, each = 8, 20
	var wg sync.WaitGroup
	seqs := make([][]int64, writers)
	errc := make(chan error, writers+1)

	// The live reader follows the feed until the writers are done.
	writing := make(chan struct{})
	var live []int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		after := int64(0)
		poll := func() error {
			page, err := s.ListEvents(context.Background(), store.EventFilter{AfterSeq: after})
			for _, e := range page {
				after = e.Seq
				live = append(live, e.Seq)
			}
			return err
		}
		for {
			select {
			case <-writing:
				// Drain what the last writes left.
				for n := len(live); ; n = len(live) {
					if err := poll(); err != nil {
						errc <- err
						return
					}
					if len(live) == n {
						return
					}
				}
			default:
			}
			if err := poll(); err != nil {
				errc <- err
				return
			}
		}
	}()

	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, err := s.AppendEvent(context.Background(), store.Event{Type: "t", TeamID: "team-a", Message: fmt.Sprintf("%d/%d", w, i)})
				if err != nil {
					errc <- err
					return
				}
				seqs[w] = append(seqs[w], e.Seq)
			}
		}()
	}
	wg.Wait()
	close(writing)
	<-readerDone
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	unique := map[int64]bool{}
	for w, ss := range seqs {
		for i, q := range ss {
			if i > 0 && q <= ss[i-1] {
				t.Fatalf("writer %d got Seq %d after %d", w, q, ss[i-1])
			}
			if unique[q] {
				t.Fatalf("Seq %d given twice", q)
			}
			unique[q] = true
		}
	}
	var got []int64
	after := int64(0)
	for {
		page, err := s.ListEvents(ctx(t), store.EventFilter{AfterSeq: after, Limit: 30})
		must(t, err)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if e.Seq <= after {
				t.Fatalf("Seq %d listed after %d", e.Seq, after)
			}
			after = e.Seq
			got = append(got, e.Seq)
		}
	}
	if len(got) != writers*each {
		t.Fatalf("listed %d events, appended %d", len(got), writers*each)
	}
	for _, q := range got {
		if !unique[q] {
			t.Fatalf("listed Seq %d that no append returned", q)
		}
	}
	if !slices.Equal(live, got) {
		t.Fatalf("a reader following the feed saw %d events, %d were appended: an event appeared behind one already read",
			len(live), len(got))
	}
}

// ---- times ----

// testTimes checks the documented precision: UTC, milliseconds, exact.
func testTimes(t *testing.T, s store.Store) {
	odd := []time.Time{
		time.Date(2026, 1, 1, 0, 0, 0, 999_999_999, time.FixedZone("X", -7*3600)),
		time.Date(1999, 12, 31, 23, 59, 59, 1_000_000, time.UTC),
		time.Now(), // with a monotonic reading
	}
	for i, tt := range odd {
		id := fmt.Sprintf("team-%d", i)
		must(t, s.CreateTeam(ctx(t), store.Team{ID: id, Name: id, CreatedAt: tt}))
		got, err := s.GetTeam(ctx(t), id)
		must(t, err)
		want := store.Time(tt)
		if got.CreatedAt != want || got.CreatedAt.Location() != time.UTC {
			t.Fatalf("time %v came back as %v, want %v", tt, got.CreatedAt, want)
		}
		if want.Nanosecond()%int(store.TimePrecision) != 0 || !want.Equal(tt.Truncate(store.TimePrecision)) {
			t.Fatalf("store.Time(%v) = %v", tt, want)
		}
	}
}

// ---- invalid records ----

func testInvalid(t *testing.T, s store.Store) {
	c := ctx(t)
	testEmptyLists(t, s)
	for name, err := range map[string]error{
		"team without id":       s.CreateTeam(c, store.Team{Name: "x"}),
		"team without name":     s.CreateTeam(c, store.Team{ID: "x"}),
		"user without id":       s.CreateUser(c, store.User{TeamID: "x"}),
		"token without hash":    s.CreateToken(c, store.Token{ID: "x"}),
		"project without id":    s.CreateProject(c, store.Project{Name: "x"}),
		"project bad spec":      s.CreateProject(c, store.Project{ID: "x", Name: "x", Spec: json.RawMessage(`{`)}),
		"activation without id": s.CreateActivation(c, store.Activation{}),
		"sandbox without id":    s.PutSandbox(c, store.SandboxRecord{Node: "n"}),
		"command without id":    s.AddCommand(c, store.Command{SandboxID: "sb"}),
		"command without sb":    s.AddCommand(c, store.Command{ID: "c"}),
		"usage without id":      s.AddUsage(c, store.Usage{}),
	} {
		if !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.AppendEvent(c, store.Event{}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("event without type: error %v, want ErrInvalid", err)
	}
	if teams, err := s.ListTeams(c); err != nil || len(teams) != 0 {
		t.Errorf("invalid records were stored: %v %v", teams, err)
	}
}

// ---- reopen ----

func testReopen(t *testing.T, s store.Store, reopen func(t *testing.T, closed store.Store) store.Store) {
	c := ctx(t)
	must(t, s.CreateTeam(c, store.Team{ID: "team-a", Name: "A", CreatedAt: at(0)}))
	must(t, s.CreateUser(c, store.User{ID: "u-1", TeamID: "team-a", Issuer: "i", Subject: "s", CreatedAt: at(0)}))
	must(t, s.CreateToken(c, store.Token{ID: "tok-1", TeamID: "team-a", Hash: hash("s"), CreatedAt: at(0)}))
	must(t, s.CreateProject(c, project("prj-1", "team-a", "web", 0)))
	p, err := s.GetProject(c, "team-a", "prj-1")
	must(t, err)
	p.ActiveActivation = "act-1"
	p, err = s.UpdateProject(c, p)
	must(t, err)
	must(t, s.CreateActivation(c, store.Activation{ID: "act-1", ProjectID: "prj-1", TeamID: "team-a", State: "ready", CreatedAt: at(0)}))
	sb := fullSandbox("sb-1", 0)
	must(t, s.PutSandbox(c, store.SandboxRecord{Node: "node-1", Sandbox: sb}))
	must(t, s.AddCommand(c, store.Command{ID: "cmd-1", SandboxID: "sb-1", Cmd: "ls", StartedAt: at(0)}))
	must(t, s.FinishCommand(c, "sb-1", "cmd-1", 0, at(time.Second)))
	must(t, s.AddUsage(c, store.Usage{ID: "use-1", TeamID: "team-a", SandboxID: "sb-1", Start: at(0), End: at(time.Hour)}))
	ev, err := s.AppendEvent(c, store.Event{Type: "x"})
	must(t, err)

	must(t, s.Close())
	s2 := reopen(t, s)
	defer s2.Close()

	if _, err := s2.GetTeam(c, "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.GetUserBySubject(c, "i", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.GetTokenByHash(c, hash("s")); err != nil {
		t.Fatal(err)
	}
	p2, err := s2.GetProject(c, "team-a", "prj-1")
	must(t, err)
	equal(t, "project after reopen", p2, p)
	a, err := s2.GetActivation(c, "act-1")
	must(t, err)
	if a.State != "ready" {
		t.Fatalf("activation after reopen: %+v", a)
	}
	r, err := s2.GetSandbox(c, "sb-1")
	must(t, err)
	equal(t, "sandbox after reopen", r, store.SandboxRecord{Node: "node-1", Sandbox: store.NormalizeSandbox(sb)})
	cmds, _, err := s2.ListCommands(c, "sb-1", store.Page{})
	must(t, err)
	if len(cmds) != 1 || cmds[0].ExitCode == nil || *cmds[0].ExitCode != 0 {
		t.Fatalf("commands after reopen: %+v", cmds)
	}
	use, err := s2.ListUsage(c, store.UsageFilter{TeamID: "team-a"})
	must(t, err)
	if len(use) != 1 {
		t.Fatalf("usage after reopen: %+v", use)
	}
	// Uniqueness and sequences survive too.
	wantErr(t, s2.CreateTeam(c, store.Team{ID: "team-b", Name: "A"}), sandbox.ErrConflict, "team_exists")
	ev2, err := s2.AppendEvent(c, store.Event{Type: "y"})
	must(t, err)
	if ev2.Seq <= ev.Seq {
		t.Fatalf("Seq %d after reopen, was %d before", ev2.Seq, ev.Seq)
	}
	evs, err := s2.ListEvents(c, store.EventFilter{})
	must(t, err)
	if !slices.EqualFunc(evs, []store.Event{ev, ev2}, func(a, b store.Event) bool { return a.Seq == b.Seq && a.Type == b.Type }) {
		t.Fatalf("events after reopen: %+v", evs)
	}
	_, err = s2.UpdateProject(c, p2)
	must(t, err)
}

// testEmptyLists checks that lists of nothing are empty, not nil (they
// encode as [] rather than null).
func testEmptyLists(t *testing.T, s store.Store) {
	c := ctx(t)
	check := func(name string, n int, isNil bool, err error) {
		t.Helper()
		if err != nil || n != 0 || isNil {
			t.Errorf("%s on an empty store: len %d, nil %v, err %v", name, n, isNil, err)
		}
	}
	teams, err := s.ListTeams(c)
	check("ListTeams", len(teams), teams == nil, err)
	users, err := s.ListUsers(c, "")
	check("ListUsers", len(users), users == nil, err)
	tokens, err := s.ListTokens(c, "")
	check("ListTokens", len(tokens), tokens == nil, err)
	projects, _, err := s.ListProjects(c, "", store.Page{})
	check("ListProjects", len(projects), projects == nil, err)
	acts, _, err := s.ListActivations(c, store.ActivationFilter{}, store.Page{})
	check("ListActivations", len(acts), acts == nil, err)
	sbs, err := s.ListSandboxes(c, "")
	check("ListSandboxes", len(sbs), sbs == nil, err)
	cmds, _, err := s.ListCommands(c, "sb-1", store.Page{})
	check("ListCommands", len(cmds), cmds == nil, err)
	use, err := s.ListUsage(c, store.UsageFilter{})
	check("ListUsage", len(use), use == nil, err)
	evs, err := s.ListEvents(c, store.EventFilter{})
	check("ListEvents", len(evs), evs == nil, err)
}
