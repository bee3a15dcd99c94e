package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestCreateGet(t *testing.T) {
	e := newEnv(t, nil)
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{
		Resources: sandbox.Resources{MemoryMB: 2048},
		Timeout:   10 * time.Minute,
		Env:       map[string]string{"FOO": "bar"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sandbox.ValidID(sb.ID) || len(sb.ID) != len("sb-")+16 || sb.ID[:3] != "sb-" {
		t.Errorf("id %q is not sb- + 16 base32 chars", sb.ID)
	}
	now := e.clock.Now()
	want := sandbox.Resources{VCPUs: 1, MemoryMB: 2048, PIDs: 512}
	switch {
	case sb.State != sandbox.Running:
		t.Errorf("state = %s, want running", sb.State)
	case sb.Image != "host":
		t.Errorf("image = %q, want host", sb.Image)
	case sb.Resources != want:
		t.Errorf("resources = %+v, want %+v", sb.Resources, want)
	case sb.Driver != "fake":
		t.Errorf("driver = %q", sb.Driver)
	case !sb.CreatedAt.Equal(now) || !sb.StartedAt.Equal(now):
		t.Errorf("created %s started %s, want %s", sb.CreatedAt, sb.StartedAt, now)
	case !sb.ExpiresAt.Equal(now.Add(10 * time.Minute)):
		t.Errorf("expiresAt = %s", sb.ExpiresAt)
	}

	// Copies, not shared state.
	sb.Env["FOO"] = "changed"
	got := e.get(t, sb.ID)
	if got.Env["FOO"] != "bar" {
		t.Errorf("Env leaked out of the manager: %v", got.Env)
	}

	// The agent client works.
	c, err := e.m.Agent(t.Context(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := c.Ping(t.Context()); err != nil || info.Version != "fake" {
		t.Errorf("Ping = %+v, %v", info, err)
	}
	if st, err := e.m.Stats(t.Context(), sb.ID); err != nil || st.PIDs != 3 {
		t.Errorf("Stats = %+v, %v", st, err)
	}

	// The record is on disk, without temp files beside it.
	dir := filepath.Join(e.dir, "node", "sandboxes")
	data, err := os.ReadFile(filepath.Join(dir, sb.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var disk sandbox.Sandbox
	if err := json.Unmarshal(data, &disk); err != nil || disk.State != sandbox.Running {
		t.Errorf("record on disk: %+v, %v", disk, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("record dir holds %d files, want 1", len(ents))
	}
}

func TestUnknownIDs(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"sb-aaaaaaaaaaaaaaaa", "", "../etc", "SB-X", "sb/1"} {
		_, err := e.m.Get(t.Context(), id)
		wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
		_, err = e.m.Stop(t.Context(), id)
		wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
		wantErr(t, e.m.Delete(t.Context(), id), sandbox.ErrNotFound, "sandbox_not_found")
		_, err = e.m.ExtendTimeout(t.Context(), id, time.Minute)
		wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
		_, err = e.m.Agent(t.Context(), id)
		wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
		_, err = e.m.Stats(t.Context(), id)
		wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
	}
}

func TestCreateInvalid(t *testing.T) {
	tests := []struct {
		name string
		req  sandbox.CreateRequest
		code string
	}{
		{"too many vcpus", sandbox.CreateRequest{Resources: sandbox.Resources{VCPUs: 5}}, "invalid_resources"},
		{"negative vcpus", sandbox.CreateRequest{Resources: sandbox.Resources{VCPUs: -1}}, "invalid_resources"},
		{"too much memory", sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 8193}}, "invalid_resources"},
		{"too few pids", sandbox.CreateRequest{Resources: sandbox.Resources{PIDs: 2}}, "invalid_resources"},
		{"timeout over max", sandbox.CreateRequest{Timeout: 5*time.Hour + time.Second}, "invalid_timeout"},
		{"negative timeout", sandbox.CreateRequest{Timeout: -time.Second}, "invalid_timeout"},
		{"empty env name", sandbox.CreateRequest{Env: map[string]string{"": "x"}}, "invalid_env"},
		{"env name with =", sandbox.CreateRequest{Env: map[string]string{"A=B": "x"}}, "invalid_env"},
		{"env name with NUL", sandbox.CreateRequest{Env: map[string]string{"A\x00": "x"}}, "invalid_env"},
		{"env value with NUL", sandbox.CreateRequest{Env: map[string]string{"A": "x\x00y"}}, "invalid_env"},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.m.Create(t.Context(), tt.req)
			wantErr(t, err, sandbox.ErrInvalid, tt.code)
		})
	}
	if n := e.d.Count("create"); n != 0 {
		t.Errorf("driver saw %d creates for invalid requests", n)
	}
}

func TestCreateValid(t *testing.T) {
	tests := []struct {
		name string
		req  sandbox.CreateRequest
	}{
		{"all defaults", sandbox.CreateRequest{}},
		{"host image", sandbox.CreateRequest{Image: "host"}},
		{"max resources", sandbox.CreateRequest{Resources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192, PIDs: 4096}}},
		{"max timeout", sandbox.CreateRequest{Timeout: 5 * time.Hour}},
		{"env", sandbox.CreateRequest{Env: map[string]string{"PATH": "/bin", "EMPTY": ""}}},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.m.Create(t.Context(), tt.req); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCreateSurvivesCancelledRequest(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{})
	if err != nil || sb.State != sandbox.Running {
		t.Fatalf("Create with a cancelled request = %s, %v; the driver must not see the cancellation", sb.State, err)
	}
	if sb, err := e.m.Stop(ctx, sb.ID); err != nil || sb.State != sandbox.Stopped {
		t.Fatalf("Stop with a cancelled request = %s, %v", sb.State, err)
	}
}

func TestCreateDriverFailure(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSandboxes = 1 })
	e.d.SetCreateErr(errors.New("no rootfs"))
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	if err == nil {
		t.Fatal("Create succeeded; want the driver's error")
	}
	if sb.State != sandbox.Failed || sb.Error == "" {
		t.Errorf("returned record %+v, want failed with an error", sb)
	}
	got := e.get(t, sb.ID)
	if got.State != sandbox.Failed || got.Error != "create: no rootfs" {
		t.Errorf("Get: state %s error %q", got.State, got.Error)
	}
	if !e.d.Called("destroy", sb.ID) {
		t.Error("driver.Destroy not called after a failed create")
	}
	_, err = e.m.Agent(t.Context(), sb.ID)
	wantErr(t, err, sandbox.ErrNotRunning, "sandbox_not_running")

	// The failed sandbox does not hold the only slot.
	e.d.SetCreateErr(nil)
	e.create(t)
}

func TestCapacity(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSandboxes = 2 })
	a := e.create(t)
	e.create(t)
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	wantErr(t, err, sandbox.ErrExhausted, "capacity")

	if _, err := e.m.Stop(t.Context(), a.ID); err != nil {
		t.Fatal(err)
	}
	c := e.create(t)
	_, err = e.m.Create(t.Context(), sandbox.CreateRequest{})
	wantErr(t, err, sandbox.ErrExhausted, "capacity")
	if err := e.m.Delete(t.Context(), c.ID); err != nil {
		t.Fatal(err)
	}
	e.create(t)
}

// TestCreateParallel shows that creates do not wait for each other while
// the driver works: every create blocks in the driver until all are there.
func TestCreateParallel(t *testing.T) {
	const n = 8
	e := newEnv(t, nil)
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	e.d.SetCreateHook(func(ctx context.Context, id string) error {
		arrived.Done()
		select {
		case <-all:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("creates were serialised")
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestPendingVisibleDuringCreate(t *testing.T) {
	e := newEnv(t, nil)
	inDriver := make(chan string)
	release := make(chan struct{})
	e.d.SetCreateHook(func(ctx context.Context, id string) error {
		inDriver <- id
		<-release
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
		done <- err
	}()
	id := <-inDriver
	if sb := e.get(t, id); sb.State != sandbox.Pending {
		t.Errorf("state during create = %s, want pending", sb.State)
	}
	items, _, err := e.m.List(t.Context(), sandbox.ListOptions{State: sandbox.Pending})
	if err != nil || len(items) != 1 {
		t.Errorf("List pending = %d items, %v", len(items), err)
	}
	_, err = e.m.Agent(t.Context(), id)
	wantErr(t, err, sandbox.ErrNotRunning, "")
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for i := range 7 {
		// Pairs share a CreatedAt, so the ID breaks the tie.
		if i%2 == 0 {
			e.clock.Advance(time.Second)
		}
		ids = append(ids, e.create(t).ID)
	}

	var got []sandbox.Sandbox
	cursor, pages := "", 0
	for {
		items, next, err := e.m.List(t.Context(), sandbox.ListOptions{Cursor: cursor, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, items...)
		if next == "" {
			break
		}
		cursor = next
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if pages != 3 || len(got) != 7 {
		t.Fatalf("got %d items in %d pages, want 7 in 3", len(got), pages)
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if a.CreatedAt.After(b.CreatedAt) || (a.CreatedAt.Equal(b.CreatedAt) && a.ID >= b.ID) {
			t.Errorf("items %d and %d out of order: %s/%s then %s/%s", i-1, i, a.CreatedAt, a.ID, b.CreatedAt, b.ID)
		}
	}
	seen := map[string]bool{}
	for _, sb := range got {
		seen[sb.ID] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("%s missing from the listing", id)
		}
	}

	// A cursor stays valid when its item is deleted.
	first, next, err := e.m.List(t.Context(), sandbox.ListOptions{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete(t.Context(), first[2].ID); err != nil {
		t.Fatal(err)
	}
	rest, _, err := e.m.List(t.Context(), sandbox.ListOptions{Cursor: next, Limit: 10})
	if err != nil || len(rest) != 4 || rest[0].ID != got[3].ID {
		t.Errorf("after deleting the cursor's item: %d items, %v", len(rest), err)
	}

	// State filter.
	if _, err := e.m.Stop(t.Context(), got[0].ID); err != nil {
		t.Fatal(err)
	}
	stopped, next, err := e.m.List(t.Context(), sandbox.ListOptions{State: sandbox.Stopped})
	if err != nil || len(stopped) != 1 || stopped[0].ID != got[0].ID || next != "" {
		t.Errorf("List stopped = %v, %q, %v", stopped, next, err)
	}
	all, _, err := e.m.List(t.Context(), sandbox.ListOptions{})
	if err != nil || len(all) != 6 {
		t.Errorf("List default = %d items, %v", len(all), err)
	}
}

// TestListByTeam: a team's pages hold only its sandboxes, and no cursor
// it is given names another team's sandbox (cursors were once built from
// the unfiltered list, so paging with limit=1 listed every tenant's ids).
func TestListByTeam(t *testing.T) {
	e := newEnv(t, nil)
	teamOf := map[string]string{}
	for i := range 9 {
		team := []string{"team-a", "team-b", "team-b"}[i%3]
		e.clock.Advance(time.Second)
		sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{TeamID: team})
		if err != nil {
			t.Fatal(err)
		}
		teamOf[sb.ID] = team
	}
	cursor, seen := "", 0
	for range 10 {
		items, next, err := e.m.List(t.Context(), sandbox.ListOptions{Cursor: cursor, Limit: 1, TeamID: "team-a"})
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range items {
			if sb.TeamID != "team-a" {
				t.Errorf("team-a's page holds %s of %s", sb.ID, sb.TeamID)
			}
			seen++
		}
		if next == "" {
			break
		}
		c, err := decodeCursor(next)
		if err != nil {
			t.Fatal(err)
		}
		if teamOf[c.id] != "team-a" {
			t.Errorf("team-a's cursor names %s of %s", c.id, teamOf[c.id])
		}
		cursor = next
	}
	if seen != 3 {
		t.Errorf("team-a saw %d sandboxes, want 3", seen)
	}
}

func TestListInvalid(t *testing.T) {
	tests := []struct {
		name string
		opts sandbox.ListOptions
		code string
	}{
		{"cursor not base64", sandbox.ListOptions{Cursor: "!!!"}, "invalid_cursor"},
		{"cursor without colon", sandbox.ListOptions{Cursor: base64.RawURLEncoding.EncodeToString([]byte("12345"))}, "invalid_cursor"},
		{"cursor bad time", sandbox.ListOptions{Cursor: base64.RawURLEncoding.EncodeToString([]byte("x:sb-a"))}, "invalid_cursor"},
		{"cursor bad id", sandbox.ListOptions{Cursor: base64.RawURLEncoding.EncodeToString([]byte("1:../x"))}, "invalid_cursor"},
		{"negative limit", sandbox.ListOptions{Limit: -1}, "invalid_limit"},
		{"unknown state", sandbox.ListOptions{State: "sleeping"}, "invalid_state"},
	}
	e := newEnv(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e.m.List(t.Context(), tt.opts)
			wantErr(t, err, sandbox.ErrInvalid, tt.code)
		})
	}
}

// TestListLimitClamped runs over an in-memory record store: 501 fsynced
// files would only make it slow, and it shows the store is swappable.
func TestListLimitClamped(t *testing.T) {
	cfg := Config{
		DataDir:      t.TempDir(),
		Driver:       fake.NewDriver(t, fake.DriverConfig{}),
		MaxSandboxes: 600,
		Logger:       discardLogger(),
	}
	cfg.setDefaults()
	m, err := newManager(cfg, newMemStore())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for range 501 {
		if _, err := m.Create(t.Context(), sandbox.CreateRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	items, next, err := m.List(t.Context(), sandbox.ListOptions{Limit: 1000})
	if err != nil || len(items) != 500 || next == "" {
		t.Fatalf("List(limit 1000) = %d items, next %q, %v; want 500 and a cursor", len(items), next, err)
	}
	items, _, err = m.List(t.Context(), sandbox.ListOptions{})
	if err != nil || len(items) != 50 {
		t.Fatalf("List(default) = %d items, %v; want 50", len(items), err)
	}
}

func TestStopAndTransitions(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create(t)
	e.clock.Advance(time.Minute)

	stopped, err := e.m.Stop(t.Context(), sb.ID)
	if err != nil || stopped.State != sandbox.Stopped || !stopped.StoppedAt.Equal(e.clock.Now()) {
		t.Fatalf("Stop = %+v, %v", stopped, err)
	}
	if running, _ := e.d.Running(sb.ID); running {
		t.Error("driver still runs the stopped sandbox")
	}
	again, err := e.m.Stop(t.Context(), sb.ID)
	if err != nil || again.State != sandbox.Stopped {
		t.Errorf("second Stop = %s, %v; want the stopped record", again.State, err)
	}
	if n := e.d.Count("stop"); n != 1 {
		t.Errorf("driver.Stop called %d times, want 1", n)
	}

	_, err = e.m.ExtendTimeout(t.Context(), sb.ID, time.Minute)
	wantErr(t, err, sandbox.ErrNotRunning, "sandbox_not_running")
	wantErr(t, err, sandbox.ErrConflict, "")
	_, err = e.m.Agent(t.Context(), sb.ID)
	wantErr(t, err, sandbox.ErrNotRunning, "sandbox_not_running")
	_, err = e.m.Stats(t.Context(), sb.ID)
	wantErr(t, err, sandbox.ErrNotRunning, "sandbox_not_running")

	// An illegal move through the manager's one transition helper.
	ent, _ := e.m.lookup(t.Context(), sb.ID)
	ent.op.Lock()
	_, err = e.m.transition(ent, sandbox.Running, nil, nil)
	ent.op.Unlock()
	var te *sandbox.TransitionError
	if !errors.As(err, &te) || te.From != sandbox.Stopped || te.To != sandbox.Running {
		t.Errorf("stopped → running = %v, want a TransitionError", err)
	}
	wantErr(t, err, sandbox.ErrConflict, "")
	if got := e.get(t, sb.ID); got.State != sandbox.Stopped {
		t.Errorf("an illegal move changed the state to %s", got.State)
	}
}

func TestStopDriverFailure(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create(t)
	e.d.SetStopErr(errors.New("cgroup busy"))
	got, err := e.m.Stop(t.Context(), sb.ID)
	if err == nil || got.State != sandbox.Failed || got.Error != "stop: cgroup busy" {
		t.Fatalf("Stop with a failing driver = %s %q, %v", got.State, got.Error, err)
	}
	// Stopping a failed sandbox is fine too.
	if got, err := e.m.Stop(t.Context(), sb.ID); err != nil || got.State != sandbox.Failed {
		t.Errorf("Stop of a failed sandbox = %s, %v", got.State, err)
	}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name string
		prep func(t *testing.T, e *env, id string)
	}{
		{"running", func(t *testing.T, e *env, id string) {}},
		{"stopped", func(t *testing.T, e *env, id string) {
			if _, err := e.m.Stop(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			sb := e.create(t)
			tt.prep(t, e, sb.ID)
			if err := e.m.Delete(t.Context(), sb.ID); err != nil {
				t.Fatal(err)
			}
			if !e.d.Called("destroy", sb.ID) {
				t.Error("driver.Destroy not called")
			}
			if _, known := e.d.Running(sb.ID); known {
				t.Error("driver still knows the sandbox")
			}
			_, err := e.m.Get(t.Context(), sb.ID)
			wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
			wantErr(t, e.m.Delete(t.Context(), sb.ID), sandbox.ErrNotFound, "sandbox_not_found")
			if _, err := os.Stat(filepath.Join(e.dir, "node", "sandboxes", sb.ID+".json")); !os.IsNotExist(err) {
				t.Errorf("record file still there: %v", err)
			}
		})
	}
}

func TestDeleteDriverFailure(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSandboxes = 1 })
	sb := e.create(t)
	e.d.SetDestroyErr(errors.New("busy mount"))
	if err := e.m.Delete(t.Context(), sb.ID); err == nil {
		t.Fatal("Delete succeeded with a failing driver")
	}
	// The record stays, truthfully failed, and its slot is free.
	if got := e.get(t, sb.ID); got.State != sandbox.Failed || got.Error != "destroy: busy mount" {
		t.Errorf("after a failed Delete: %s %q", got.State, got.Error)
	}
	e.d.SetDestroyErr(nil)
	if err := e.m.Delete(t.Context(), sb.ID); err != nil {
		t.Fatalf("retried Delete: %v", err)
	}
	e.create(t)
}

func TestTimeoutExpiry(t *testing.T) {
	e := newEnv(t, nil)
	short, err := e.m.Create(t.Context(), sandbox.CreateRequest{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	long := e.create(t) // default 5m

	e.clock.Advance(59 * time.Second)
	e.m.checkTimeouts(t.Context())
	if got := e.get(t, short.ID); got.State != sandbox.Running {
		t.Fatalf("stopped before its deadline: %s", got.State)
	}

	e.clock.Advance(time.Second)
	e.m.checkTimeouts(t.Context())
	got := e.get(t, short.ID)
	if got.State != sandbox.Stopped || got.Error != "" {
		t.Errorf("at its deadline: state %s error %q, want stopped without error", got.State, got.Error)
	}
	if !e.d.Called("stop", short.ID) {
		t.Error("driver.Stop not called on timeout")
	}
	if got := e.get(t, long.ID); got.State != sandbox.Running {
		t.Errorf("the other sandbox is %s", got.State)
	}

	e.clock.Advance(5 * time.Minute)
	e.m.checkTimeouts(t.Context())
	if got := e.get(t, long.ID); got.State != sandbox.Stopped {
		t.Errorf("after 5m: %s", got.State)
	}
}

// TestTimeoutRealTimer checks the production path: the loop's own timer
// stops a sandbox with no test calling checkTimeouts.
func TestTimeoutRealTimer(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Now = time.Now })
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if e.get(t, sb.ID).State == sandbox.Stopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("sandbox still %s after its timeout", e.get(t, sb.ID).State)
}

func TestExtendTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxTimeout = time.Hour })
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		by      time.Duration
		code    string
		kind    error
		expires time.Duration // after CreatedAt, when it succeeds
	}{
		{"zero", 0, "invalid_timeout", sandbox.ErrInvalid, 0},
		{"negative", -time.Minute, "invalid_timeout", sandbox.ErrInvalid, 0},
		{"within max", 20 * time.Minute, "", nil, 30 * time.Minute},
		{"up to max", 30 * time.Minute, "", nil, time.Hour},
		{"past max", time.Second, "timeout_exceeds_max", sandbox.ErrInvalid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.get(t, sb.ID)
			got, err := e.m.ExtendTimeout(t.Context(), sb.ID, tt.by)
			if tt.kind != nil {
				wantErr(t, err, tt.kind, tt.code)
				if after := e.get(t, sb.ID); !after.ExpiresAt.Equal(before.ExpiresAt) {
					t.Errorf("a refused extension moved ExpiresAt to %s", after.ExpiresAt)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := sb.CreatedAt.Add(tt.expires); !got.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %s, want %s", got.ExpiresAt, want)
			}
		})
	}

	// The extension is what the timeout enforcement sees.
	e.clock.Advance(59 * time.Minute)
	e.m.checkTimeouts(t.Context())
	if got := e.get(t, sb.ID); got.State != sandbox.Running {
		t.Fatalf("stopped before its extended deadline: %s", got.State)
	}
	e.clock.Advance(time.Minute)
	e.m.checkTimeouts(t.Context())
	if got := e.get(t, sb.ID); got.State != sandbox.Stopped {
		t.Fatalf("not stopped at its extended deadline: %s", got.State)
	}
}

// TestConcurrentOps races Stop, Delete, Extend and reads on the same
// sandboxes; run it with -race. Every call must end in success or in an
// error of an expected kind, and every sandbox must end deleted.
func TestConcurrentOps(t *testing.T) {
	e := newEnv(t, nil)
	const n = 10
	var ids []string
	for range n {
		ids = append(ids, e.create(t).ID)
	}
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, sandbox.ErrConflict)
	}
	errs := make(chan error, n*64)
	var wg sync.WaitGroup
	for _, id := range ids {
		for range 3 {
			wg.Go(func() { _, err := e.m.Stop(t.Context(), id); errs <- err })
			wg.Go(func() { errs <- e.m.Delete(t.Context(), id) })
			wg.Go(func() { _, err := e.m.ExtendTimeout(t.Context(), id, time.Minute); errs <- err })
			wg.Go(func() { _, err := e.m.Get(t.Context(), id); errs <- err })
			wg.Go(func() { _, err := e.m.Agent(t.Context(), id); errs <- err })
			wg.Go(func() { _, _, err := e.m.List(t.Context(), sandbox.ListOptions{}); errs <- err })
			wg.Go(func() { e.m.checkTimeouts(t.Context()); errs <- nil })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !allowed(err) {
			t.Errorf("unexpected error: %v", err)
		}
	}
	for _, id := range ids {
		_, err := e.m.Get(t.Context(), id)
		wantErr(t, err, sandbox.ErrNotFound, "")
		if _, known := e.d.Running(id); known {
			t.Errorf("%s left in the driver", id)
		}
	}
	// Every slot is free again.
	e.m.mu.Lock()
	active, deadlines := len(e.m.active), len(e.m.deadlines)
	e.m.mu.Unlock()
	if active != 0 || deadlines != 0 {
		t.Errorf("indexes not empty: %d active, %d deadlines", active, deadlines)
	}
}

func TestConfig(t *testing.T) {
	d := fake.NewDriver(t, fake.DriverConfig{})
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{DataDir: t.TempDir(), Driver: d}, true},
		{"small max clamps defaults", Config{DataDir: t.TempDir(), Driver: d, MaxResources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 256, PIDs: 64}}, true},
		{"no data dir", Config{Driver: d}, false},
		{"no driver", Config{DataDir: t.TempDir()}, false},
		{"default over max timeout", Config{DataDir: t.TempDir(), Driver: d, DefaultTimeout: time.Hour, MaxTimeout: time.Minute}, false},
		{"negative max sandboxes", Config{DataDir: t.TempDir(), Driver: d, MaxSandboxes: -1}, false},
		{"default resources over max", Config{DataDir: t.TempDir(), Driver: d, DefaultResources: sandbox.Resources{MemoryMB: 1 << 20}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = discardLogger()
			m, err := New(tt.cfg)
			if tt.ok != (err == nil) {
				t.Fatalf("New = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				wantErr(t, err, sandbox.ErrInvalid, "invalid_config")
				return
			}
			defer m.Close()
			if m.cfg.DefaultTimeout != 5*time.Minute || m.cfg.MaxTimeout != 5*time.Hour || m.cfg.MaxSandboxes != 64 {
				t.Errorf("defaults: %+v", m.cfg)
			}
		})
	}
}

func TestStartTwiceAndClose(t *testing.T) {
	e := newEnv(t, nil)
	wantErr(t, e.m.Start(t.Context()), sandbox.ErrConflict, "node_started")
	sb := e.create(t)
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if running, _ := e.d.Running(sb.ID); !running {
		t.Error("Close stopped a sandbox; they must keep running")
	}
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	wantErr(t, err, sandbox.ErrUnavailable, "node_closed")
}

// TestReady: the manager is ready between a finished Start and Close.
func TestReady(t *testing.T) {
	e := newEnv(t, nil)
	m, err := New(Config{DataDir: t.TempDir(), Driver: e.d, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.Ready(), sandbox.ErrUnavailable, "node_starting")
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err != nil {
		t.Fatalf("started: %v", err)
	}
	m.Close()
	wantErr(t, m.Ready(), sandbox.ErrUnavailable, "node_closed")
}
