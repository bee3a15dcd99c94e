package e2e

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// waitPool waits until the pool holds want idle sandboxes, none in the
// making.
func waitPool(t *testing.T, c *sdk.Client, name string, want int) api.Pool {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		p, err := c.GetPool(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if p.Idle == want && p.Creating == 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %+v, want %d idle", name, p, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pooledIDs are the idle pool sandboxes on the host, which no API shows.
func (s *stack) pooledIDs() []string {
	var ids []string
	for _, sb := range s.mgr.Pooled() {
		ids = append(ids, sb.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestWarmPool: a pool of 3 is refilled after claims; each claimer gets a
// sandbox with its own env, files and owner, which another team cannot
// see; a claimed sandbox never returns to the pool; idle sandboxes are in
// no team's view; the pool and its idle sandboxes survive a restart; only
// the host admin sees and sets pools.
func TestWarmPool(t *testing.T) {
	dir := newDataDir(t)
	s := startStack(t, dir, stackOptions{network: testPool})
	ctx := t.Context()
	team := func(name string) *sdk.Client {
		t.Helper()
		tm, err := s.auth.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := s.auth.CreateToken(ctx, tm.ID, "", name+"-ci", store.RoleAdmin, 0)
		if err != nil {
			t.Fatal(err)
		}
		return sdk.New(s.http.URL, secret)
	}
	a, b := team("alpha"), team("beta")

	// Only the host admin (s.client) sees and sets pools, not even a team
	// admin: the list is forbidden, a named pool not found.
	if _, err := a.ListPools(ctx); !errors.Is(err, sdk.ErrForbidden) {
		t.Errorf("a team lists pools: %v", err)
	}
	if _, err := a.SetPool(ctx, "mine", api.PoolSpec{Min: 1, Max: 1}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("a team sets a pool: %v", err)
	}
	if _, err := s.client.SetPool(ctx, "warm", api.PoolSpec{Image: "no-such-image", Min: 1, Max: 1}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("a pool of a missing image: %v", err)
	}
	p, err := s.client.SetPool(ctx, "warm", api.PoolSpec{Min: 3, Max: 3})
	if err != nil {
		t.Fatal(err)
	}
	if p.Key == "" || p.Target != 3 {
		t.Errorf("set pool: %+v", p)
	}
	waitPool(t, s.client, "warm", 3)
	idleBefore := s.pooledIDs()
	if len(idleBefore) != 3 {
		t.Fatalf("idle sandboxes on the host: %v", idleBefore)
	}

	// Idle sandboxes are nobody's: in no list, not even the host admin's,
	// and not found by id.
	if sbs := listIDs(t, s.client); len(sbs) != 0 {
		t.Errorf("the host admin lists %v with only idle pool sandboxes", sbs)
	}
	if _, err := s.client.Get(ctx, idleBefore[0]); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("the host admin gets an idle pool sandbox: %v", err)
	}

	// Two teams claim, with env of their own.
	sbA, err := a.Create(ctx, api.CreateSandboxRequest{Env: map[string]string{"WHO": "alpha", "ALPHA_SECRET": "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	sbB, err := b.Create(ctx, api.CreateSandboxRequest{Env: map[string]string{"WHO": "beta"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range []*sdk.Sandbox{sbA, sbB} {
		if !sb.Warm || !slices.Contains(idleBefore, sb.ID) {
			t.Errorf("sandbox %s (warm %v) was not claimed from the pool %v", sb.ID, sb.Warm, idleBefore)
		}
	}
	if sbA.ID == sbB.ID || sbA.TeamID == sbB.TeamID || sbA.TeamID == "" {
		t.Fatalf("claims: %s of %q, %s of %q", sbA.ID, sbA.TeamID, sbB.ID, sbB.TeamID)
	}
	// Each has its own env, and files of its own.
	run := func(sb *sdk.Sandbox, script string) string {
		t.Helper()
		cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c", script}})
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.Output(ctx, "both")
		if err != nil || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			t.Fatalf("%s in %s: %q, %v", script, sb.ID, out, err)
		}
		return out
	}
	if _, err := sbA.WriteFiles(ctx, "/tmp", []sdk.File{{Path: "mine.txt", Content: []byte("alpha's")}}); err != nil {
		t.Fatal(err)
	}
	if out := run(sbA, `echo "$WHO $ALPHA_SECRET"; cat /tmp/mine.txt`); out != "alpha s3cret\nalpha's" {
		t.Errorf("alpha's sandbox: %q", out)
	}
	if out := run(sbB, `echo "$WHO ${ALPHA_SECRET:-none}"; ls /tmp`); out != "beta none\n" {
		t.Errorf("beta's sandbox: %q", out)
	}
	// Beta cannot see alpha's claimed sandbox.
	if _, err := b.Get(ctx, sbA.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta gets alpha's sandbox: %v", err)
	}
	if got := listIDs(t, b); len(got) != 1 || got[0] != sbB.ID {
		t.Errorf("beta lists %v", got)
	}

	// Refilled back to 3 with fresh sandboxes; the claimed ones never return.
	p = waitPool(t, s.client, "warm", 3)
	if p.Hits != 2 {
		t.Errorf("hits = %d, want 2", p.Hits)
	}
	idleAfter := s.pooledIDs()
	for _, id := range []string{sbA.ID, sbB.ID} {
		if slices.Contains(idleAfter, id) {
			t.Errorf("claimed sandbox %s is in the pool again: %v", id, idleAfter)
		}
	}
	// Deleting a claimed sandbox does not bring it back either.
	if err := sbA.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(s.pooledIDs(), sbA.ID) {
		t.Error("a deleted claimed sandbox is in the pool")
	}

	// Another key is a cold create, counted as no hit and no miss.
	cold, err := b.Create(ctx, api.CreateSandboxRequest{Resources: api.Resources{MemoryMB: 256}})
	if err != nil {
		t.Fatal(err)
	}
	if cold.Warm {
		t.Error("a request of another key was served warm")
	}

	// A project activation of the same key claims one too: its env in the
	// record, its secrets only in the app's commands.
	waitPool(t, s.client, "warm", 3)
	idleNow := s.pooledIDs()
	proj, err := a.CreateProject(ctx, api.ProjectRequest{Name: "web", Source: api.ProjectSource{Image: "host"},
		Start: "python3 -m http.server 3002", AppPort: 3002, HealthPath: "/",
		Env: map[string]string{"STAGE": "warm"}, Secrets: map[string]string{"API_KEY": "k3y"},
		MaxLifetimeMs: (10 * time.Minute).Milliseconds(), IdleTimeoutMs: (10 * time.Minute).Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	act, err := a.ActivateAndWait(ctx, proj.ID, nil)
	if err != nil || act.State != api.ActivationReady {
		t.Fatalf("activate: %+v, %v", act, err)
	}
	sbP, err := a.Get(ctx, act.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	if !sbP.Warm || !slices.Contains(idleNow, sbP.ID) || sbP.Env["STAGE"] != "warm" || sbP.Env["API_KEY"] != "" {
		t.Errorf("the activation's sandbox: warm %v, id %s (idle %v), env %v", sbP.Warm, sbP.ID, idleNow, sbP.Env)
	}
	if _, err := a.Deactivate(ctx, proj.ID); err != nil {
		t.Fatal(err)
	}
	waitPool(t, s.client, "warm", 3)
	idleAfter = s.pooledIDs()
	if slices.Contains(idleAfter, sbP.ID) {
		t.Errorf("the activation's sandbox %s is back in the pool", sbP.ID)
	}

	// A restart adopts the idle sandboxes and keeps the pool.
	s.shutdown(t)
	s2 := startStack(t, dir, stackOptions{network: testPool})
	p = waitPool(t, s2.client, "warm", 3)
	if got := s2.pooledIDs(); !slices.Equal(got, idleAfter) {
		t.Errorf("idle after the restart %v, want the adopted %v", got, idleAfter)
	}
	if p.Hits != 0 || p.Min != 3 {
		t.Errorf("after the restart: %+v", p)
	}
	if _, err := os.Stat(dir + "/pools.json"); err != nil {
		t.Errorf("pools file: %v", err)
	}
	// Removing the pool deletes its idle sandboxes.
	if err := s2.client.DeletePool(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	if got := s2.pooledIDs(); len(got) != 0 {
		t.Errorf("idle sandboxes of a removed pool: %v", got)
	}
	if pools, err := s2.client.ListPools(ctx); err != nil || len(pools) != 0 {
		t.Errorf("pools after rm: %+v, %v", pools, err)
	}
}

func listIDs(t *testing.T, c *sdk.Client) []string {
	t.Helper()
	var ids []string
	for sb, err := range c.List(t.Context(), sdk.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sb.ID)
	}
	return ids
}
