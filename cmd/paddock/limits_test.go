package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

// TestTeamLimitsVerb: `paddock team limits` shows a team's limits, sets
// them from flags (a preset and custom values), and resets them, each
// through its route.
func TestTeamLimitsVerb(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	var bodies []api.TeamLimits
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		var l api.TeamLimits
		if r.Method == http.MethodPut {
			data, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(data, &l); err != nil {
				t.Errorf("body %q: %v", data, err)
			}
			bodies = append(bodies, l)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(api.TeamAdmission{TeamID: "team-x", Limits: l, Default: r.Method != http.MethodPut,
			Effective: api.TeamLimits{Concurrent: 10}, Usage: api.TeamUsage{Concurrent: 3, Queued: 2}})
	}))
	defer srv.Close()

	for _, tc := range []struct {
		args []string
		call string
		out  string
	}{
		{[]string{"team", "limits", "team-x"}, "GET /api/v1/teams/team-x/limits", "server default limits"},
		{[]string{"team", "limits", "--preset", "hobby", "--concurrent", "20", "team-x"}, "PUT /api/v1/teams/team-x/limits", "preset hobby with custom values"},
		{[]string{"team", "limits", "--reset", "team-x"}, "DELETE /api/v1/teams/team-x/limits", "server default limits"},
	} {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{tc.args[0], tc.args[1], "--url", srv.URL, "--token", "pdk_x"}, tc.args[2:]...)
			if err := run(t.Context(), args, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v (%s)", err, stderr.String())
			}
			mu.Lock()
			last := calls[len(calls)-1]
			mu.Unlock()
			if last != tc.call {
				t.Errorf("called %s, want %s", last, tc.call)
			}
			if out := stdout.String(); !strings.Contains(out, tc.out) || !strings.Contains(out, "sandboxes") {
				t.Errorf("output %q lacks %q", out, tc.out)
			}
		})
	}
	if len(bodies) != 1 || bodies[0] != (api.TeamLimits{Preset: "hobby", Concurrent: 20}) {
		t.Errorf("PUT bodies %+v", bodies)
	}
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"team", "limits", "--url", srv.URL, "--token", "t", "--reset", "--preset", "pro", "team-x"}, io.Discard, &stderr); err == nil {
		t.Error("--reset with limits was accepted")
	}
}
