package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/sdk"
)

// TestReplicaKilledMidActivation runs two `paddock serve` replicas on one
// MongoDB (FerretDB, in this test binary) and kills one with SIGKILL in the
// middle of an activation (right after it is queued, before anything
// else). The other replica, holding the background lease, fails the
// activation with the reason replica_lost once the dead replica's
// liveness lease lapses, exactly once; through its own API, with the
// token the first replica made.
func TestReplicaKilledMidActivation(t *testing.T) {
	requireSandboxes(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go tool to build the binaries")
	}
	bin := buildPaddock(t)
	uri, db := mongotest.URI(t), mongotest.NewDB()
	flags := func(node string) []string {
		// No sandbox networking: the activation dies queued, and two
		// replicas on one host would share its address pool.
		return []string{"--no-network", "--mongodb-uri", uri, "--mongodb-database", db, "--node-name", node,
			"--lease-ttl", "2s", "--lease-renew", "500ms"}
	}

	// Replica a, armed to die once it has queued an activation.
	dirA, addrA := newDataDir(t), freeAddr(t)
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dirA, "--listen", addrA}, flags("node-a")...)...)
	cmd.Env = append(os.Environ(), crashpoint.EnvVar+"=control/activate/queued")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	pa := &armedProc{cmd: cmd, out: &lockedBuffer{}, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = pa.out, pa.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(pa.done) }() // owned: the cleanup below waits for it
	t.Cleanup(func() {
		select {
		case <-pa.done:
		default:
			_ = cmd.Process.Kill()
			<-pa.done
		}
	})
	urlA, token := (&serveProc{out: pa.out, log: pa.log}).clientConfig(t, dirA)
	a := sdk.New(urlA, token)

	// Replica b on the same store; the first replica's token works there.
	dirB, addrB := newDataDir(t), freeAddr(t)
	pb := startServe(t, bin, dirB, addrB, flags("node-b")...)
	urlB := "http://" + addrB
	waitReady(t, urlB, pb)
	b := sdk.New(urlB, token)

	p, err := a.CreateProject(ctxFor(t, time.Minute), api.ProjectRequest{Name: "killed",
		Source: api.ProjectSource{Image: "host"}, Start: "sleep 600"})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	if act, err := a.Activate(ctxFor(t, time.Minute), p.ID); err == nil {
		t.Fatalf("activate answered %s through a crash", act.ID)
	}
	pa.waitKilled(t, "control/activate/queued")
	killed := time.Now()

	// Replica b ends it: the lease lapses 2 s after a's last renewal, and
	// b's sweep runs with its idle checks (every 5 s).
	var act api.Activation
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		list, err := b.ListActivations(ctxFor(t, time.Minute), p.ID, sdk.PageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Activations) != 1 {
			t.Fatalf("activations: %+v", list.Activations)
		}
		act = list.Activations[0]
		if act.State != api.ActivationQueued || time.Now().After(deadline) {
			break
		}
	}
	if act.State != api.ActivationFailed || act.EndReason != control.ReasonReplicaLost || !strings.Contains(act.Error, "node-a") {
		t.Fatalf("the killed replica's activation: %+v\n%s", act, pb.log.String())
	}
	// Bounded by the lease TTL (2 s) plus one sweep period (5 s).
	t.Logf("failed %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(6 * time.Second) // a second sweep would show now
	st := mongotest.Open(t, uri, db)
	evs, err := st.ListEvents(ctxFor(t, time.Minute), store.EventFilter{ActivationID: act.ID})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, e := range evs {
		if e.Type == string(control.StateFailed) {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed events, want 1: %+v", failed, evs)
	}
	p2, err := b.GetProject(ctxFor(t, time.Minute), p.ID)
	if err != nil || p2.Active != nil {
		t.Fatalf("the project after the sweep: %+v %v; want it free", p2, err)
	}

	// Replica a comes back under its name (its lease is its own again at
	// once) and stops cleanly, which takes down what its driver had
	// ready on this host (pool disks).
	ra := startServe(t, bin, dirA, addrA, flags("node-a")...)
	waitReady(t, "http://"+addrA, ra)
	ra.stop()
}

// waitReady waits until the server at url answers /readyz with 200.
func waitReady(t *testing.T, url string, p *serveProc) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready (%v)\n%s", url, err, p.log.String())
		}
	}
}
