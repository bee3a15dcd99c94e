package e2e

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/soak"
)

// soakPool is the sandbox network of TestSoak's server.
const soakPool = "10.213.243.0/24"

// TestSoak is the short soak CI runs: `paddock bench soak` for 20 s at
// concurrency 4 against a real `paddock serve`. No iteration may fail, and
// nothing of its sandboxes may be left on the server or the host. The
// 5-minute run at concurrency 16 is the README's command; its RSS growth
// is checked there, not here (20 s is too short to tell).
func TestSoak(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	dataDir := newDataDir(t)
	srv := startServe(t, bin, dataDir, freeAddr(t), "--network-pool", soakPool)
	url, token := srv.clientConfig(t, dataDir)
	cli := cliRunner(t, bin, "", append(os.Environ(), "PADDOCK_URL="+url, "PADDOCK_TOKEN="+token))

	out, errOut, code := cli(3*time.Minute, "bench", "soak", "--concurrency", "4", "--duration", "20s", "--warmup", "3s",
		"--max-rss-growth", "0", "--json")
	var r soak.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench soak exited %d without a report: %v\n%s\n%s", code, err, out, errOut)
	}
	t.Logf("soak: %d iterations (%.1f/s), RSS %d → %d bytes (%+.1f%%), fds %d → %d",
		r.Run.Iterations, r.Run.PerSecond, r.Before.RSSBytes, r.After.RSSBytes, r.RSSGrowth*100, r.Before.FDs, r.After.FDs)
	if code != 0 || !r.OK() {
		t.Errorf("bench soak exited %d: failures %v %v, left %v, host leaks %v\n%s", code, r.Warmup.Reasons, r.Run.Reasons, r.Left, r.HostLeaks, errOut)
	}
	if r.Run.Iterations == 0 || !r.Sampled || r.Before.RSSBytes == 0 || r.After.FDs == 0 {
		t.Errorf("a report without figures: %+v", r)
	}
	for _, s := range r.Run.Steps {
		if s.Count == 0 || s.P50 <= 0 || s.P99 < s.P50 {
			t.Errorf("step %s: %+v", s.Name, s)
		}
	}
	srv.stop()
}
