package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// vercelCases are the cases of the Vercel compatibility layer's records.
var vercelCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"VercelSandboxes", testVercelSandboxes},
	{"VercelKeys", testVercelKeys},
	{"VercelRace", testVercelRace},
	{"VercelNoLostUpdates", testVercelNoLostUpdates},
	{"VercelDeleteRace", testVercelDeleteRace},
	{"VercelList", testVercelList},
	{"VercelSnapshots", testVercelSnapshots},
	{"VercelInvalid", testVercelInvalid},
}

// vercelData is a document with what the layer's holds: free-form keys
// (an env) that a document store would not take as field names.
const vercelData = `{"persistent":true,"config":{"env":{"A.B":"1","$X":"2","":"3"}},"sessions":[{"id":"sb-1"}]}`

func vercelSandbox(team, project, name string, d time.Duration, sessions ...string) store.VercelSandbox {
	return store.VercelSandbox{TeamID: team, Project: project, Name: name, API: 2, SessionIDs: sessions,
		Data: json.RawMessage(vercelData), CreatedAt: at(d)}
}

// stored is v as a store gives it back after a create.
func stored(v store.VercelSandbox) store.VercelSandbox {
	v.CreatedAt = store.Time(v.CreatedAt)
	if v.UpdatedAt.IsZero() {
		v.UpdatedAt = v.CreatedAt
	}
	if v.Version == 0 {
		v.Version = 1
	}
	if len(v.SessionIDs) == 0 {
		v.SessionIDs = nil
	}
	return v
}

func testVercelSandboxes(t *testing.T, s store.Store) {
	c := ctx(t)
	box := vercelSandbox("team-a", "prj_1", "box", 0, "sb-1", "sb-2")
	must(t, s.CreateVercelSandbox(c, box))
	want := stored(box)
	got, err := s.GetVercelSandbox(c, "team-a", "prj_1", "box")
	must(t, err)
	equal(t, "GetVercelSandbox", got, want)

	// A name is unique per team and project.
	wantErr(t, s.CreateVercelSandbox(c, vercelSandbox("team-a", "prj_1", "box", time.Second)), sandbox.ErrConflict, "vercel_sandbox_exists")
	must(t, s.CreateVercelSandbox(c, vercelSandbox("team-a", "prj_2", "box", time.Second)))
	must(t, s.CreateVercelSandbox(c, vercelSandbox("team-b", "prj_1", "box", time.Second, "sb-b")))
	for _, k := range [][3]string{{"team-b", "prj_1", "box"}, {"team-a", "prj_1", "other"}, {"team-a", "prj_3", "box"}} {
		if got, err := s.GetVercelSandbox(c, k[0], k[1], k[2]); k[0] == "team-b" {
			must(t, err)
			if got.TeamID != "team-b" || !equalStrings(got.SessionIDs, []string{"sb-b"}) {
				t.Fatalf("team-b's box: %+v", got)
			}
		} else {
			wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
		}
	}

	// A session finds its sandbox, in its team only.
	got, err = s.GetVercelSandboxBySession(c, "team-a", "sb-2")
	must(t, err)
	equal(t, "GetVercelSandboxBySession", got, want)
	_, err = s.GetVercelSandboxBySession(c, "team-b", "sb-2")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	_, err = s.GetVercelSandboxBySession(c, "team-a", "sb-none")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")

	// An update replaces sessions and data and keeps the rest.
	start := store.Time(time.Now().Add(-time.Second))
	edit := got
	edit.SessionIDs = []string{"sb-2", "sb-3"}
	edit.Data = json.RawMessage(`{"persistent":false,"sessions":[{"id":"sb-2"},{"id":"sb-3"}]}`)
	edit.API, edit.CreatedAt = 1, at(time.Hour) // ignored: kept from the record
	upd, err := s.UpdateVercelSandbox(c, edit)
	must(t, err)
	if upd.Version != got.Version+1 || upd.UpdatedAt.Before(start) || upd.UpdatedAt != store.Time(upd.UpdatedAt) {
		t.Fatalf("after update: version %d (was %d), UpdatedAt %v", upd.Version, got.Version, upd.UpdatedAt)
	}
	want.SessionIDs, want.Data, want.Version, want.UpdatedAt = edit.SessionIDs, edit.Data, upd.Version, upd.UpdatedAt
	equal(t, "UpdateVercelSandbox result", upd, want)
	got, err = s.GetVercelSandbox(c, "team-a", "prj_1", "box")
	must(t, err)
	equal(t, "GetVercelSandbox after update", got, want)
	_, err = s.GetVercelSandboxBySession(c, "team-a", "sb-1")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	got, err = s.GetVercelSandboxBySession(c, "team-a", "sb-3")
	must(t, err)
	equal(t, "by a new session", got, want)

	// The version read before is stale now; a missing record is not found.
	_, err = s.UpdateVercelSandbox(c, edit)
	wantErr(t, err, sandbox.ErrConflict, "stale_version")
	_, err = s.UpdateVercelSandbox(c, vercelSandbox("team-a", "prj_1", "nobody", 0))
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	// Another team cannot write it by naming it.
	other := want
	other.TeamID = "team-c"
	_, err = s.UpdateVercelSandbox(c, other)
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")

	// Clearing every session leaves none to find.
	clear := want
	clear.SessionIDs = nil
	upd, err = s.UpdateVercelSandbox(c, clear)
	must(t, err)
	if upd.SessionIDs != nil {
		t.Fatalf("sessions after clearing: %#v", upd.SessionIDs)
	}
	_, err = s.GetVercelSandboxBySession(c, "team-a", "sb-2")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	clear.SessionIDs = []string{"sb-9"}
	clear.Version = upd.Version
	upd, err = s.UpdateVercelSandbox(c, clear)
	must(t, err)

	// Deletes are optimistic too.
	wantErr(t, s.DeleteVercelSandbox(c, "team-a", "prj_1", "box", upd.Version-1), sandbox.ErrConflict, "stale_version")
	wantErr(t, s.DeleteVercelSandbox(c, "team-b", "prj_1", "box", upd.Version), sandbox.ErrConflict, "stale_version")
	must(t, s.DeleteVercelSandbox(c, "team-a", "prj_1", "box", upd.Version))
	_, err = s.GetVercelSandbox(c, "team-a", "prj_1", "box")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	_, err = s.GetVercelSandboxBySession(c, "team-a", "sb-9")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_sandbox_not_found")
	wantErr(t, s.DeleteVercelSandbox(c, "team-a", "prj_1", "box", upd.Version), sandbox.ErrNotFound, "vercel_sandbox_not_found")
	// The name is free again; team-b's namesake is untouched.
	must(t, s.CreateVercelSandbox(c, vercelSandbox("team-a", "prj_1", "box", 0)))
	if _, err := s.GetVercelSandboxBySession(c, "team-b", "sb-b"); err != nil {
		t.Fatal(err)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

// testVercelKeys checks that (team, project, name) stay apart whatever
// they hold: no two of these may be one record.
func testVercelKeys(t *testing.T, s store.Store) {
	c := ctx(t)
	keys := [][3]string{
		{"a", "b/c", "d"}, {"a/b", "c", "d"}, {"a", "b", "c/d"}, {"1:a", "b", "c"}, {"a", "1:b", "c"},
		{"a", "", "b"}, {"a.b", "$c", "d"}, {"é", "\u2028", "x"},
	}
	for i, k := range keys {
		v := vercelSandbox(k[0], k[1], k[2], time.Duration(i)*time.Second, fmt.Sprintf("sb-%d", i))
		if k[1] == "" {
			wantErr(t, s.CreateVercelSandbox(c, v), sandbox.ErrInvalid, "")
			continue
		}
		must(t, s.CreateVercelSandbox(c, v))
	}
	for i, k := range keys {
		if k[1] == "" {
			continue
		}
		got, err := s.GetVercelSandbox(c, k[0], k[1], k[2])
		must(t, err)
		if got.TeamID != k[0] || got.Project != k[1] || got.Name != k[2] || !equalStrings(got.SessionIDs, []string{fmt.Sprintf("sb-%d", i)}) {
			t.Errorf("%q: got %+v", k, got)
		}
	}
}

// testVercelRace: of many writers that read the same version, exactly one
// wins, as for projects.
func testVercelRace(t *testing.T, s store.Store) {
	must(t, s.CreateVercelSandbox(ctx(t), vercelSandbox("team-a", "prj_1", "race", 0)))
	v, err := s.GetVercelSandbox(ctx(t), "team-a", "prj_1", "race")
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
			mine := v
			sid := fmt.Sprintf("sb-%02d", i)
			mine.SessionIDs = []string{sid}
			mine.Data = json.RawMessage(`{"sessions":[{"id":"` + sid + `"}]}`)
			<-start
			_, err := s.UpdateVercelSandbox(context.Background(), mine)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, sid)
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
	got, err := s.GetVercelSandbox(ctx(t), "team-a", "prj_1", "race")
	must(t, err)
	if !equalStrings(got.SessionIDs, winners) || got.Version != v.Version+1 {
		t.Fatalf("after the race: sessions %v version %d; winner %v", got.SessionIDs, got.Version, winners)
	}
	// Only the winner's session finds the sandbox.
	for i := range n {
		sid := fmt.Sprintf("sb-%02d", i)
		_, err := s.GetVercelSandboxBySession(ctx(t), "team-a", sid)
		if (sid == winners[0]) != (err == nil) {
			t.Errorf("session %s: %v (winner %s)", sid, err, winners[0])
		}
	}
}

// testVercelNoLostUpdates has writers retry on conflict: every change
// lands, as two replicas changing one sandbox need.
func testVercelNoLostUpdates(t *testing.T, s store.Store) {
	must(t, s.CreateVercelSandbox(ctx(t), store.VercelSandbox{TeamID: "team-a", Project: "prj_1", Name: "count", API: 2,
		Data: json.RawMessage(`{"n":0}`)}))
	const writers, each = 6, 5
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := context.Background()
			for done := 0; done < each; {
				v, err := s.GetVercelSandbox(c, "team-a", "prj_1", "count")
				if err != nil {
					errc <- err
					return
				}
				var doc struct{ N int }
				if err := json.Unmarshal(v.Data, &doc); err != nil {
					errc <- err
					return
				}
				v.Data = json.RawMessage(`{"n":` + strconv.Itoa(doc.N+1) + `}`)
				v.SessionIDs = append(v.SessionIDs, fmt.Sprintf("sb-%d-%d", w, done))
				if _, err := s.UpdateVercelSandbox(c, v); errors.Is(err, sandbox.ErrConflict) {
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
	v, err := s.GetVercelSandbox(ctx(t), "team-a", "prj_1", "count")
	must(t, err)
	if string(v.Data) != `{"n":`+strconv.Itoa(writers*each)+`}` || v.Version != writers*each+1 || len(v.SessionIDs) != writers*each {
		t.Fatalf("after %d increments: data %s, version %d, %d sessions", writers*each, v.Data, v.Version, len(v.SessionIDs))
	}
	for w := range writers {
		for i := range each {
			if _, err := s.GetVercelSandboxBySession(ctx(t), "team-a", fmt.Sprintf("sb-%d-%d", w, i)); err != nil {
				t.Errorf("session sb-%d-%d: %v", w, i, err)
			}
		}
	}
}

// testVercelDeleteRace: a delete and an update from one version never
// both win, so a delete cannot drop a change it did not see.
func testVercelDeleteRace(t *testing.T, s store.Store) {
	for round := range 10 {
		name := fmt.Sprintf("del-%d", round)
		must(t, s.CreateVercelSandbox(ctx(t), vercelSandbox("team-a", "prj_1", name, 0)))
		v, err := s.GetVercelSandbox(ctx(t), "team-a", "prj_1", name)
		must(t, err)
		var wg sync.WaitGroup
		var updErr, delErr error
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			mine := v
			mine.SessionIDs = []string{"sb-new"}
			_, updErr = s.UpdateVercelSandbox(context.Background(), mine)
		}()
		go func() {
			defer wg.Done()
			<-start
			delErr = s.DeleteVercelSandbox(context.Background(), "team-a", "prj_1", name, v.Version)
		}()
		close(start)
		wg.Wait()
		_, getErr := s.GetVercelSandbox(ctx(t), "team-a", "prj_1", name)
		switch {
		case updErr == nil && delErr == nil:
			t.Fatalf("round %d: both the update and the delete won", round)
		case updErr == nil:
			wantErr(t, delErr, sandbox.ErrConflict, "stale_version")
			must(t, getErr)
		case delErr == nil:
			if !errors.Is(updErr, sandbox.ErrNotFound) && sandbox.CodeOf(updErr) != "stale_version" {
				t.Fatalf("round %d: update lost with %v", round, updErr)
			}
			wantErr(t, getErr, sandbox.ErrNotFound, "vercel_sandbox_not_found")
		default:
			t.Fatalf("round %d: neither won: update %v, delete %v", round, updErr, delErr)
		}
	}
}

func testVercelList(t *testing.T, s store.Store) {
	c := ctx(t)
	testVercelEmptyLists(t, s)
	const n = 17
	var want []string
	for i := range n {
		name := fmt.Sprintf("box-%02d", (i*5)%n) // out of name order
		project := "prj_1"
		if i%3 == 0 {
			project = "prj_2"
		}
		v := vercelSandbox("team-a", project, name, time.Duration(i/2)*time.Minute) // pairs share a time
		if i%4 == 0 {
			v.API = 1
		}
		must(t, s.CreateVercelSandbox(c, v))
		want = append(want, project+"/"+name)
	}
	must(t, s.CreateVercelSandbox(c, vercelSandbox("team-b", "prj_1", "theirs", 0)))

	all := func(f store.VercelSandboxFilter, limit int) []store.VercelSandbox {
		t.Helper()
		var out []store.VercelSandbox
		cursor := ""
		for range 100 {
			page, next, err := s.ListVercelSandboxes(c, f, store.Page{Cursor: cursor, Limit: limit})
			must(t, err)
			if len(page) > limit || (next != "" && len(page) != limit) {
				t.Fatalf("page of %d (limit %d), next %q", len(page), limit, next)
			}
			out = append(out, page...)
			if next == "" {
				return out
			}
			cursor = next
		}
		t.Fatal("pagination does not end")
		return nil
	}
	key := func(v store.VercelSandbox) string { return v.Project + "/" + v.Name }
	got := all(store.VercelSandboxFilter{TeamID: "team-a"}, 4)
	if len(got) != n {
		t.Fatalf("listed %d of %d: %v", len(got), n, ids(got, key))
	}
	for i := 1; i < len(got); i++ {
		if got[i].CreatedAt.Before(got[i-1].CreatedAt) {
			t.Fatalf("out of creation order: %v", ids(got, key))
		}
	}
	seen := map[string]bool{}
	for _, v := range got {
		if v.TeamID != "team-a" || seen[key(v)] {
			t.Fatalf("listed %+v (twice: %v)", v, seen[key(v)])
		}
		seen[key(v)] = true
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("%s not listed", w)
		}
	}
	for _, tc := range []struct {
		name string
		f    store.VercelSandboxFilter
		keep func(i int) bool
	}{
		{"project", store.VercelSandboxFilter{TeamID: "team-a", Project: "prj_2"}, func(i int) bool { return i%3 == 0 }},
		{"api 1", store.VercelSandboxFilter{TeamID: "team-a", API: 1}, func(i int) bool { return i%4 == 0 }},
		{"project and api 2", store.VercelSandboxFilter{TeamID: "team-a", Project: "prj_1", API: 2}, func(i int) bool { return i%3 != 0 && i%4 != 0 }},
		{"no team", store.VercelSandboxFilter{Project: "prj_1"}, func(int) bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var exp []string
			for i := range n {
				if tc.keep(i) {
					exp = append(exp, want[i])
				}
			}
			list := all(tc.f, 3)
			if len(list) != len(exp) {
				t.Fatalf("listed %v, want the %d of %v", ids(list, key), len(exp), exp)
			}
			for _, v := range list {
				if !strings.Contains(strings.Join(exp, " ")+" ", key(v)+" ") {
					t.Errorf("%s listed", key(v))
				}
			}
		})
	}
	_, _, err := s.ListVercelSandboxes(c, store.VercelSandboxFilter{TeamID: "team-a"}, store.Page{Cursor: "garbage"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_cursor")
}

// testVercelEmptyLists: lists of nothing are empty, not nil.
func testVercelEmptyLists(t *testing.T, s store.Store) {
	sbs, next, err := s.ListVercelSandboxes(ctx(t), store.VercelSandboxFilter{TeamID: "team-a"}, store.Page{})
	if err != nil || sbs == nil || len(sbs) != 0 || next != "" {
		t.Errorf("ListVercelSandboxes on an empty store: %v %q %v", sbs, next, err)
	}
	snaps, next, err := s.ListVercelSnapshots(ctx(t), store.VercelSnapshotFilter{TeamID: "team-a"}, store.Page{})
	if err != nil || snaps == nil || len(snaps) != 0 || next != "" {
		t.Errorf("ListVercelSnapshots on an empty store: %v %q %v", snaps, next, err)
	}
}

func testVercelSnapshots(t *testing.T, s store.Store) {
	c := ctx(t)
	snap := func(id, team, project, name string, d time.Duration) store.VercelSnapshot {
		return store.VercelSnapshot{ID: id, TeamID: team, Project: project, SandboxName: name, SourceSession: "sb-" + id,
			ParentID: "snap-parent", CreationMethod: "manual", CreatedAt: at(d)}
	}
	s1 := snap("snap-1", "team-a", "prj_1", "box", 0)
	s2 := snap("snap-2", "team-a", "prj_1", "other", time.Second)
	s3 := snap("snap-3", "team-a", "prj_2", "box", 2*time.Second)
	s4 := snap("snap-4", "team-b", "prj_1", "box", 3*time.Second)
	s5 := store.VercelSnapshot{ID: "snap-5", TeamID: "team-a", Project: "prj_1", SandboxName: "box", CreatedAt: at(time.Second)}
	for _, v := range []store.VercelSnapshot{s3, s1, s4, s2, s5} {
		must(t, s.CreateVercelSnapshot(c, v))
	}
	for _, v := range []*store.VercelSnapshot{&s1, &s2, &s3, &s4, &s5} {
		v.CreatedAt = store.Time(v.CreatedAt)
	}
	got, err := s.GetVercelSnapshot(c, "team-a", "snap-1")
	must(t, err)
	equal(t, "GetVercelSnapshot", got, s1)
	got, err = s.GetVercelSnapshot(c, "team-a", "snap-5")
	must(t, err)
	equal(t, "GetVercelSnapshot with empty fields", got, s5)
	_, err = s.GetVercelSnapshot(c, "team-b", "snap-1")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_snapshot_not_found")
	wantErr(t, s.CreateVercelSnapshot(c, snap("snap-1", "team-b", "prj_9", "x", 0)), sandbox.ErrConflict, "vercel_snapshot_exists")

	sid := func(v store.VercelSnapshot) string { return v.ID }
	for _, tc := range []struct {
		name string
		f    store.VercelSnapshotFilter
		want []string
	}{
		{"team", store.VercelSnapshotFilter{TeamID: "team-a"}, []string{"snap-1", "snap-2", "snap-5", "snap-3"}},
		{"project", store.VercelSnapshotFilter{TeamID: "team-a", Project: "prj_1"}, []string{"snap-1", "snap-2", "snap-5"}},
		{"sandbox", store.VercelSnapshotFilter{TeamID: "team-a", SandboxName: "box"}, []string{"snap-1", "snap-5", "snap-3"}},
		{"project and sandbox", store.VercelSnapshotFilter{TeamID: "team-a", Project: "prj_1", SandboxName: "box"}, []string{"snap-1", "snap-5"}},
		{"other team", store.VercelSnapshotFilter{TeamID: "team-b"}, []string{"snap-4"}},
		{"no team", store.VercelSnapshotFilter{Project: "prj_1"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []store.VercelSnapshot
			cursor := ""
			for range 10 {
				page, next, err := s.ListVercelSnapshots(c, tc.f, store.Page{Cursor: cursor, Limit: 2})
				must(t, err)
				got = append(got, page...)
				if next == "" {
					break
				}
				cursor = next
			}
			equal(t, "ListVercelSnapshots", ids(got, sid), tc.want)
		})
	}

	wantErr(t, s.DeleteVercelSnapshot(c, "team-b", "snap-1"), sandbox.ErrNotFound, "vercel_snapshot_not_found")
	must(t, s.DeleteVercelSnapshot(c, "team-a", "snap-1"))
	_, err = s.GetVercelSnapshot(c, "team-a", "snap-1")
	wantErr(t, err, sandbox.ErrNotFound, "vercel_snapshot_not_found")
	wantErr(t, s.DeleteVercelSnapshot(c, "team-a", "snap-1"), sandbox.ErrNotFound, "vercel_snapshot_not_found")
}

func testVercelInvalid(t *testing.T, s store.Store) {
	c := ctx(t)
	ok := vercelSandbox("team-a", "prj_1", "box", 0)
	with := func(f func(*store.VercelSandbox)) store.VercelSandbox {
		v := ok
		f(&v)
		return v
	}
	for name, v := range map[string]store.VercelSandbox{
		"without team":     with(func(v *store.VercelSandbox) { v.TeamID = "" }),
		"without project":  with(func(v *store.VercelSandbox) { v.Project = "" }),
		"without name":     with(func(v *store.VercelSandbox) { v.Name = "" }),
		"without data":     with(func(v *store.VercelSandbox) { v.Data = nil }),
		"bad data":         with(func(v *store.VercelSandbox) { v.Data = json.RawMessage(`{`) }),
		"empty session id": with(func(v *store.VercelSandbox) { v.SessionIDs = []string{"sb-1", ""} }),
		"data over the cap": with(func(v *store.VercelSandbox) {
			v.Data = json.RawMessage(`"` + strings.Repeat("x", store.MaxVercelData) + `"`)
		}),
		"data far over a cap": with(func(v *store.VercelSandbox) {
			v.Data = json.RawMessage(`"` + strings.Repeat("x", 4*store.MaxVercelData) + `"`)
		}),
	} {
		if err := s.CreateVercelSandbox(c, v); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("create %s: error %v, want ErrInvalid", name, err)
		}
	}
	// The largest document fits.
	big := with(func(v *store.VercelSandbox) {
		v.Data = json.RawMessage(`"` + strings.Repeat("x", store.MaxVercelData-2) + `"`)
	})
	must(t, s.CreateVercelSandbox(c, big))
	must(t, s.CreateVercelSandbox(c, with(func(v *store.VercelSandbox) { v.Name = "small" })))
	v, err := s.GetVercelSandbox(c, "team-a", "prj_1", "small")
	must(t, err)
	v.Data = json.RawMessage(`{"a":`)
	if _, err := s.UpdateVercelSandbox(c, v); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("update with bad data: error %v, want ErrInvalid", err)
	}
	for name, snap := range map[string]store.VercelSnapshot{
		"snapshot without id":      {TeamID: "team-a", Project: "p"},
		"snapshot without team":    {ID: "snap-1", Project: "p"},
		"snapshot without project": {ID: "snap-1", TeamID: "team-a"},
	} {
		if err := s.CreateVercelSnapshot(c, snap); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
}

// testVercelReopen: the records and their session index outlive the store.
func testVercelReopen(t *testing.T, s store.Store, reopen func(t *testing.T, closed store.Store) store.Store) {
	c := ctx(t)
	must(t, s.CreateVercelSandbox(c, vercelSandbox("team-a", "prj_1", "box", 0, "sb-1")))
	v, err := s.GetVercelSandbox(c, "team-a", "prj_1", "box")
	must(t, err)
	v.SessionIDs = []string{"sb-1", "sb-2"}
	v, err = s.UpdateVercelSandbox(c, v)
	must(t, err)
	snap := store.VercelSnapshot{ID: "snap-1", TeamID: "team-a", Project: "prj_1", SandboxName: "box", CreatedAt: at(0)}
	must(t, s.CreateVercelSnapshot(c, snap))

	must(t, s.Close())
	s2 := reopen(t, s)
	defer s2.Close()
	got, err := s2.GetVercelSandboxBySession(c, "team-a", "sb-2")
	must(t, err)
	equal(t, "vercel sandbox after reopen", got, v)
	gotSnap, err := s2.GetVercelSnapshot(c, "team-a", "snap-1")
	must(t, err)
	snap.CreatedAt = store.Time(snap.CreatedAt)
	equal(t, "vercel snapshot after reopen", gotSnap, snap)
	wantErr(t, s2.CreateVercelSandbox(c, vercelSandbox("team-a", "prj_1", "box", 0)), sandbox.ErrConflict, "vercel_sandbox_exists")
	_, err = s2.UpdateVercelSandbox(c, got)
	must(t, err)
}
