package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// pausePool is TestPauseResume's address pool, apart from the others'.
var pausePool = netip.MustParsePrefix("10.213.242.0/24")

// TestPauseResume pauses a networked sandbox, restarts paddock, and
// resumes it: same id, port route and env, the files written before the
// pause there, its processes gone, a fresh timeout, and a second pause
// stacking on the first.
func TestPauseResume(t *testing.T) {
	dir := newDataDir(t)
	s := startStack(t, dir, stackOptions{network: pausePool})
	ctx := ctxFor(t, 3*time.Minute)
	sb := s.create(t, api.CreateSandboxRequest{TimeoutMs: 120_000, Env: map[string]string{"KEPT": "yes"},
		Ports: []api.PortSpec{{Port: 3000}}})
	if out, code := sh(t, sb, "echo before > ~/kept.txt && sleep 1000 >/dev/null 2>&1 &"); code != 0 {
		t.Fatalf("setup: %d %q", code, out)
	}
	routes := sb.Routes
	if err := sb.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if sb.Status != api.StatusPaused || sb.Paused == nil || sb.Paused.Memory || sb.Paused.TimeoutMs != 120_000 {
		t.Fatalf("paused = %s %+v", sb.Status, sb.Paused)
	}
	if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"}); !isStatus(err, 409) {
		t.Errorf("a command in a paused sandbox: %v, want 409", err)
	}

	s.shutdown(t)
	s = startStack(t, dir, stackOptions{network: pausePool})
	sb, err := s.client.Get(ctx, sb.ID)
	if err != nil || sb.Status != api.StatusPaused {
		t.Fatalf("after restart: %+v, %v", sb, err)
	}
	before := time.Now()
	if err := sb.Resume(ctx, 0); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if sb.Status != api.StatusRunning || sb.Paused != nil || sb.ExpiresAt.Before(before.Add(110*time.Second)) {
		t.Errorf("resumed = %s, expires %s", sb.Status, sb.ExpiresAt)
	}
	// The restarted stack listens on another port: the host names agree.
	if len(sb.Routes) != 1 || sb.Routes[0].Subdomain != routes[0].Subdomain {
		t.Errorf("routes %+v, want %+v", sb.Routes, routes)
	}
	check := "cat ~/kept.txt; echo $KEPT; pgrep -x sleep || echo no-sleep"
	if out, code := sh(t, sb, check); code != 0 || out != "before\nyes\nno-sleep\n" {
		t.Errorf("in the resumed sandbox: exit %d %q", code, out)
	}
	if snaps, err := s.client.ListSnapshots(ctx); err != nil || len(snaps) != 0 {
		t.Errorf("snapshots after the resume = %+v, %v; the pause snapshot should be forgotten", snaps, err)
	}

	// Again: the second pause stacks on the first one's layer.
	if out, code := sh(t, sb, "echo second > ~/second.txt"); code != 0 {
		t.Fatalf("write: %q", out)
	}
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Resume(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if out, code := sh(t, sb, "cat ~/kept.txt ~/second.txt"); code != 0 || out != "before\nsecond\n" {
		t.Errorf("after the second resume: exit %d %q", code, out)
	}
}
