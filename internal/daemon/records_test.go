package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

func openStore(t *testing.T, path string) *sqlite.Store {
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startManager(t *testing.T, dir string, d runtime.Driver, recs node.Records) *node.Manager {
	m, err := node.New(node.Config{
		DataDir:      dir,
		Driver:       d,
		MaxResources: sandbox.Resources{VCPUs: 2, MemoryMB: 4096, PIDs: 4096},
		Logger:       slog.New(slog.DiscardHandler),
		Records:      recs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestNodeOnSQLite runs a node whose records live in the SQLite store,
// restarts both, and checks the new node re-reads them: the running
// sandbox is re-adopted, the stopped one stays stopped, the deleted one
// stays gone, another node's record is not this node's.
func TestNodeOnSQLite(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "paddock.db")
	d := fake.NewDriver(t, fake.DriverConfig{})

	st := openStore(t, dbPath)
	// Another node's sandbox in the same database.
	if err := st.PutSandbox(t.Context(), store.SandboxRecord{Node: "node-b",
		Sandbox: sandbox.Sandbox{ID: "sb-elsewhere", State: sandbox.Running, Image: "host"}}); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, dir, d, newNodeRecords(st, "node-a"))
	var sbs []sandbox.Sandbox
	for range 3 {
		sb, err := m.Create(t.Context(), sandbox.CreateRequest{TeamID: "team-a", Env: map[string]string{"A": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		sbs = append(sbs, sb)
	}
	running, stopped, deleted := sbs[0], sbs[1], sbs[2]
	if _, err := m.Stop(t.Context(), stopped.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(t.Context(), deleted.ID); err != nil {
		t.Fatal(err)
	}
	stopped, err := m.Get(t.Context(), stopped.ID)
	if err != nil {
		t.Fatal(err)
	}

	// The records are in the store, not in files.
	recs, err := st.ListSandboxes(t.Context(), "node-a")
	if err != nil || len(recs) != 2 {
		t.Fatalf("store holds %d records of node-a (%v), want 2", len(recs), err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "node", "sandboxes")); len(ents) != 0 {
		t.Fatalf("the file store was written: %v", ents)
	}

	// Restart: the manager and the database both go away.
	m.Close()
	st.Close()
	st = openStore(t, dbPath)
	m = startManager(t, dir, d, newNodeRecords(st, "node-a"))

	got, err := m.Get(t.Context(), running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sandbox.Running || got.TeamID != "team-a" || got.Env["A"] != "1" ||
		!got.CreatedAt.Equal(store.Time(running.CreatedAt)) {
		t.Fatalf("running sandbox after restart: %+v", got)
	}
	got, err = m.Get(t.Context(), stopped.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sandbox.Stopped || !got.StoppedAt.Equal(store.Time(stopped.StoppedAt)) {
		t.Fatalf("stopped sandbox after restart: %+v", got)
	}
	for _, id := range []string{deleted.ID, "sb-elsewhere"} {
		if _, err := m.Get(t.Context(), id); sandbox.CodeOf(err) != "sandbox_not_found" {
			t.Fatalf("Get %s after restart: %v, want sandbox_not_found", id, err)
		}
	}
	// The re-adopted sandbox still works: stop it through the new manager.
	if _, err := m.Stop(t.Context(), running.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := st.GetSandbox(t.Context(), running.ID)
	if err != nil || rec.Sandbox.State != sandbox.Stopped || rec.Node != "node-a" {
		t.Fatalf("record after stop: %+v %v", rec, err)
	}
	// node-b's record was left alone.
	if _, err := st.GetSandbox(t.Context(), "sb-elsewhere"); err != nil {
		t.Fatal(err)
	}
}

func TestRecords(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	a, b := newNodeRecords(st, "node-a"), newNodeRecords(st, "node-b")
	sb := sandbox.Sandbox{ID: "sb-1", State: sandbox.Pending, Image: "host"}
	if err := a.Save(t.Context(), sb); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(t.Context(), sandbox.Sandbox{ID: "sb-2", State: sandbox.Running}); err != nil {
		t.Fatal(err)
	}
	sb.State = sandbox.Running
	if err := a.Save(t.Context(), sb); err != nil {
		t.Fatal(err)
	}
	got, err := a.LoadAll(t.Context())
	if err != nil || len(got) != 1 || got[0].ID != "sb-1" || got[0].State != sandbox.Running {
		t.Fatalf("LoadAll = %+v, %v", got, err)
	}
	if err := a.Remove(t.Context(), "sb-1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(t.Context(), "sb-unknown"); err != nil {
		t.Fatalf("removing an unknown id: %v", err)
	}
	if got, err := a.LoadAll(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("LoadAll after Remove = %+v, %v", got, err)
	}
	if got, err := b.LoadAll(t.Context()); err != nil || len(got) != 1 {
		t.Fatalf("node-b's LoadAll = %+v, %v", got, err)
	}
}
