package sqlite

import (
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/store"
)

// TestMigration15 orders the snapshot directory's records of schema 14 by
// the creation time their JSON holds (with its milliseconds, in any
// zone), so that a team's list from it is oldest first.
func TestMigration15(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (14)`}, migrations[:14]...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct{ id, team, created string }{
		{"snap-b", "team-a", "2026-12-06T12:00:00.5Z"},
		{"snap-a", "team-a", "2026-12-06T13:00:00.25+01:00"}, // 12:00:00.25 UTC: first
		{"snap-c", "team-a", "2026-12-06T12:00:01Z"},
		{"snap-d", "team-b", "2026-12-06T11:00:00Z"},
	} {
		if _, err := db.Exec(`INSERT INTO snapshot_refs (id, team, data, last_used) VALUES (?, ?, ?, NULL)`, r.id, r.team,
			`{"id":"`+r.id+`","team":"`+r.team+`","replica":"r1","size":1,"createdAt":"`+r.created+`","lastUsed":"0001-01-01T00:00:00Z"}`); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for cursor := ""; ; {
		refs, next, err := s.ListSnapshotRefs(t.Context(), "team-a", store.Page{Cursor: cursor, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range refs {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if want := []string{"snap-a", "snap-b", "snap-c"}; !slices.Equal(got, want) {
		t.Fatalf("team a's snapshots after the migration: %v, want %v", got, want)
	}
	var ms int64
	if err := s.DB().QueryRowContext(t.Context(), `SELECT created_at FROM snapshot_refs WHERE id = 'snap-b'`).Scan(&ms); err != nil || ms != 1796558400500 {
		t.Fatalf("snap-b's created_at: %d, %v; want 1796558400500", ms, err)
	}
}
