package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/runtime/gvisor"
	"github.com/paddock-dev/paddock/internal/store"
)

// requireGVisor skips the test when runsc is not on this host.
func requireGVisor(t *testing.T) {
	t.Helper()
	if _, err := gvisor.Find(); err != nil {
		t.Skip("the gvisor runtime cannot run here: " + err.Error())
	}
}

// underGVisor prints which kernel answers: under gVisor /proc/version is
// the sentry's ("Linux version 4.19.0-gvisor ..."), not the host's.
const underGVisor = "cat /proc/version"

// isGVisor reports whether underGVisor's output is gVisor's.
func isGVisor(out string) bool { return strings.Contains(out, "-gvisor") }

// TestGVisorRuntime: a sandbox created with runtime gvisor runs under
// gVisor (and a default one does not), is re-adopted by the gVisor driver
// after a paddock restart, and a project whose runtime is gvisor gets its
// activations' sandboxes there.
func TestGVisorRuntime(t *testing.T) {
	requireSandboxes(t)
	requireGVisor(t)
	ps := &projStack{opts: stackOptions{network: testPool,
		// Until the gVisor driver caps disks, the hosts' default cap would
		// refuse every gVisor create (sandbox_disk_unsupported).
		config:  func(c *daemon.Config) { c.SandboxDiskMB = 0 },
		control: func(c *control.Config) { c.IdleCheckInterval, c.StopGrace = 200*time.Millisecond, 3*time.Second }},
		tokens: map[string]string{}}
	ps.start(t, newDataDir(t))
	ctx := ctxFor(t, 5*time.Minute)
	if err := ps.store.CreateTeam(ctx, store.Team{ID: projTeam.TeamID, Name: projTeam.TeamID}); err != nil {
		t.Fatal(err)
	}

	rts, err := ps.client.Runtimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rts {
		if r.Name == "gvisor" && !r.Available {
			t.Fatalf("runsc is here but the runtime is unavailable: %s", r.Reason)
		}
	}

	gv := ps.create(t, api.CreateSandboxRequest{Runtime: "gvisor"})
	if gv.Runtime != "gvisor" {
		t.Fatalf("runtime = %q, want gvisor", gv.Runtime)
	}
	out, code := sh(t, gv, underGVisor)
	if code != 0 || !isGVisor(out) {
		t.Fatalf("gvisor sandbox: exit %d, output %q: not gVisor's kernel", code, out)
	}
	plain := ps.create(t, api.CreateSandboxRequest{})
	if out, _ := sh(t, plain, underGVisor); plain.Runtime != "runc" || isGVisor(out) {
		t.Errorf("default sandbox (runtime %q) answers %q", plain.Runtime, out)
	}

	// A restart re-adopts it through the gVisor driver: the same kernel
	// answers the next command.
	ps.restart(t)
	again, err := ps.client.Get(ctx, gv.ID)
	if err != nil || again.Status != api.StatusRunning || again.Runtime != "gvisor" {
		t.Fatalf("after restart: %+v, %v", again.Sandbox, err)
	}
	if out, code := sh(t, again, underGVisor); code != 0 || !isGVisor(out) {
		t.Fatalf("after restart: exit %d, output %q", code, out)
	}
	for _, id := range []string{gv.ID, plain.ID} {
		if err := ps.client.Sandbox(id).Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// A project's runtime: its activation's sandbox runs under gVisor.
	v, err := ps.svc.CreateProject(ctx, projTeam, control.ProjectRequest{Name: "gv", Source: control.Source{Image: "host"},
		HealthPath: "/", MaxLifetime: e2eLifetime, Start: "exec python3 -m http.server 3001 --bind 0.0.0.0", Runtime: "gvisor"})
	if err != nil {
		t.Fatal(err)
	}
	a := ps.mustReady(t, v.ID)
	sb, err := ps.client.Get(ctx, a.SandboxID)
	if err != nil || sb.Runtime != "gvisor" {
		t.Fatalf("activation's sandbox: %+v, %v; want runtime gvisor", sb, err)
	}
	if out, code := sh(t, sb, underGVisor); code != 0 || !isGVisor(out) {
		t.Errorf("activation's sandbox: exit %d, output %q", code, out)
	}
	if _, err := ps.svc.Deactivate(ctx, projTeam, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	ps.noSandboxes(t)
}
