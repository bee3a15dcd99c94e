package sqlite

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
)

// TestMigration10 carries a team's admission record of schema 8 (every
// slot in its document) over: the slots bound to sandboxes become hold
// records and the document keeps their totals and the unbound slots.
func TestMigration10(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (8)`}, migrations[:8]...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old := `{"limits":{"concurrent":5},"set":true,"held":[
		{"id":"adm-1","replica":"r1","sandbox":"sb-1","vcpus":1,"memoryMb":1024,"bound":"2026-12-06T12:00:00.5Z"},
		{"id":"adm-2","replica":"r1","vcpus":2,"memoryMb":512,"expires":"2026-12-06T12:15:00Z"},
		{"id":"adm-3","replica":"r2","sandbox":"sb-3","vcpus":0.5,"memoryMb":256,"bound":"2026-12-06T12:01:00Z"}],
		"waiting":[{"id":"adm-4","replica":"r2","since":"2026-12-06T12:02:00Z","expires":"2026-12-06T12:03:00Z","vcpus":1,"memoryMb":1024}]}`
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO admissions (team_id, data, version, updated_at) VALUES ('team-a', ?, 3, 0)`, []any{old}},
		{`INSERT INTO admissions (team_id, data, version, updated_at) VALUES ('team-b', '{"set":false}', 1, 0)`, nil},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	holds, err := s.ListAdmissionHolds(t.Context(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.AdmissionHold{
		{SandboxID: "sb-1", TeamID: "team-a", HoldID: "adm-1", Replica: "r1", VCPUs: 1, MemoryMB: 1024, CreatedAt: time.Date(2026, 12, 6, 12, 0, 0, 500e6, time.UTC)},
		{SandboxID: "sb-3", TeamID: "team-a", HoldID: "adm-3", Replica: "r2", VCPUs: 0.5, MemoryMB: 256, CreatedAt: time.Date(2026, 12, 6, 12, 1, 0, 0, time.UTC)},
	}
	if len(holds) != len(want) {
		t.Fatalf("holds %+v, want %+v", holds, want)
	}
	for i := range want {
		if !holds[i].CreatedAt.Equal(want[i].CreatedAt) {
			t.Errorf("hold %d bound at %v, want %v", i, holds[i].CreatedAt, want[i].CreatedAt)
		}
		holds[i].CreatedAt = want[i].CreatedAt
		if holds[i] != want[i] {
			t.Errorf("hold %d: %+v, want %+v", i, holds[i], want[i])
		}
	}
	a, err := s.GetAdmission(t.Context(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Limits  map[string]any   `json:"limits"`
		Set     bool             `json:"set"`
		Held    []map[string]any `json:"held"`
		Waiting []map[string]any `json:"waiting"`
		Bound   struct {
			Count    int     `json:"count"`
			VCPUs    float64 `json:"vcpus"`
			MemoryMB int64   `json:"memoryMb"`
		} `json:"bound"`
	}
	if err := json.Unmarshal(a.Data, &doc); err != nil {
		t.Fatal(err)
	}
	if a.Version != 4 || !doc.Set || doc.Limits["concurrent"] != 5.0 || len(doc.Waiting) != 1 ||
		len(doc.Held) != 1 || doc.Held[0]["id"] != "adm-2" ||
		doc.Bound.Count != 2 || doc.Bound.VCPUs != 1.5 || doc.Bound.MemoryMB != 1280 {
		t.Fatalf("team-a's record after the migration (version %d): %s", a.Version, a.Data)
	}
	// A record with no bound slot is left as it was.
	if b, err := s.GetAdmission(t.Context(), "team-b"); err != nil || b.Version != 1 || string(b.Data) != `{"set":false}` {
		t.Fatalf("team-b's record: %+v, %v", b, err)
	}
}
