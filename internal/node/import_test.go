package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestImportFileRecords is the upgrade to records in a database: a
// manager on JSON files leaves a running and a stopped sandbox; the next
// one, on Records, takes the files over and re-adopts the running one.
func TestImportFileRecords(t *testing.T) {
	e := newEnv(t, nil)
	running := e.create(t)
	stopped := e.create(t)
	if _, err := e.m.Stop(t.Context(), stopped.ID); err != nil {
		t.Fatal(err)
	}
	e.m.Close()

	recs := newMemStore()
	m := e.manager(t, func(c *Config) { c.Records = recs })
	if got, err := m.Get(t.Context(), running.ID); err != nil || got.State != sandbox.Running {
		t.Errorf("imported running sandbox = %s, %v; want re-adopted", got.State, err)
	}
	if _, err := m.Agent(t.Context(), running.ID); err != nil {
		t.Errorf("agent of the re-adopted sandbox: %v", err)
	}
	if got, err := m.Get(t.Context(), stopped.ID); err != nil || got.State != sandbox.Stopped {
		t.Errorf("imported stopped sandbox = %s, %v", got.State, err)
	}
	if len(recs.records) != 2 {
		t.Errorf("Records holds %d records, want 2", len(recs.records))
	}
	dir := filepath.Join(e.dir, "node", "sandboxes")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("record dir still there after the import: %v", err)
	}
	if ents, err := os.ReadDir(dir + importedSuffix); err != nil || len(ents) != 2 {
		t.Errorf("renamed record dir holds %d files (%v), want 2", len(ents), err)
	}
	m.Close()

	// Nothing to import the next time: a sandbox deleted now stays deleted.
	m = e.manager(t, func(c *Config) { c.Records = recs })
	if err := m.Delete(t.Context(), stopped.ID); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m = e.manager(t, func(c *Config) { c.Records = recs })
	if _, err := m.Get(t.Context(), stopped.ID); err == nil {
		t.Error("a deleted sandbox came back from the imported files")
	}
}

func TestImportFileRecordsBadFile(t *testing.T) {
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	dir := filepath.Join(e.dir, "node", "sandboxes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sb-bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{DataDir: e.dir, Driver: e.d, Records: newMemStore(), Logger: discardLogger()})
	if err == nil {
		t.Fatal("New imported a damaged record; it must refuse to start instead")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("record dir renamed after a failed import: %v", err)
	}
}
