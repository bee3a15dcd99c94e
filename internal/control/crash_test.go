package control

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestRestartRemovesUnclaimedSandboxes: paddock killed between a sandbox's
// create and the activation's record of it left a project sandbox that no
// activation holds; the next Start deletes it and keeps the sandbox of a
// ready activation it re-adopts.
func TestRestartRemovesUnclaimedSandboxes(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "survivor"))
	ready := activateReady(t, e.svc, v.ID)

	v2 := e.create(t, appRequest(t, "provisioning"))
	half := store.Activation{ID: "act-00000000000000bb", ProjectID: v2.ID, TeamID: "team-a", State: string(StateProvisioning)}
	if err := e.store.CreateActivation(ctx, half); err != nil {
		t.Fatal(err)
	}
	orphan, err := e.fs.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", ProjectID: v2.ID})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := e.fs.Create(ctx, sandbox.CreateRequest{TeamID: "team-a"}) // not a project's: not control's
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Close()

	e.start(t)
	live := e.fs.live()
	if slices.Contains(live, orphan.ID) {
		t.Errorf("the crash's project sandbox %s survived the restart", orphan.ID)
	}
	if !slices.Contains(live, ready.SandboxID) || !slices.Contains(live, plain.ID) {
		t.Errorf("restart removed a held sandbox: live %v, want %s and %s", live, ready.SandboxID, plain.ID)
	}
}

// TestRestartSweepsState: what saves and deletes cut short left under
// <data>/state goes at Start; the state a project names stays.
func TestRestartSweepsState(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "saved"))
	a := activateReady(t, e.svc, v.ID)
	e.fs.agentOf(a.SandboxID).writeFile("/home/user/.goose/s.json", []byte("{}"))
	e.deactivate(t, v.ID)
	pr, err := e.store.GetProject(ctx, "", v.ID)
	if err != nil || pr.StateRef == "" {
		t.Fatalf("project after a save: %+v %v", pr, err)
	}
	e.svc.Close()

	dir := filepath.Join(e.dir, "state", v.ID)
	gone := filepath.Join(e.dir, "state", "prj-0000000000000000") // a project deleted before its state
	write := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{
		filepath.Join(dir, ".tmp-123"),                    // a save cut short
		filepath.Join(dir, "act-00000000000000cc.tar.gz"), // renamed, never recorded
		filepath.Join(gone, "act-00000000000000dd.tar.gz"),
	} {
		write(p)
	}
	e.start(t)
	names, _ := os.ReadDir(dir)
	if len(names) != 1 || names[0].Name() != pr.StateRef {
		t.Errorf("state dir after the restart: %v, want only %s", names, pr.StateRef)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("state of a deleted project survived the restart: %v", err)
	}
}
