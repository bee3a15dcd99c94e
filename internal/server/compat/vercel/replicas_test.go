package vercel

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

// sharedStores open two handles on one new store, as two paddock
// processes on one database have: SQLite (one file) and a MongoDB-wire
// server (FerretDB, as the store's conformance suite uses).
var sharedStores = []struct {
	name string
	open func(t *testing.T) (Records, Records)
}{
	{"SQLite", func(t *testing.T) (Records, Records) {
		path := filepath.Join(t.TempDir(), "paddock.db")
		open := func() Records {
			db, err := sqlite.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
		return open(), open()
	}},
	{"FerretDB", func(t *testing.T) (Records, Records) {
		uri, db := mongotest.URI(t), mongotest.NewDB()
		return mongotest.Open(t, uri, db), mongotest.Open(t, uri, db)
	}},
}

// TestTwoReplicas runs two handlers, each with sandboxes of its own, on
// one store: what one records the other sees, and concurrent changes of
// one record through both all land.
func TestTwoReplicas(t *testing.T) {
	for _, st := range sharedStores {
		t.Run(st.name, func(t *testing.T) {
			dbA, dbB := st.open(t)
			a, b := newEnvOn(t, dbA), newEnvOn(t, dbB)
			t.Run("SeenThroughTheOther", func(t *testing.T) { testSeenThroughTheOther(t, a, b) })
			t.Run("NoLostWrites", func(t *testing.T) { testNoLostWrites(t, a, b) })
			t.Run("OneNameOneSandbox", func(t *testing.T) { testOneNameOneSandbox(t, a, b) })
		})
	}
}

func testSeenThroughTheOther(t *testing.T, a, b *env) {
	out := a.create("shared", map[string]any{"tags": map[string]string{"made": "a"}})
	sid := out["session"].(map[string]any)["id"].(string)

	resp, data := b.do("GET", "/v2/sandboxes/shared", nil, "projectId=prj_1")
	got := decode(t, data)
	sb, _ := got["sandbox"].(map[string]any)
	if resp.StatusCode != 200 || sb["name"] != "shared" || sb["currentSessionId"] != sid || sb["persistent"] != true {
		t.Fatalf("get through b: %d %s", resp.StatusCode, data)
	}
	resp, data = b.do("GET", "/v2/sandboxes", nil, "project=prj_1&tags=made:a")
	if list := decode(t, data)["sandboxes"].([]any); resp.StatusCode != 200 || len(list) != 1 {
		t.Fatalf("list through b: %d %s", resp.StatusCode, data)
	}
	// The session runs on a's host: b finds it, and no sandbox of its own.
	resp, data = b.do("GET", "/v2/sandboxes/sessions/"+sid, nil, "")
	if resp.StatusCode != 200 || decode(t, data)["session"].(map[string]any)["id"] != sid {
		t.Fatalf("session through b: %d %s", resp.StatusCode, data)
	}
	// Another team sees nothing through either.
	resp, data = b.doAs(tokenTwo, "team_2", "GET", "/v2/sandboxes/shared", nil, "projectId=prj_1")
	wantError(t, resp, data, 404, "not_found")

	// A v1 sandbox too.
	resp, data = a.do("POST", "/v1/sandboxes", map[string]any{"projectId": "prj_1"}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("v1 create: %d %s", resp.StatusCode, data)
	}
	id := decode(t, data)["sandbox"].(map[string]any)["id"].(string)
	resp, data = b.do("GET", "/v1/sandboxes/"+id, nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("v1 get through b: %d %s", resp.StatusCode, data)
	}
	// A delete through b is a delete for a.
	resp, data = b.do("DELETE", "/v2/sandboxes/shared", nil, "projectId=prj_1")
	if resp.StatusCode != 200 {
		t.Fatalf("delete through b: %d %s", resp.StatusCode, data)
	}
	resp, data = a.do("GET", "/v2/sandboxes/shared", nil, "projectId=prj_1")
	wantError(t, resp, data, 404, "not_found")
}

// testNoLostWrites changes one sandbox through both replicas at once:
// each writer its own setting, and one replica also stops and resumes it.
// Every write lands: each setting ends at its writer's last value and
// every resume left a session.
func testNoLostWrites(t *testing.T, a, b *env) {
	a.create("busy", map[string]any{"persistent": false})
	onA := a.sbs.Count()
	const rounds = 8
	type writer struct {
		e    *env
		body func(i int) map[string]any
	}
	writers := []writer{
		{a, func(i int) map[string]any { return map[string]any{"timeout": 60000 + i} }},
		{b, func(i int) map[string]any { return map[string]any{"tags": map[string]string{"n": fmt.Sprint(i)}} }},
		{a, func(i int) map[string]any { return map[string]any{"region": fmt.Sprintf("r%d", i)} }},
		{b, func(i int) map[string]any { return map[string]any{"failoverRegions": []string{fmt.Sprintf("f%d", i)}} }},
	}
	var wg sync.WaitGroup
	errc := make(chan string, len(writers)*rounds+2*rounds)
	start := make(chan struct{})
	for _, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 1; i <= rounds; i++ {
				if resp, data := w.e.do("PATCH", "/v2/sandboxes/busy", w.body(i), "projectId=prj_1"); resp.StatusCode != 200 {
					errc <- fmt.Sprintf("patch %v: %d %s", w.body(i), resp.StatusCode, data)
				}
			}
		}()
	}
	// b stops the current session and resumes the sandbox, each time on
	// its own host.
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		for range rounds {
			resp, data := b.do("GET", "/v2/sandboxes/busy", nil, "projectId=prj_1")
			if resp.StatusCode != 200 {
				errc <- fmt.Sprintf("get: %d %s", resp.StatusCode, data)
				return
			}
			sid := decode(t, data)["sandbox"].(map[string]any)["currentSessionId"].(string)
			if resp, data := b.do("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, ""); resp.StatusCode != 200 {
				errc <- fmt.Sprintf("stop: %d %s", resp.StatusCode, data)
			}
			if resp, data := b.do("GET", "/v2/sandboxes/busy", nil, "projectId=prj_1&resume=true"); resp.StatusCode != 200 || decode(t, data)["resumed"] != true {
				errc <- fmt.Sprintf("resume: %d %s", resp.StatusCode, data)
			}
		}
	}()
	close(start)
	wg.Wait()
	close(errc)
	for msg := range errc {
		t.Error(msg)
	}
	for name, e := range map[string]*env{"a": a, "b": b} {
		resp, data := e.do("GET", "/v2/sandboxes/busy", nil, "projectId=prj_1")
		sb := decode(t, data)["sandbox"].(map[string]any)
		tags, _ := sb["tags"].(map[string]any)
		failover, _ := sb["failoverRegions"].([]any)
		if resp.StatusCode != 200 || sb["timeout"] != float64(60000+rounds) || tags["n"] != fmt.Sprint(rounds) ||
			sb["region"] != fmt.Sprintf("r%d", rounds) || len(failover) != 1 || failover[0] != fmt.Sprintf("f%d", rounds) {
			t.Errorf("through %s, a write was lost: %s", name, data)
		}
	}
	resp, data := a.do("GET", "/v2/sandboxes/sessions", nil, "project=prj_1&name=busy")
	if n := len(decode(t, data)["sessions"].([]any)); resp.StatusCode != 200 || n != 1+rounds {
		t.Errorf("%d sessions after %d resumes, want %d: %s", n, rounds, 1+rounds, data)
	}
	// b dropped every session it ended; the first one runs on a's host,
	// which b cannot reach (a's node ends it at its timeout).
	if a.sbs.Count() != onA || b.sbs.Count() != 1 {
		t.Errorf("sandboxes left: %d on a (had %d), %d on b, want 1", a.sbs.Count(), onA, b.sbs.Count())
	}
}

// testOneNameOneSandbox creates one name through both replicas at once:
// one wins, the other answers 409 and leaves no sandbox running.
func testOneNameOneSandbox(t *testing.T, a, b *env) {
	for round := range 5 {
		name := fmt.Sprintf("race-%d", round)
		beforeA, beforeB := a.sbs.Count(), b.sbs.Count()
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		start := make(chan struct{})
		for i, e := range []*env{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, data := e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": name}, "")
				statuses[i] = resp.StatusCode
				if resp.StatusCode == 409 {
					wantError(t, resp, data, 409, "sandbox_exists")
				}
			}()
		}
		close(start)
		wg.Wait()
		slices.Sort(statuses)
		if statuses[0] != 200 || statuses[1] != 409 {
			t.Fatalf("round %d: statuses %v, want one 200 and one 409", round, statuses)
		}
		if made := a.sbs.Count() - beforeA + b.sbs.Count() - beforeB; made != 1 {
			t.Fatalf("round %d: %d sandboxes left for one name", round, made)
		}
	}
}

// TestConcurrentResume resumes one stopped sandbox from many requests at
// once: they all answer the one session that won, the others' sandboxes
// and snapshots are gone.
func TestConcurrentResume(t *testing.T) {
	for _, st := range sharedStores {
		t.Run(st.name, func(t *testing.T) {
			db, _ := st.open(t)
			e := newEnvOn(t, db)
			out := e.create("resumed", nil)
			sid := out["session"].(map[string]any)["id"].(string)
			// It stops on its own (a timeout): every resume snapshots it first.
			e.sbs.SetState(sid, sandbox.Stopped)
			const n = 6
			var wg sync.WaitGroup
			got := make([]string, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					resp, data := e.do("GET", "/v2/sandboxes/resumed", nil, "projectId=prj_1&resume=true")
					if resp.StatusCode != 200 {
						t.Errorf("resume: %d %s", resp.StatusCode, data)
						return
					}
					got[i] = decode(t, data)["session"].(map[string]any)["id"].(string)
				}()
			}
			close(start)
			wg.Wait()
			for _, g := range got {
				if g != got[0] || g == sid {
					t.Fatalf("resumes answered sessions %v (the stopped one: %s)", got, sid)
				}
			}
			resp, data := e.do("GET", "/v2/sandboxes/resumed", nil, "projectId=prj_1")
			sb := decode(t, data)["sandbox"].(map[string]any)
			if resp.StatusCode != 200 || sb["currentSessionId"] != got[0] || sb["status"] != "running" {
				t.Fatalf("after the resumes: %d %s", resp.StatusCode, data)
			}
			resp, data = e.do("GET", "/v2/sandboxes/sessions", nil, "project=prj_1&name=resumed")
			if n := len(decode(t, data)["sessions"].([]any)); resp.StatusCode != 200 || n != 2 {
				t.Errorf("%d sessions, want 2: %s", n, data)
			}
			if e.sbs.Count() != 1 {
				t.Errorf("%d sandboxes left, want the new session's alone", e.sbs.Count())
			}
			// One snapshot of the stopped session is kept, and recorded.
			resp, data = e.do("GET", "/v2/sandboxes/snapshots", nil, "project=prj_1&name=resumed")
			snaps := decode(t, data)["snapshots"].([]any)
			if resp.StatusCode != 200 || len(snaps) != 1 || e.snaps.Count() != 1 ||
				snaps[0].(map[string]any)["id"] != sb["currentSnapshotId"] {
				t.Errorf("snapshots: %d kept by paddock, listed %s; current %v", e.snaps.Count(), data, sb["currentSnapshotId"])
			}
		})
	}
}
