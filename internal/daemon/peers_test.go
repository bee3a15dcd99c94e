package daemon

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// TestPeersLocate holds where a request for another replica's sandbox
// goes: to its URL while its lease is live, nowhere (503) once it lapsed
// or when it never said where it serves; this replica's and idle pool
// sandboxes are no one else's.
func TestPeersLocate(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	now := time.Now()
	put := func(id, node, pool string) {
		t.Helper()
		sb := sandbox.Sandbox{ID: id, TeamID: "team-1", State: sandbox.Running, Pool: pool, CreatedAt: now}
		if err := st.PutSandbox(ctx, store.SandboxRecord{Node: node, Sandbox: sb}); err != nil {
			t.Fatal(err)
		}
	}
	put("sbxaaaaaaaaaaaaaaaaaaaaa1", "node-a", "")
	put("sbxaaaaaaaaaaaaaaaaaaaaa2", "node-a", "warm")
	put("sbxbbbbbbbbbbbbbbbbbbbbb1", "node-b", "")
	put("sbxcccccccccccccccccccccc1", "node-c", "")
	put("sbxdddddddddddddddddddddd1", "node-d", "")
	for _, r := range []store.Replica{{Name: "node-a", URL: "http://10.0.0.1:8080"}, {Name: "node-b", URL: "http://10.0.0.2:8080"},
		{Name: "node-c", URL: "http://10.0.0.3:8080"}, {Name: "node-d"}} {
		if err := st.PutReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// a and d run; c's lease lapsed.
	for _, n := range []string{"node-a", "node-d"} {
		if _, err := st.AcquireLease(ctx, lease.ReplicaLease(n), n, time.Minute, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.AcquireLease(ctx, lease.ReplicaLease("node-c"), "node-c", time.Second, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	p := &peers{s: st, self: "node-b", now: time.Now}

	tests := []struct {
		name, id string
		url      string // of the ElsewhereError; "none" = no error
	}{
		{"live replica", "sbxaaaaaaaaaaaaaaaaaaaaa1", "http://10.0.0.1:8080"},
		{"idle pool sandbox", "sbxaaaaaaaaaaaaaaaaaaaaa2", "none"},
		{"this replica's", "sbxbbbbbbbbbbbbbbbbbbbbb1", "none"},
		{"lease lapsed", "sbxcccccccccccccccccccccc1", ""},
		{"no URL", "sbxdddddddddddddddddddddd1", ""},
		{"nobody's", "sbxeeeeeeeeeeeeeeeeeeeee1", "none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Locate(ctx, tc.id)
			var ee *sandbox.ElsewhereError
			switch {
			case tc.url == "none" && err != nil:
				t.Fatalf("Locate: %v, want nil", err)
			case tc.url == "none":
			case !errors.As(err, &ee) || ee.URL != tc.url || ee.TeamID != "team-1":
				t.Fatalf("Locate: %#v, want an ElsewhereError to %q", err, tc.url)
			}
		})
	}

	// Lists show the other replicas' sandboxes (pool ones too: the node
	// leaves those out), never this one's.
	sbs, err := p.Sandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sbs) != 4 {
		t.Fatalf("Sandboxes: %d, want 4: %+v", len(sbs), sbs)
	}
	for _, sb := range sbs {
		if sb.ID == "sbxbbbbbbbbbbbbbbbbbbbbb1" {
			t.Fatal("Sandboxes lists this replica's own")
		}
	}
}
