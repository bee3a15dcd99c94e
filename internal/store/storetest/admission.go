package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// admissionCases are the cases of the teams' admission records.
var admissionCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Admissions", testAdmissions},
	{"AdmissionNoLostUpdates", testAdmissionNoLostUpdates},
	{"AdmissionHolds", testAdmissionHolds},
}

func testAdmissions(t *testing.T, s store.Store) {
	if _, err := s.GetAdmission(ctx(t), "team-a"); !errors.Is(err, sandbox.ErrNotFound) || sandbox.CodeOf(err) != "admission_not_found" {
		t.Fatalf("get of a missing record: %v", err)
	}
	if got, err := s.ListAdmissions(ctx(t)); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty list: %v, %v", got, err)
	}
	// Data with keys a document store would not take as field names.
	data := json.RawMessage(`{"limits":{"concurrent":2},"held":[{"id":"h1","$x":1,"a.b":2}]}`)
	must(t, s.CreateAdmission(ctx(t), store.Admission{TeamID: "team-b", Data: data}))
	must(t, s.CreateAdmission(ctx(t), store.Admission{TeamID: "team-a"}))
	if err := s.CreateAdmission(ctx(t), store.Admission{TeamID: "team-a"}); !errors.Is(err, sandbox.ErrConflict) || sandbox.CodeOf(err) != "admission_exists" {
		t.Fatalf("duplicate create: %v", err)
	}
	b, err := s.GetAdmission(ctx(t), "team-b")
	must(t, err)
	if b.Version != 1 || b.UpdatedAt.IsZero() || !jsonEqual(b.Data, data) {
		t.Fatalf("created record: %+v", b)
	}
	a, err := s.GetAdmission(ctx(t), "team-a")
	must(t, err)
	if !jsonEqual(a.Data, json.RawMessage(`{}`)) {
		t.Fatalf("empty data is stored as {}: %s", a.Data)
	}

	b.Data = json.RawMessage(`{"held":[]}`)
	b2, err := s.UpdateAdmission(ctx(t), b)
	must(t, err)
	if b2.Version != 2 || !jsonEqual(b2.Data, b.Data) {
		t.Fatalf("updated record: %+v", b2)
	}
	if _, err := s.UpdateAdmission(ctx(t), b); !errors.Is(err, sandbox.ErrConflict) || sandbox.CodeOf(err) != "stale_version" {
		t.Fatalf("update from a stale version: %v", err)
	}
	if _, err := s.UpdateAdmission(ctx(t), store.Admission{TeamID: "team-c", Version: 1}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("update of a missing record: %v", err)
	}
	for name, bad := range map[string]store.Admission{
		"no team":      {Data: json.RawMessage(`{}`)},
		"invalid json": {TeamID: "team-d", Data: json.RawMessage(`{`)},
		"too large":    {TeamID: "team-d", Data: json.RawMessage(`"` + strings.Repeat("x", store.MaxAdmissionData) + `"`)},
	} {
		if err := s.CreateAdmission(ctx(t), bad); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: create answered %v, want ErrInvalid", name, err)
		}
	}

	list, err := s.ListAdmissions(ctx(t))
	must(t, err)
	if len(list) != 2 || list[0].TeamID != "team-a" || list[1].TeamID != "team-b" || list[1].Version != 2 {
		t.Fatalf("list: %+v", list)
	}
}

// testAdmissionNoLostUpdates: concurrent read-modify-write loops (what
// replicas admitting one team's requests do) lose no increment.
func testAdmissionNoLostUpdates(t *testing.T, s store.Store) {
	must(t, s.CreateAdmission(ctx(t), store.Admission{TeamID: "team-a", Data: json.RawMessage(`{"n":0}`)}))
	const writers, each = 6, 5
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := context.Background()
			for done := 0; done < each; {
				a, err := s.GetAdmission(c, "team-a")
				if err != nil {
					errc <- err
					return
				}
				var doc struct{ N int }
				if err := json.Unmarshal(a.Data, &doc); err != nil {
					errc <- err
					return
				}
				a.Data = json.RawMessage(`{"n":` + strconv.Itoa(doc.N+1) + `}`)
				if _, err := s.UpdateAdmission(c, a); errors.Is(err, sandbox.ErrConflict) {
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
	a, err := s.GetAdmission(ctx(t), "team-a")
	must(t, err)
	if !jsonEqual(a.Data, json.RawMessage(`{"n":`+strconv.Itoa(writers*each)+`}`)) || a.Version != writers*each+1 {
		t.Fatalf("after %d increments: data %s, version %d", writers*each, a.Data, a.Version)
	}
}

// testAdmissionHolds: hold records are per sandbox, listed by team, and
// of concurrent deletes of one record exactly one gets it.
func testAdmissionHolds(t *testing.T, s store.Store) {
	if _, err := s.DeleteAdmissionHold(ctx(t), "sb-1"); !errors.Is(err, sandbox.ErrNotFound) || sandbox.CodeOf(err) != "admission_hold_not_found" {
		t.Fatalf("delete of a missing record: %v", err)
	}
	if got, err := s.ListAdmissionHolds(ctx(t), "team-a"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty list: %v, %v", got, err)
	}
	at := store.Time(time.Date(2026, 12, 6, 12, 0, 0, 123e6, time.UTC))
	want := store.AdmissionHold{SandboxID: "sb-2", TeamID: "team-a", HoldID: "adm-1", Replica: "r1", VCPUs: 1.5, MemoryMB: 512, CreatedAt: at}
	must(t, s.CreateAdmissionHold(ctx(t), want))
	must(t, s.CreateAdmissionHold(ctx(t), store.AdmissionHold{SandboxID: "sb-1", TeamID: "team-a"}))
	must(t, s.CreateAdmissionHold(ctx(t), store.AdmissionHold{SandboxID: "sb-3", TeamID: "team-b"}))
	if err := s.CreateAdmissionHold(ctx(t), store.AdmissionHold{SandboxID: "sb-2", TeamID: "team-b"}); !errors.Is(err, sandbox.ErrConflict) || sandbox.CodeOf(err) != "admission_hold_exists" {
		t.Fatalf("duplicate create: %v", err)
	}
	for name, bad := range map[string]store.AdmissionHold{
		"no sandbox":       {TeamID: "team-a"},
		"no team":          {SandboxID: "sb-9"},
		"negative vcpus":   {SandboxID: "sb-9", TeamID: "team-a", VCPUs: -1},
		"negative memory":  {SandboxID: "sb-9", TeamID: "team-a", MemoryMB: -1},
		"not-a-number cpu": {SandboxID: "sb-9", TeamID: "team-a", VCPUs: math.NaN()},
	} {
		if err := s.CreateAdmissionHold(ctx(t), bad); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: create answered %v, want ErrInvalid", name, err)
		}
	}
	list, err := s.ListAdmissionHolds(ctx(t), "team-a")
	must(t, err)
	if len(list) != 2 || list[0].SandboxID != "sb-1" || list[0].CreatedAt.IsZero() || list[1] != want {
		t.Fatalf("team-a's holds: %+v", list)
	}
	// Deletes race: one wins and gets the record, the others find none.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []store.AdmissionHold
	for range 6 {
		wg.Go(func() {
			h, err := s.DeleteAdmissionHold(context.Background(), "sb-2")
			if errors.Is(err, sandbox.ErrNotFound) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			won = append(won, h)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(won) != 1 || won[0] != want {
		t.Fatalf("concurrent deletes returned %+v, want the record once", won)
	}
	list, err = s.ListAdmissionHolds(ctx(t), "team-a")
	must(t, err)
	if len(list) != 1 || list[0].SandboxID != "sb-1" {
		t.Fatalf("after the delete: %+v", list)
	}
}

// jsonEqual compares two JSON documents by value: a store may keep
// another spacing.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
