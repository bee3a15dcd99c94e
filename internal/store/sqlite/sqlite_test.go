package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/internal/store/storetest"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return open(t, filepath.Join(t.TempDir(), "paddock.db")) },
		storetest.Reopen(func(t *testing.T, closed store.Store) store.Store {
			return open(t, closed.(*sqlite.Store).Path())
		}))
}

func bench(b *testing.B, f func(*testing.B, store.Store)) {
	f(b, open(b, filepath.Join(b.TempDir(), "paddock.db")))
}

func BenchmarkPutSandbox(b *testing.B)     { bench(b, storetest.BenchPutSandbox) }
func BenchmarkGetTokenByHash(b *testing.B) { bench(b, storetest.BenchGetTokenByHash) }
func BenchmarkAppendEvent(b *testing.B)    { bench(b, storetest.BenchAppendEvent) }
func BenchmarkUpdateProject(b *testing.B)  { bench(b, storetest.BenchUpdateProject) }

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	s := open(t, path)
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v != sqlite.LatestSchema {
		t.Fatalf("schema version %d (%v), want %d", v, err, sqlite.LatestSchema)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode: %v %v", fi.Mode(), err)
	}
	var mode string
	if err := s.DB().QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q (%v), want wal", mode, err)
	}
	s.Close()

	// Reopening applies nothing and keeps the version.
	s = open(t, path)
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != sqlite.LatestSchema {
		t.Fatalf("schema version after reopen %d (%v)", v, err)
	}
	// A database from a newer paddock is refused, not mangled.
	if _, err := s.DB().ExecContext(t.Context(), `UPDATE schema_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s2, err := sqlite.Open(path); err == nil {
		s2.Close()
		t.Fatal("opened a database with a newer schema")
	}
}

// TestTwoHandles writes through two stores on one file at once, as two
// processes would: busy_timeout makes them wait, never fail.
func TestTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	a, b := open(t, path), open(t, path)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w, s := range []*sqlite.Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := s.AppendEvent(context.Background(), store.Event{Type: "x", Message: fmt.Sprint(w, i)}); err != nil {
					errc <- err
					return
				}
				if err := s.PutSandbox(context.Background(), store.SandboxRecord{Node: "n",
					Sandbox: sandbox.Sandbox{ID: fmt.Sprintf("sb-%d-%d", w, i)}}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	evs, err := a.ListEvents(t.Context(), store.EventFilter{Limit: 1000})
	if err != nil || len(evs) != 200 {
		t.Fatalf("%d events (%v), want 200", len(evs), err)
	}
	sbs, err := b.ListSandboxes(t.Context(), "n")
	if err != nil || len(sbs) != 200 {
		t.Fatalf("%d sandboxes (%v), want 200", len(sbs), err)
	}
}
