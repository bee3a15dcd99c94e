package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

type fakeSandboxes struct {
	sbs     []sandbox.Sandbox
	failing string // Stats of this id fails
}

func (f fakeSandboxes) All(context.Context) []sandbox.Sandbox { return f.sbs }

func (f fakeSandboxes) Stats(_ context.Context, id string) (runtime.Stats, error) {
	if id == f.failing {
		return runtime.Stats{}, errors.New("cgroup gone")
	}
	return runtime.Stats{MemoryBytes: 1 << 20}, nil
}

// TestSandboxCollectorBounds: team labels past the bound fold into
// _other; per-sandbox series stop at the cap and count what they skip.
func TestSandboxCollectorBounds(t *testing.T) {
	var sbs []sandbox.Sandbox
	for team := range 5 {
		for i := range 5 - team { // team t0 has 5 sandboxes, t4 has 1
			sbs = append(sbs, sandbox.Sandbox{ID: fmt.Sprintf("sb-%d-%d", team, i), TeamID: fmt.Sprintf("t%d", team), State: sandbox.Running})
		}
	}
	c := &sandboxCollector{src: fakeSandboxes{sbs: sbs, failing: "sb-0-0"}, maxTeams: 2, maxSandboxes: 10}
	want := `
# HELP paddock_sandboxes Sandboxes on this host by state and team (at most MaxTeams teams by size, the rest as team="_other").
# TYPE paddock_sandboxes gauge
paddock_sandboxes{state="running",team="_other"} 6
paddock_sandboxes{state="running",team="t0"} 5
paddock_sandboxes{state="running",team="t1"} 4
# HELP paddock_sandbox_stats_skipped Running sandboxes whose stats this scrape did not report (past MaxSandboxes, the deadline, or a read error).
# TYPE paddock_sandbox_stats_skipped gauge
paddock_sandbox_stats_skipped 6
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "paddock_sandboxes", "paddock_sandbox_stats_skipped"); err != nil {
		t.Error(err)
	}
	// 15 running, 10 read, one of which failed: 9 series each.
	if n := testutil.CollectAndCount(c, "paddock_sandbox_memory_bytes"); n != 9 {
		t.Errorf("memory series = %d, want 9", n)
	}
}
