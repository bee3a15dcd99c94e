package node

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// pauseEnv is a manager whose driver can snapshot, over a real image store.
func pauseEnv(t *testing.T, mod func(*Config)) (*env, *image.Store) {
	t.Helper()
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Images = store
		c.Driver = snapDriver{c.Driver.(*fake.Driver)}
		if mod != nil {
			mod(c)
		}
	})
	return e, store
}

// TestPauseResume: a pause keeps the sandbox's identity and filesystem and
// stops its clock; resume runs it again under the same id from the pause
// snapshot, with the timeout it had, and forgets the snapshot.
func TestPauseResume(t *testing.T) {
	e, store := pauseEnv(t, func(c *Config) { c.MaxSandboxes = 1 })
	ctx := t.Context()
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{Timeout: 10 * time.Minute, Env: map[string]string{"K": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	paused, err := e.m.Pause(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if paused.State != sandbox.Paused || paused.Pause == nil || paused.Pause.Memory || paused.Pause.Timeout != 10*time.Minute || !paused.ExpiresAt.IsZero() {
		t.Fatalf("paused = %+v, pause %+v", paused, paused.Pause)
	}
	if running, known := e.d.Running(sb.ID); running || known {
		t.Errorf("the driver still has the paused sandbox (running %v, known %v)", running, known)
	}
	snap, err := store.GetSnapshot(paused.Pause.Snapshot)
	if err != nil || snap.Source != sb.ID {
		t.Fatalf("pause snapshot: %+v, %v", snap, err)
	}
	if !e.m.SnapshotInUse(snap.ID) {
		t.Error("a paused sandbox's snapshot can be deleted from under it")
	}
	if again, err := e.m.Pause(ctx, sb.ID); err != nil || again.Pause.Snapshot != snap.ID {
		t.Errorf("pausing again = %+v, %v; want it unchanged", again.Pause, err)
	}
	// The clock is stopped: no timeout fires, and the slot is free.
	e.clock.Advance(time.Hour)
	e.m.checkTimeouts(ctx)
	other := e.create(t)
	_, err = e.m.Resume(ctx, sb.ID, 0)
	wantErr(t, err, sandbox.ErrExhausted, "capacity")
	if got := e.get(t, sb.ID); got.State != sandbox.Paused {
		t.Fatalf("a refused resume left it %s", got.State)
	}
	if err := e.m.Delete(ctx, other.ID); err != nil {
		t.Fatal(err)
	}

	resumed, err := e.m.Resume(ctx, sb.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now().UTC()
	if resumed.State != sandbox.Running || resumed.ID != sb.ID || resumed.Pause != nil || resumed.Env["K"] != "v" ||
		!resumed.ExpiresAt.Equal(now.Add(10*time.Minute)) {
		t.Errorf("resumed = %+v", resumed)
	}
	spec := e.d.Spec(sb.ID)
	if spec.Rootfs == nil || len(spec.Rootfs.Lowers) != 1 || spec.Rootfs.Lowers[0] != snap.Layers[0] {
		t.Errorf("resumed on rootfs %+v, want the pause snapshot's layer", spec.Rootfs)
	}
	if _, err := store.GetSnapshot(snap.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the pause snapshot is still listed after the resume: %v", err)
	}
	if !e.m.LayerInUse(snap.Layers[0]) {
		t.Error("the resumed sandbox does not hold its layer")
	}
	if again, err := e.m.Resume(ctx, sb.ID, 0); err != nil || again.State != sandbox.Running {
		t.Errorf("resuming a running sandbox = %s, %v", again.State, err)
	}
	// A second pause stacks on the first one's layer.
	if _, err := e.m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	resumed, err = e.m.Resume(ctx, sb.ID, time.Minute)
	if err != nil || !resumed.ExpiresAt.Equal(e.clock.Now().UTC().Add(time.Minute)) {
		t.Errorf("resume with a timeout = %+v, %v", resumed, err)
	}
}

// TestResumeFails: a resume the driver refuses leaves the sandbox paused
// with the reason, and a later one succeeds.
func TestResumeFails(t *testing.T) {
	e, _ := pauseEnv(t, nil)
	ctx := t.Context()
	sb := e.create(t)
	if _, err := e.m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	e.d.SetCreateErr(errors.New("no room"))
	got, err := e.m.Resume(ctx, sb.ID, 0)
	if err == nil || got.State != sandbox.Paused || got.Error == "" || got.Pause == nil {
		t.Fatalf("failed resume = %s %q, %v", got.State, got.Error, err)
	}
	e.d.SetCreateErr(nil)
	if got, err := e.m.Resume(ctx, sb.ID, 0); err != nil || got.State != sandbox.Running || got.Error != "" {
		t.Errorf("resume after the failure = %s %q, %v", got.State, got.Error, err)
	}
}

// TestPausedEnds: stopping a paused sandbox leaves its snapshot as an
// ordinary one; deleting it deletes the snapshot too; neither is resumable.
func TestPausedEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		end      func(m *Manager, id string) error
		keepSnap bool
	}{
		{"stop", func(m *Manager, id string) error { _, err := m.Stop(t.Context(), id); return err }, true},
		{"delete", func(m *Manager, id string) error { return m.Delete(t.Context(), id) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, store := pauseEnv(t, nil)
			sb := e.create(t)
			paused, err := e.m.Pause(t.Context(), sb.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.end(e.m, sb.ID); err != nil {
				t.Fatal(err)
			}
			_, err = store.GetSnapshot(paused.Pause.Snapshot)
			if (err == nil) != tc.keepSnap {
				t.Errorf("snapshot after %s: %v, want kept=%v", tc.name, err, tc.keepSnap)
			}
			_, err = e.m.Resume(t.Context(), sb.ID, 0)
			if tc.keepSnap {
				wantErr(t, err, sandbox.ErrConflict, "sandbox_not_paused")
			} else {
				wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
			}
		})
	}
}

// TestPauseSurvivesRestart: a paused sandbox is still paused, and
// resumable, after the manager restarts; one caught mid-pause ends paused.
func TestPauseSurvivesRestart(t *testing.T) {
	e, store := pauseEnv(t, nil)
	ctx := t.Context()
	sb := e.create(t)
	if _, err := e.m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	mid := e.create(t)
	m := e.m
	// mid as a crash left it: stopping with a whole snapshot recorded.
	snap, err := m.Snapshot(ctx, mid.ID)
	if err != nil {
		t.Fatal(err)
	}
	ent, _ := m.lookup(t.Context(), mid.ID)
	ent.op.Lock()
	_, err = m.transition(ent, sandbox.Stopping, nil, func(sb *sandbox.Sandbox) { sb.Pause = &sandbox.Pause{Snapshot: snap.ID, Timeout: time.Minute} })
	ent.op.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m2 := e.manager(t, func(c *Config) { c.Images = store; c.Driver = snapDriver{e.d} })
	for _, id := range []string{sb.ID, mid.ID} {
		got, err := m2.Get(ctx, id)
		if err != nil || got.State != sandbox.Paused || got.Pause == nil {
			t.Errorf("%s after restart: %s %+v, %v", id, got.State, got.Pause, err)
		}
		if _, known := e.d.Running(id); known {
			t.Errorf("%s: the driver still has it", id)
		}
		if got, err := m2.Resume(ctx, id, 0); err != nil || got.State != sandbox.Running {
			t.Errorf("resume %s after restart = %s, %v", id, got.State, err)
		}
	}
}

// TestSetTimeout: a running sandbox's end moves either way from now,
// within the maximum lifetime from its start.
func TestSetTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxTimeout = time.Hour })
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	for _, tc := range []struct {
		name string
		d    time.Duration
		kind error
	}{
		{"later", 30 * time.Minute, nil},
		{"earlier", time.Minute, nil},
		{"up to the max", 59 * time.Minute, nil},
		{"past the max", 59*time.Minute + time.Second, sandbox.ErrInvalid},
		{"zero", 0, sandbox.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.m.SetTimeout(t.Context(), sb.ID, tc.d)
			if tc.kind != nil {
				wantErr(t, err, tc.kind, "")
				return
			}
			if err != nil || !got.ExpiresAt.Equal(e.clock.Now().UTC().Add(tc.d)) {
				t.Errorf("SetTimeout(%s) = %s, %v", tc.d, got.ExpiresAt, err)
			}
		})
	}
}
