package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/deathsig"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// meteringPool is the metering tests' sandbox network pool.
var meteringPool = netip.MustParsePrefix("10.213.244.0/24")

// usageInterval is the tests' sampling interval: short, so that samples
// are written while sandboxes run.
const usageInterval = 500 * time.Millisecond

// meteredStack is a stack with opts (its network and config set here)
// that samples usage every usageInterval at prices.
func meteredStack(t *testing.T, dir string, prices metering.Prices, opts stackOptions) *stack {
	t.Helper()
	opts.network = meteringPool
	opts.config = func(c *daemon.Config) {
		c.UsageInterval = usageInterval
		c.Prices = prices
	}
	return startStack(t, dir, opts)
}

// teamClient makes a team with a member token and returns its client.
func teamClient(t *testing.T, s *stack, name string) (*sdk.Client, string, string) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	team, err := s.auth.CreateTeam(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	sec, _, err := s.auth.CreateToken(ctx, team.ID, "", name+"-ci", store.RoleMember, 0)
	if err != nil {
		t.Fatal(err)
	}
	return sdk.New(s.http.URL, sec), sec, team.ID
}

// burnScript spins one CPU until the process has had the given seconds of
// CPU time (however long that takes on a busy host) and prints the CPU
// time it was given, as the kernel counts it.
func burnScript(seconds float64) string {
	return fmt.Sprintf("import time\nwhile time.process_time() < %g: pass\nprint(time.process_time())", seconds)
}

// burn runs burnScript in sb and returns the CPU seconds it reported.
func burn(t *testing.T, sb *sdk.Sandbox, seconds float64) float64 {
	t.Helper()
	out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "python3", Args: []string{"-c", burnScript(seconds)}})
	if code != 0 {
		t.Fatalf("burn: exit %d: %s", code, errOut)
	}
	cpu, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("burn printed %q", out)
	}
	return cpu
}

// sandboxUsage sums every row of one sandbox's usage.
func sandboxUsage(t *testing.T, c *sdk.Client, id string) api.Usage {
	t.Helper()
	list, err := c.AllUsage(ctxFor(t, 30*time.Second), sdk.UsageQuery{SandboxID: id, Granularity: "hour"})
	if err != nil {
		t.Fatal(err)
	}
	var sum api.Usage
	for _, u := range list.Usage {
		sum.CPUSeconds += u.CPUSeconds
		sum.MemoryGBHours += u.MemoryGBHours
		sum.NetRxBytes += u.NetRxBytes
		sum.NetTxBytes += u.NetTxBytes
		sum.Creations += u.Creations
		sum.MemoryPeakBytes = max(sum.MemoryPeakBytes, u.MemoryPeakBytes)
		sum.Cost.Total += u.Cost.Total
	}
	return sum
}

// waitSampled waits until the sampler has booked a sandbox's usage past
// since (two intervals, and a little).
func waitSampled() { time.Sleep(2*usageInterval + 200*time.Millisecond) }

// within reports whether got is within frac of want.
func within(got, want, frac float64) bool { return math.Abs(got-want) <= frac*want }

// TestMeteringCPUAcrossRestart: a sandbox burning one CPU for 2 s reports
// its CPU time within 10% while it still runs (sampled, not only at the
// stop), an idle one about zero; a restart of paddock between two burns
// neither loses nor double-counts: after the stop the sandbox's CPU is
// both burns' and its provisioned memory covers exactly its run.
func TestMeteringCPUAcrossRestart(t *testing.T) {
	dir := newDataDir(t)
	first := meteredStack(t, dir, metering.Prices{CPUSecond: 1}, stackOptions{})
	ctx := ctxFor(t, 3*time.Minute)
	alpha, tokA, _ := teamClient(t, first, "alpha")
	busy, err := alpha.Create(ctx, api.CreateSandboxRequest{Resources: api.Resources{VCPUs: 1, MemoryMB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	idle, err := alpha.Create(ctx, api.CreateSandboxRequest{Resources: api.Resources{VCPUs: 1, MemoryMB: 512}})
	if err != nil {
		t.Fatal(err)
	}

	cpu1 := burn(t, busy, 2)
	waitSampled()
	running := sandboxUsage(t, alpha, busy.ID)
	t.Logf("after a 2 s burn: the burn reported %.3f CPU s, the meter %.3f (running)", cpu1, running.CPUSeconds)
	if !within(running.CPUSeconds, cpu1, 0.10) {
		t.Errorf("metered %.3f CPU s while running, the burn itself %.3f: want within 10%%", running.CPUSeconds, cpu1)
	}
	if !within(running.CPUSeconds, 2, 0.10) {
		t.Errorf("metered %.3f CPU s for a 2 s burn, want 2 ± 10%%", running.CPUSeconds)
	}
	if running.Creations != 1 {
		t.Errorf("creations = %d, want 1", running.Creations)
	}

	// Restart mid-run: the sandboxes keep running, the next stack re-adopts
	// them and its meter continues their chains.
	first.shutdown(t)
	time.Sleep(usageInterval) // some of the run passes with nobody metering
	second := meteredStack(t, dir, metering.Prices{CPUSecond: 1}, stackOptions{})
	alpha = sdk.New(second.http.URL, tokA)
	if busy, err = alpha.Get(ctx, busy.ID); err != nil {
		t.Fatal(err)
	}
	if idle, err = alpha.Get(ctx, idle.ID); err != nil {
		t.Fatal(err)
	}
	cpu2 := burn(t, busy, 1)
	waitSampled()
	if err := busy.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := idle.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if busy, err = alpha.Get(ctx, busy.ID); err != nil {
		t.Fatal(err)
	}
	if idle, err = alpha.Get(ctx, idle.ID); err != nil {
		t.Fatal(err)
	}
	total := sandboxUsage(t, alpha, busy.ID)
	idleUse := sandboxUsage(t, alpha, idle.ID)
	run := busy.StoppedAt.Sub(busy.StartedAt)
	wantGBh := 0.5 * run.Hours()
	t.Logf("busy: burns %.3f + %.3f CPU s, metered %.3f; %.6f GB·h over %s (want %.6f); idle: %.3f CPU s, %.6f GB·h",
		cpu1, cpu2, total.CPUSeconds, total.MemoryGBHours, run, wantGBh, idleUse.CPUSeconds, idleUse.MemoryGBHours)
	if !within(total.CPUSeconds, cpu1+cpu2, 0.10) {
		t.Errorf("metered %.3f CPU s after the restart, the burns %.3f: want within 10%%", total.CPUSeconds, cpu1+cpu2)
	}
	// Provisioned memory: every millisecond of the run booked once, the
	// restart's gap included (samples are cut to the millisecond).
	if math.Abs(total.MemoryGBHours-wantGBh) > 0.5*(10*time.Millisecond).Hours() {
		t.Errorf("metered %.6f GB·h for %s at 512 MB, want %.6f", total.MemoryGBHours, run, wantGBh)
	}
	if total.Creations != 1 || total.Cost.Total < total.CPUSeconds*0.999 {
		t.Errorf("creations %d, cost %.4f; want 1 and the CPU seconds' price", total.Creations, total.Cost.Total)
	}
	// About zero: its agent's start and answers, well under a tenth of the burn.
	if idleUse.CPUSeconds > 0.2 {
		t.Errorf("an idle sandbox metered %.3f CPU s, want about 0", idleUse.CPUSeconds)
	}

	// Team scoping: a second team sees nothing of alpha's.
	beta, _, _ := teamClient(t, second, "beta")
	if list, err := beta.AllUsage(ctx, sdk.UsageQuery{}); err != nil || len(list.Usage) != 0 {
		t.Errorf("beta's usage = %+v, %v; want none", list, err)
	}
	if list, err := beta.AllUsage(ctx, sdk.UsageQuery{SandboxID: busy.ID}); err != nil || len(list.Usage) != 0 {
		t.Errorf("beta asking for alpha's sandbox = %+v, %v; want none", list, err)
	}
}

// TestMeteringNetwork: a known download from a sandbox (host to its veth,
// no traffic leaves the machine) is metered as its egress within 5%.
func TestMeteringNetwork(t *testing.T) { testMeteringNetwork(t, stackOptions{}) }

// TestMeteringNetworkKubernetes: the same download from a Pod (host to
// the Pod IP), whose bytes its agent reads from the Pod's interfaces.
func TestMeteringNetworkKubernetes(t *testing.T) { testMeteringNetwork(t, onKubernetes(t)) }

func testMeteringNetwork(t *testing.T, opts stackOptions) {
	s := meteredStack(t, newDataDir(t), metering.Prices{NetworkEgressGB: 1}, opts)
	ctx := ctxFor(t, 2*time.Minute)
	alpha, _, _ := teamClient(t, s, "alpha")
	sb, err := alpha.Create(ctx, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000}}})
	if err != nil {
		t.Fatal(err)
	}
	const size = 20 << 20
	if _, code := sh(t, sb, fmt.Sprintf("head -c %d /dev/urandom > /tmp/blob", size)); code != 0 {
		t.Fatal("make the blob")
	}
	serveHTTP(t, sb, 3000)
	before := sandboxUsage(t, alpha, sb.ID)
	// Straight to the sandbox's address (its veth, or the Pod IP), as the
	// port proxy does.
	resp, err := http.Get("http://" + netip.AddrPortFrom(netip.MustParseAddr(sb.Address), 3000).String() + "/blob")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	after := sandboxUsage(t, alpha, sb.ID)
	tx := float64(after.NetTxBytes - before.NetTxBytes)
	t.Logf("downloaded %d bytes; metered egress %.0f (%.2f%% over), ingress %d, cost %.6f", n, tx, (tx/size-1)*100,
		after.NetRxBytes-before.NetRxBytes, after.Cost.Total)
	if tx < size || tx > 1.05*size {
		t.Errorf("metered egress %.0f bytes for a %d-byte download, want within 5%% (and not less)", tx, size)
	}
}

// TestMeteringBudgetHardCap: once a team's month costs more than its
// budget with a hard cap, its running sandbox is paused (its files kept as
// a snapshot), its project deactivated with its state saved, and it can
// neither create, activate nor resume (402); another team is untouched;
// raising the budget lifts the cap: the sandbox resumes with its files and
// the project's state comes back.
func TestMeteringBudgetHardCap(t *testing.T) {
	// A creation costs 1: the project's sandbox and another spend 2.
	ps := &projStack{opts: stackOptions{network: meteringPool,
		control: func(c *control.Config) { c.IdleCheckInterval, c.StopGrace = 200*time.Millisecond, 3*time.Second },
		config: func(c *daemon.Config) {
			c.UsageInterval = usageInterval
			c.Prices = metering.Prices{Creation: 1}
		}}, tokens: map[string]string{}}
	ps.start(t, newDataDir(t))
	ctx := ctxFor(t, 5*time.Minute)
	for _, team := range []string{projTeam.TeamID, otherTeam} {
		if err := ps.store.CreateTeam(ctx, store.Team{ID: team, Name: team}); err != nil {
			t.Fatal(err)
		}
		tok, _, err := ps.auth.CreateToken(ctx, team, "", "e2e-member", store.RoleMember, 0)
		if err != nil {
			t.Fatal(err)
		}
		ps.tokens[team] = tok
	}
	ps.importStandin(t)
	alpha, other := sdk.New(ps.http.URL, ps.tokens[projTeam.TeamID]), sdk.New(ps.http.URL, ps.tokens[otherTeam])
	v, err := ps.svc.CreateProject(ctx, projTeam, standinProject("capped"))
	if err != nil {
		t.Fatal(err)
	}
	act := ps.mustReady(t, v.ID)
	app, err := alpha.Get(ctx, act.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	// The stand-in's image has no shell: through the files API.
	if _, err := app.WriteFiles(ctx, gooseRoot, []sdk.File{{Path: "state", Content: []byte("kept")}}); err != nil {
		t.Fatalf("write the project's state: %v", err)
	}
	sb, err := alpha.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, code := sh(t, sb, "echo mine > ~/file"); code != 0 {
		t.Fatal("write a file")
	}
	theirs, err := other.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitSampled()

	if _, err := alpha.SetBudget(ctx, projTeam.TeamID, api.BudgetRequest{MonthlyLimit: 100}); !errors.Is(err, sdk.ErrForbidden) {
		t.Fatalf("a member sets its own budget: %v, want 403", err)
	}
	// The cap applies as it is set.
	b, err := ps.client.SetBudget(ctx, projTeam.TeamID, api.BudgetRequest{MonthlyLimit: 1.5, HardCap: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("budget after the cap: %+v", b)
	if !b.Capped || b.Spend < 2 {
		t.Fatalf("budget %+v, want capped with 2 spent", b)
	}
	evs, err := ps.store.ListEvents(ctx, store.EventFilter{TeamID: projTeam.TeamID, Limit: store.MaxEventLimit})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		if strings.HasPrefix(ev.Type, "budget.") {
			types = append(types, ev.Type+":"+ev.Data["percent"])
		}
	}
	if want := "budget.threshold:50 budget.threshold:80 budget.capped: budget.threshold:100"; strings.Join(types, " ") != want {
		t.Errorf("budget events %q, want %q", types, want)
	}
	if got, err := alpha.Get(ctx, sb.ID); err != nil || got.Status != api.StatusPaused {
		t.Fatalf("the team's sandbox after the cap: %+v, %v; want paused, its state saved", got, err)
	}
	a, err := ps.svc.GetActivation(ctx, projTeam, act.ID)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := ps.store.GetProject(ctx, "", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != string(control.StateStopped) || a.EndReason != control.ReasonBudget || pr.StateRef != act.ID+".tar.gz" {
		t.Fatalf("activation %s (%s), state ref %q; want stopped for the budget with its state saved", a.State, a.EndReason, pr.StateRef)
	}
	_, err = alpha.Create(ctx, api.CreateSandboxRequest{})
	if !errors.Is(err, sdk.ErrBudgetExceeded) || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("create over budget: %v, want 402 budget_exceeded", err)
	}
	if _, err := alpha.Activate(ctx, v.ID); !errors.Is(err, sdk.ErrBudgetExceeded) {
		t.Fatalf("activate over budget: %v, want 402 budget_exceeded", err)
	}
	if err := sb.Resume(ctx, 0); !errors.Is(err, sdk.ErrBudgetExceeded) {
		t.Fatalf("resume over budget: %v, want 402 budget_exceeded", err)
	}
	if got, err := other.Get(ctx, theirs.ID); err != nil || got.Status != api.StatusRunning {
		t.Fatalf("another team's sandbox: %+v, %v; want running", got, err)
	}
	if _, err := other.Create(ctx, api.CreateSandboxRequest{}); err != nil {
		t.Fatalf("another team creates: %v", err)
	}

	// Raised: the team works again, and its project's state is back.
	if _, err := ps.client.SetBudget(ctx, projTeam.TeamID, api.BudgetRequest{MonthlyLimit: 100, HardCap: true}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Resume(ctx, 0); err != nil {
		t.Fatalf("resume within the budget: %v", err)
	}
	if out, code := sh(t, sb, "cat ~/file"); code != 0 || strings.TrimSpace(out) != "mine" {
		t.Fatalf("the sandbox's file after the cap: %q (exit %d), want mine (the home dir is in the writable layer a pause keeps; /tmp is a tmpfs)", out, code)
	}
	again := ps.mustReady(t, v.ID)
	app, err = alpha.Get(ctx, again.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	f, err := app.ReadFile(ctx, gooseRoot+"/state")
	if err != nil {
		t.Fatalf("the project's state after the cap: %v", err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != "kept" {
		t.Fatalf("the project's state after the cap: %q, %v", got, err)
	}
}

// TestMeteringSurvivesCrash: `paddock serve` is SIGKILLed while a sandbox
// runs, between two burns; the next serve re-adopts the sandbox and its
// meter continues the chain: after the stop the sandbox's CPU is both
// burns' within 10%, and its provisioned memory covers its whole run
// once, the crash's gap included.
func TestMeteringSurvivesCrash(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	dir, addr := newDataDir(t), freeAddr(t)
	flags := []string{"serve", "--data-dir", dir, "--listen", addr, "--no-network", "--usage-interval", "300ms"}
	cmd := exec.Command(bin, flags...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	first := &serveProc{out: &lockedBuffer{}, log: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = first.out, first.log
	child, err := deathsig.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	done := child.Done() // waited for below and at cleanup
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	url, token := first.clientConfig(t, dir)
	c := sdk.New(url, token)
	ctx := ctxFor(t, 3*time.Minute)
	sb, err := c.Create(ctx, api.CreateSandboxRequest{Resources: api.Resources{VCPUs: 1, MemoryMB: 256}})
	if err != nil {
		t.Fatal(err)
	}
	cpu1 := burn(t, sb, 1.5)
	time.Sleep(time.Second) // samples written
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	time.Sleep(time.Second) // down for a while, the sandbox running

	startServe(t, bin, dir, addr, flags[5:]...)
	for deadline := time.Now().Add(2 * time.Minute); ; {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve after the crash is not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { _ = c.Sandbox(sb.ID).Delete(context.Background()) }) // before serve stops
	if sb, err = c.Get(ctx, sb.ID); err != nil || sb.Status != api.StatusRunning {
		t.Fatalf("after the crash the sandbox is %+v, %v; want re-adopted", sb, err)
	}
	cpu2 := burn(t, sb, 1)
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if sb, err = c.Get(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	total := sandboxUsage(t, c, sb.ID)
	run := sb.StoppedAt.Sub(sb.StartedAt)
	wantGBh := 0.25 * run.Hours()
	t.Logf("burns %.3f + %.3f CPU s, metered %.3f; %.7f GB·h over %s (want %.7f)", cpu1, cpu2, total.CPUSeconds,
		total.MemoryGBHours, run, wantGBh)
	if !within(total.CPUSeconds, cpu1+cpu2, 0.10) {
		t.Errorf("metered %.3f CPU s across the crash, the burns %.3f: want within 10%%", total.CPUSeconds, cpu1+cpu2)
	}
	if math.Abs(total.MemoryGBHours-wantGBh) > 0.25*(10*time.Millisecond).Hours() || total.Creations != 1 {
		t.Errorf("metered %.7f GB·h and %d creations for %s at 256 MB, want %.7f and 1", total.MemoryGBHours, total.Creations, run, wantGBh)
	}
}
