package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// e2bCases are the cases of the E2B compatibility layer's records.
var e2bCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"E2BSandboxes", testE2BSandboxes},
	{"E2BInvalid", testE2BInvalid},
}

// e2bData holds metadata keys a document store would not take as field
// names.
const e2bData = `{"templateID":"base","metadata":{"user.id":"1","$x":"2","":"3"}}`

func testE2BSandboxes(t *testing.T, s store.Store) {
	c := ctx(t)
	rec := func(id, team string, d time.Duration) store.E2BSandbox {
		return store.E2BSandbox{ID: id, TeamID: team, Data: json.RawMessage(e2bData), CreatedAt: at(d)}
	}
	r1, r2, r3, r4 := rec("sb-1", "team-a", 0), rec("sb-2", "team-a", time.Second), rec("sb-3", "team-b", 2*time.Second), rec("sb-4", "team-a", time.Second)
	for _, v := range []store.E2BSandbox{r3, r2, r1, r4} {
		must(t, s.CreateE2BSandbox(c, v))
	}
	for _, v := range []*store.E2BSandbox{&r1, &r2, &r3, &r4} {
		v.CreatedAt = store.Time(v.CreatedAt)
	}
	got, err := s.GetE2BSandbox(c, "team-a", "sb-1")
	must(t, err)
	equal(t, "GetE2BSandbox", got, r1)
	_, err = s.GetE2BSandbox(c, "team-b", "sb-1")
	wantErr(t, err, sandbox.ErrNotFound, "e2b_sandbox_not_found")
	wantErr(t, s.CreateE2BSandbox(c, rec("sb-1", "team-b", 0)), sandbox.ErrConflict, "e2b_sandbox_exists")

	for _, tc := range []struct {
		name string
		f    store.E2BSandboxFilter
		want []string
	}{
		{"team", store.E2BSandboxFilter{TeamID: "team-a"}, []string{"sb-1", "sb-2", "sb-4"}},
		{"other team", store.E2BSandboxFilter{TeamID: "team-b"}, []string{"sb-3"}},
		{"no team", store.E2BSandboxFilter{}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []store.E2BSandbox
			cursor := ""
			for range 10 {
				page, next, err := s.ListE2BSandboxes(c, tc.f, store.Page{Cursor: cursor, Limit: 2})
				must(t, err)
				got = append(got, page...)
				if next == "" {
					break
				}
				cursor = next
			}
			equal(t, "ListE2BSandboxes", ids(got, func(v store.E2BSandbox) string { return v.ID }), tc.want)
		})
	}

	wantErr(t, s.DeleteE2BSandbox(c, "team-b", "sb-1"), sandbox.ErrNotFound, "e2b_sandbox_not_found")
	must(t, s.DeleteE2BSandbox(c, "team-a", "sb-1"))
	_, err = s.GetE2BSandbox(c, "team-a", "sb-1")
	wantErr(t, err, sandbox.ErrNotFound, "e2b_sandbox_not_found")
	wantErr(t, s.DeleteE2BSandbox(c, "team-a", "sb-1"), sandbox.ErrNotFound, "e2b_sandbox_not_found")
}

func testE2BInvalid(t *testing.T, s store.Store) {
	c := ctx(t)
	big := make([]byte, store.MaxE2BData+1)
	for i := range big {
		big[i] = ' '
	}
	big[0], big[len(big)-1] = '{', '}'
	for _, tc := range []struct {
		name string
		v    store.E2BSandbox
	}{
		{"no id", store.E2BSandbox{TeamID: "team-a", Data: json.RawMessage(`{}`)}},
		{"no team", store.E2BSandbox{ID: "sb-1", Data: json.RawMessage(`{}`)}},
		{"no data", store.E2BSandbox{ID: "sb-1", TeamID: "team-a"}},
		{"bad JSON", store.E2BSandbox{ID: "sb-1", TeamID: "team-a", Data: json.RawMessage(`{`)}},
		{"too large", store.E2BSandbox{ID: "sb-1", TeamID: "team-a", Data: big}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, s.CreateE2BSandbox(c, tc.v), sandbox.ErrInvalid, "")
		})
	}
}
