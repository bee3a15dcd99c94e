package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// TestConcurrentExec: 20 clients exec in 20 sandboxes at once, each for a
// bounded number of rounds and time. No round may fail and no stream may
// hang (every call has a deadline).
func TestConcurrentExec(t *testing.T) {
	const clients, rounds = 20, 15
	s := startStack(t, newDataDir(t), stackOptions{})
	boxes := make([]*sdk.Sandbox, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for i := range boxes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sb, err := s.client.Create(ctx, api.CreateSandboxRequest{Resources: api.Resources{MemoryMB: 128, PIDs: 64}})
			if err != nil {
				errs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			boxes[i] = sb
		})
	}
	wg.Wait()
	if t.Failed() || len(errs) > 0 {
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		t.FailNow()
	}

	deadline := time.Now().Add(90 * time.Second)
	for i, sb := range boxes {
		wg.Go(func() {
			// Each client gets its own SDK client, as separate callers would.
			c := sdk.New(s.http.URL, s.token)
			sb := c.Sandbox(sb.ID)
			for r := 0; r < rounds && time.Now().Before(deadline); r++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				want := fmt.Sprintf("client %d round %d", i, r)
				cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo " + want + "; seq 1 2000 >&2"}, Detached: r%2 == 0})
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: run: %w", i, r, err)
					cancel()
					return
				}
				var stdout, stderr strings.Builder
				var streamErr error
				for l, err := range cmd.Logs(ctx) {
					if err != nil {
						streamErr = err
						break
					}
					if l.Stream == api.StreamStdout {
						stdout.Write(l.Bytes())
					} else {
						stderr.Write(l.Bytes())
					}
				}
				cancel()
				if streamErr != nil {
					errs <- fmt.Errorf("client %d round %d: logs: %w", i, r, streamErr)
					return
				}
				if stdout.String() != want+"\n" || stderr.String() != seq2000 || cmd.ExitCodeOr(-1) != 0 {
					errs <- fmt.Errorf("client %d round %d: exit %d, stdout %q, stderr %d bytes", i, r, cmd.ExitCodeOr(-1), stdout.String(), stderr.Len())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

var seq2000 = func() string {
	var b strings.Builder
	for i := 1; i <= 2000; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}()

// TestRestartReadopts: with 5 sandboxes running, paddock's services stop
// and start again on the same data dir. Four whose agents still answer are
// re-adopted (their running command survives, new commands run, they stop);
// one whose agent died while paddock was down is cleaned up and marked
// failed. Nothing leaks (the data dir's leak check).
func TestRestartReadopts(t *testing.T) {
	dir := newDataDir(t)
	first := startStack(t, dir, stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	var ids []string
	sleepers := map[string]string{}
	for range 5 {
		sb := first.create(t, api.CreateSandboxRequest{})
		cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo started; sleep 300"}, Detached: true})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sb.ID)
		sleepers[sb.ID] = cmd.ID
	}
	first.shutdown(t)

	// The last sandbox's agent dies while paddock is down.
	lost := ids[4]
	out, code := killAgent(t, dir, lost)
	if code != 0 {
		t.Fatalf("kill the agent of %s: %s", lost, out)
	}

	second := startStack(t, dir, stackOptions{})
	for _, id := range ids {
		sb, err := second.client.Get(ctx, id)
		if err != nil {
			t.Fatalf("get %s after restart: %v", id, err)
		}
		if id == lost {
			if sb.Status != api.StatusFailed || !strings.Contains(sb.Error, "lost") {
				t.Errorf("sandbox with a dead agent: %s %q, want failed", sb.Status, sb.Error)
			}
			continue
		}
		if sb.Status != api.StatusRunning {
			t.Fatalf("re-adopted sandbox %s is %s (%s)", id, sb.Status, sb.Error)
		}
		cmd, err := sb.Command(ctx, sleepers[id])
		if err != nil || cmd.Status != api.CommandRunning {
			t.Errorf("the sleeper of %s after restart: %+v, %v", id, cmd, err)
		}
		if out, code := sh(t, sb, "echo still here"); code != 0 || out != "still here\n" {
			t.Errorf("exec in re-adopted %s: %q %d", id, out, code)
		}
		if err := sb.Stop(ctx); err != nil || sb.Status != api.StatusStopped {
			t.Errorf("stop re-adopted %s: %v", id, err)
		}
	}
}

// killAgent SIGKILLs a sandbox's agent from outside, through its cgroup, as
// a crash or an OOM of the host would.
func killAgent(t *testing.T, dataDir, id string) (string, int) {
	t.Helper()
	if !sandbox.ValidID(id) {
		t.Fatalf("bad id %q", id)
	}
	return hostSh(t, fmt.Sprintf(`for p in $(cat /sys/fs/cgroup/pids/paddock/%[1]s/cgroup.procs /sys/fs/cgroup/paddock/%[1]s/cgroup.procs 2>/dev/null); do kill -9 $p; done; sleep 0.2`, id))
}
