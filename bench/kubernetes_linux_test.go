package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/pool"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/kubernetes"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The Kubernetes benchmarks run the kubernetes driver (a sandbox is a Pod
// on the one-node test cluster of hack/k8s, on this host) beside the runc
// driver in one run, interleaved, and report each one's figures with the
// Pod's over runc's (ratio-*):
//
//	export PADDOCK_K8S_BIN=$(hack/k8s/build.sh | tail -n 1)
//	PADDOCK_TEST_K8S=1 flock /tmp/paddock-root-tests.lock go test -run '^$' -bench Kubernetes -benchtime 20x -timeout 30m ./bench/
//
// Without PADDOCK_TEST_K8S=1 they skip. The first of them brings the
// cluster up (about 15 s; or uses PADDOCK_K8S_KUBECONFIG's), TestMain
// tears it down; each benchmark has a namespace, a registry on loopback
// and the images in it of its own, and deletes them at its end.
//
// Both sides run the image "host" with benchResources: for the Pod, the
// host image's skeleton from the registry with the host's /usr bound over
// it (hostPath), as k8stest.PushSandboxImages and the driver's tests have
// it. What differs is what each driver is: the Pod is scheduled, its
// Secret and NetworkPolicy are objects of the API server, the kubelet
// starts it through containerd with an init container that installs the
// agent, it gets an address on the cluster's network (CNI bridge), and
// the agent is reached over TCP at that address; the runc sandbox here is
// loopback-only and its agent is on a unix socket. The Pods request 2% of
// their limits (RequestFraction), as in the driver's tests: the node has
// two cores, and a pool's idle Pods must fit beside the ones measured.

// kubeEnv is the kubernetes driver's env, and a watch on its namespace's
// Pods that times their start-up steps.
type kubeEnv struct {
	*env
	pods *podClock
}

// setupKubernetes is setup's twin with the kubernetes driver, over a
// namespace, a registry and images of the benchmark's own. It skips unless
// PADDOCK_TEST_K8S=1.
func setupKubernetes(b *testing.B) *kubeEnv {
	b.Helper()
	c := k8stest.Require(b)
	im := c.PushSandboxImages(b)
	ns := c.Namespace(b)
	d, err := kubernetes.New(kubernetes.Config{
		Client:          c.Client,
		Namespace:       ns,
		AgentImage:      im.Agent,
		HostImage:       kubernetes.HostImage{Ref: im.Host, ReadOnlyBinds: im.HostBinds},
		RequestFraction: 0.02,
		CgroupVersion:   1, // hack/k8s/up.sh's kubelet: cgroupfs, v1
		Logger:          quietLogger,
	})
	if err != nil {
		b.Fatalf("kubernetes driver: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	return &kubeEnv{env: &env{driver: d}, pods: watchPods(b, c, ns)}
}

// quietLogger drops the node's, the pools' and the driver's logs, which
// would fill the benchmark's output.
var quietLogger = slog.New(slog.DiscardHandler)

// kubernetesPair is the runc and kubernetes envs of one benchmark, each
// warmed by one sandbox made and destroyed untimed: the node pulls the
// images then, and the first sample is not a pull.
func kubernetesPair(b *testing.B) (rc *env, k8s *kubeEnv) {
	b.Helper()
	k8s = setupKubernetes(b) // first: skips at once when the cluster tests are off
	rc = setup(b)
	for _, e := range []*env{rc, k8s.env} {
		cl := e.create(b, "bench-warmup")
		if err := run(context.Background(), cl, "true"); err != nil {
			b.Fatal(err)
		}
		cl.Close()
		e.destroy(b, "bench-warmup")
	}
	return rc, k8s
}

// BenchmarkKubernetesCreateToFirstCommand times create → `true` finished
// in a new sandbox on each driver, alternating which goes first; destroy
// is untimed. kubernetes-create-p50-ms is the Pod's create alone (until
// its agent answered a ping); the <step>-p50-ms split it as the API
// server saw the Pod (see podClock.add).
func BenchmarkKubernetesCreateToFirstCommand(b *testing.B) {
	rc, k8s := kubernetesPair(b)
	ctx := context.Background()
	var k8sCreate []time.Duration
	steps := map[string][]time.Duration{}
	one := func(e *env, id string) time.Duration {
		start := time.Now()
		cl := e.create(b, id)
		created := time.Since(start)
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		if e == k8s.env {
			k8sCreate = append(k8sCreate, created)
			k8s.pods.add(b, steps, id, start, start.Add(created))
		}
		cl.Close()
		e.destroy(b, id)
		b.StartTimer()
		return took
	}
	var rcs, ks []time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			rcs = append(rcs, one(rc, fmt.Sprintf("bench-rc-%d", i)))
			ks = append(ks, one(k8s.env, fmt.Sprintf("bench-k8s-%d", i)))
		} else {
			ks = append(ks, one(k8s.env, fmt.Sprintf("bench-k8s-%d", i)))
			rcs = append(rcs, one(rc, fmt.Sprintf("bench-rc-%d", i)))
		}
	}
	reportPair(b, "kubernetes", rcs, ks)
	b.ReportMetric(ms(pct(k8sCreate, 50)), "kubernetes-create-p50-ms")
	reportSteps(b, steps)
}

// BenchmarkKubernetesExecRoundTrip times `true` run to completion in a
// running sandbox of each driver (one request to its agent: over TCP to
// the Pod IP, or the runc sandbox's unix socket), alternately.
func BenchmarkKubernetesExecRoundTrip(b *testing.B) {
	rc, k8s := kubernetesPair(b)
	ctx := context.Background()
	rcl, kcl := rc.create(b, "bench-rc-exec"), k8s.create(b, "bench-k8s-exec")
	b.Cleanup(func() {
		rcl.Close()
		kcl.Close()
		rc.destroy(b, "bench-rc-exec")
		k8s.destroy(b, "bench-k8s-exec")
	})
	timed := func(cl *agent.Client) time.Duration {
		start := time.Now()
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var rcs, ks []time.Duration
	for b.Loop() {
		rcs = append(rcs, timed(rcl))
		ks = append(ks, timed(kcl))
	}
	reportPair(b, "kubernetes", rcs, ks)
}

// warmRig is paddock's warm pool (internal/pool) over a node manager
// (internal/node) on one driver: the daemon's create path (pools, then
// node) without the daemon around it (no store, HTTP or admission), and
// without a host network for the node to give sandboxes.
type warmRig struct {
	node  *node.Manager
	pools *pool.Manager
	made  []string // the sandboxes first made and not deleted yet
}

// benchPool is the pool every warmRig keeps.
const benchPool = "bench"

// newWarmRig starts a node manager on d over a fresh data dir and a pool
// of size idle sandboxes of benchResources, refilled in the background,
// and waits until it is full. At the end it removes the pool (its idle
// sandboxes with it) and closes both.
func newWarmRig(b *testing.B, d runtime.Driver, size int) *warmRig {
	b.Helper()
	ctx := context.Background()
	nm, err := node.New(node.Config{DataDir: b.TempDir(), Driver: d, MaxSandboxes: 2*size + 4, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	if err := nm.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nm.Close() })
	pm, err := pool.New(pool.Config{Sandboxes: nm, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	if err := pm.Start(ctx); err != nil {
		b.Fatal(err)
	}
	r := &warmRig{node: nm, pools: pm}
	b.Cleanup(func() { // before the node's Close (cleanups run last first)
		// What a benchmark cut short did not delete.
		for _, id := range r.made {
			if err := nm.Delete(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
				b.Errorf("delete %s: %v", id, err)
			}
		}
		if err := pm.Remove(ctx, benchPool); err != nil {
			b.Errorf("remove pool: %v", err)
		}
		// Refills in flight are discarded as they finish, unless the
		// pools are closed by then: close them once none is left.
		deadline := time.Now().Add(2 * time.Minute)
		for len(nm.Pooled()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if left := nm.Pooled(); len(left) > 0 {
			b.Errorf("%d pool sandboxes left after the pool was removed", len(left))
		}
		pm.Close()
	})
	if _, err := pm.Set(ctx, sandbox.PoolSpec{Name: benchPool, Resources: benchResources, Min: size, Max: size}); err != nil {
		b.Fatal(err)
	}
	r.waitFull(b, size)
	return r
}

// waitFull waits, untimed, until the pool holds want idle sandboxes.
func (r *warmRig) waitFull(b *testing.B, want int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := r.pools.Get(benchPool)
		if err != nil {
			b.Fatal(err)
		}
		if st.Idle >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the pool never refilled: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// first creates a sandbox as the daemon does (a pool's, if one serves
// req) and runs `true` in it; it returns how long both took, the claim
// or create alone, and the sandbox.
func (r *warmRig) first(b *testing.B, req sandbox.CreateRequest) (took, create time.Duration, sb sandbox.Sandbox) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	sb, err := r.pools.Create(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	create = time.Since(start)
	r.made = append(r.made, sb.ID)
	cmd, err := r.node.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true})
	if err != nil || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
		b.Fatalf("first command in %s: %+v, %v", sb.ID, cmd, err)
	}
	return time.Since(start), create, sb
}

// BenchmarkKubernetesWarmClaim times a create served from a warm pool of
// PADDOCK_K8S_POOL_N (default 2) idle Pods until a first command (`true`)
// finished in it, against a cold create → first command on the same
// driver of the same request but for its key (1 MB more memory, which no
// pool serves), in the same run: paddock's own pool (internal/pool) over a
// node manager on the kubernetes driver, the daemon's create path without
// the daemon. The runc driver's pool and cold create are measured the
// same way in the same iterations as the reference (runc-*). Both creates
// of an iteration start with the pool full and nothing refilling; deletes
// and refills are untimed. ratio-p50 is the Pod's claim over its cold
// create.
func BenchmarkKubernetesWarmClaim(b *testing.B) {
	size := 2
	if v := os.Getenv("PADDOCK_K8S_POOL_N"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PADDOCK_K8S_POOL_N=%q: want a positive count", v)
		}
		size = n
	}
	rc, k8s := kubernetesPair(b)
	rigs := map[string]*warmRig{"runc": newWarmRig(b, rc.driver, size), "kubernetes": newWarmRig(b, k8s.driver, size)}
	coldRes := benchResources
	coldRes.MemoryMB++
	ctx := context.Background()
	type figures struct{ warm, claimOnly, next, cold []time.Duration }
	fig := map[string]*figures{"runc": {}, "kubernetes": {}}
	measure := func(name string) {
		r, f := rigs[name], fig[name]
		b.StopTimer()
		r.waitFull(b, size)
		b.StartTimer()
		took, claim, sb := r.first(b, sandbox.CreateRequest{Resources: benchResources, TeamID: "bench", Env: map[string]string{"RUN": "warm"}})
		b.StopTimer()
		if !sb.Warm {
			b.Fatalf("%s: not served warm: %+v", name, sb)
		}
		f.warm, f.claimOnly = append(f.warm, took), append(f.claimOnly, claim)
		// The same command again: what the first one costs beyond any other.
		t1 := time.Now()
		if _, err := r.node.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true}); err != nil {
			b.Fatal(err)
		}
		f.next = append(f.next, time.Since(t1))
		r.waitFull(b, size)
		b.StartTimer()
		took, _, cs := r.first(b, sandbox.CreateRequest{Resources: coldRes, TeamID: "bench", Env: map[string]string{"RUN": "cold"}})
		b.StopTimer()
		if cs.Warm {
			b.Fatalf("%s: the baseline was served warm", name)
		}
		f.cold = append(f.cold, took)
		for _, id := range []string{sb.ID, cs.ID} {
			if err := r.node.Delete(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		r.made = nil
		b.StartTimer()
	}
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			measure("runc")
			measure("kubernetes")
		} else {
			measure("kubernetes")
			measure("runc")
		}
	}
	k, r := fig["kubernetes"], fig["runc"]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(k.warm, 50)), "claim-p50-ms")
	b.ReportMetric(ms(pct(k.warm, 99)), "claim-p99-ms")
	b.ReportMetric(ms(pct(k.claimOnly, 50)), "claim-only-p50-ms")
	b.ReportMetric(ms(pct(k.next, 50)), "next-command-p50-ms")
	b.ReportMetric(ms(pct(k.cold, 50)), "cold-p50-ms")
	b.ReportMetric(ms(pct(k.cold, 99)), "cold-p99-ms")
	b.ReportMetric(ms(pct(k.warm, 50))/ms(pct(k.cold, 50)), "ratio-p50")
	b.ReportMetric(ms(pct(r.warm, 50)), "runc-claim-p50-ms")
	b.ReportMetric(ms(pct(r.warm, 99)), "runc-claim-p99-ms")
	b.ReportMetric(ms(pct(r.cold, 50)), "runc-cold-p50-ms")
	b.ReportMetric(ms(pct(r.cold, 99)), "runc-cold-p99-ms")
	b.Logf("n=%d pool of %d; kubernetes claim p50=%v p99=%v cold p50=%v p99=%v; runc claim p50=%v p99=%v cold p50=%v p99=%v",
		len(k.warm), size, pct(k.warm, 50), pct(k.warm, 99), pct(k.cold, 50), pct(k.cold, 99),
		pct(r.warm, 50), pct(r.warm, 99), pct(r.cold, 50), pct(r.cold, 99))
}

// podClock times the Pods of a namespace from a watch: when each was
// first seen scheduled, with its init container (the agent's install)
// finished, and with its sandbox container running, by sandbox id. The
// times are when this process heard of each step, i.e. when the kubelet's
// status update reached the API server and the watch delivered it: what
// the driver, which watches the same way, waits for.
type podClock struct {
	mu   sync.Mutex
	seen map[string]*podTimes // guarded by mu
}

type podTimes struct{ scheduled, installed, running time.Time }

// watchPods starts a podClock on namespace ns until b ends.
func watchPods(b *testing.B, c *k8stest.Cluster, ns string) *podClock {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc := &podClock{seen: map[string]*podTimes{}}
	done := make(chan struct{})
	go func() { // owned by the cleanup below, which cancels and waits for it
		defer close(done)
		for ctx.Err() == nil {
			pc.watch(ctx, c, ns)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return pc
}

// watch lists the Pods of ns, then watches them from there until the
// watch ends. A fresh cluster's watch cache may refuse a watch at first
// (504, "Too large resource version"): the caller starts over.
func (pc *podClock) watch(ctx context.Context, c *k8stest.Cluster, ns string) {
	pods := c.Client.CoreV1().Pods(ns)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	now := time.Now()
	for i := range list.Items {
		pc.observe(&list.Items[i], now)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok { // an error: start over
			return
		}
		pc.observe(p, time.Now())
	}
}

// podSandboxID is the annotation the kubernetes driver names a Pod's
// sandbox with.
const podSandboxID = "paddock.dev/sandbox-id"

func (pc *podClock) observe(p *corev1.Pod, now time.Time) {
	id := p.Annotations[podSandboxID]
	if id == "" {
		return
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	t := pc.seen[id]
	if t == nil {
		t = &podTimes{}
		pc.seen[id] = t
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionTrue && t.scheduled.IsZero() {
			t.scheduled = now
		}
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0 && t.installed.IsZero() {
			t.installed = now
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "sandbox" && cs.State.Running != nil && p.Status.PodIP != "" && t.running.IsZero() {
			t.running = now
		}
	}
}

// add appends the steps of sandbox id's Pod, created from start until
// created, to steps: "schedule" (create called → scheduled), "install"
// (→ the init container finished), "start" (→ the sandbox container
// running with an address) and "agent" (→ Create returned: the watch's
// news reaching the driver and the agent answering a ping).
func (pc *podClock) add(b *testing.B, steps map[string][]time.Duration, id string, start, created time.Time) {
	b.Helper()
	pc.mu.Lock()
	t := pc.seen[id]
	pc.mu.Unlock()
	if t == nil || t.scheduled.IsZero() || t.installed.IsZero() || t.running.IsZero() {
		b.Logf("pod of %s: steps not all seen (%+v)", id, t)
		return
	}
	for name, d := range map[string]time.Duration{"schedule": t.scheduled.Sub(start), "install": t.installed.Sub(t.scheduled),
		"start": t.running.Sub(t.installed), "agent": created.Sub(t.running)} {
		steps["kubernetes-"+name] = append(steps["kubernetes-"+name], d)
	}
}
