package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// densityPool holds up to 4,096 /30s, apart from the other benchmarks'.
var densityPool = netip.MustParsePrefix("10.212.0.0/18")

const (
	densityDefault = 2000
	densityMax     = 4000 // densityPool's /30s, and userns.DefaultRanges
	// densityEdge is how many creates at each end give the first and the
	// last figures.
	densityEdge = 50
	// densityTimeout bounds the whole run, create to delete.
	densityTimeout = 50 * time.Minute
)

// densityN is BenchmarkDensity's number of sandboxes: densityDefault, or
// $PADDOCK_DENSITY_N (a smaller one while developing).
func densityN(b *testing.B) int {
	b.Helper()
	n := densityDefault
	if v := os.Getenv("PADDOCK_DENSITY_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 || n > densityMax {
			b.Fatalf("PADDOCK_DENSITY_N=%q: want 2..%d", v, densityMax)
		}
	}
	return n
}

// BenchmarkDensity creates PADDOCK_DENSITY_N (default 2,000) idle sandboxes
// one after another through the HTTP API and keeps them all running, then
// measures what each costs the host:
//
//   - pss-per-sandbox-mb: the proportional set size of every process in
//     the sandbox's memory cgroup (the agent; shared pages such as its
//     binary's text split among all sandboxes), plus kmem-per-sandbox-mb,
//     the kernel memory charged to that cgroup (memory.kmem.usage_in_bytes:
//     its page tables, stacks, slab of its namespaces' objects). Their sum
//     is mem-per-sandbox-mb, the ≤ 2 MB target. Kernel memory outside the
//     cgroup (the host half of the veth, paddock's own) is not in it:
//     host-per-sandbox-mb is the drop of MemAvailable over the run divided
//     by N, which has everything (paddock's growth, page cache) in it.
//   - paddock-rss-mb and paddock-fds: this process, which is paddock (the
//     daemon runs in it) plus the test's client.
//   - create-p50-ms and exec-p50-ms over the first densityEdge creates and
//     over the last (with the node's create phases of each: first-*,
//     last-*) (create: the API call; exec: `true` run to its end in
//     the sandbox just made, after a first command), and old-exec-p50-ms:
//     `true` in densityEdge of the oldest sandboxes at the end.
//
// The host limits it needs are raised for the run and restored after
// (raiseDensityLimits says which and why). Every sandbox is deleted at the
// end, failed run or not. One iteration is the whole run:
//
//	flock /tmp/paddock-root-tests.lock go test -run '^$' -bench Density -benchtime 1x -timeout 60m ./bench/
func BenchmarkDensity(b *testing.B) {
	n := densityN(b)
	ctx, cancel := context.WithTimeout(context.Background(), densityTimeout)
	defer cancel()
	raiseDensityLimits(b, n)
	s := startBurstStack(b, burstOptions{Configure: func(c *daemon.Config) {
		c.NetworkPool = densityPool
		c.MaxSandboxes = n + 8
	}})
	mgr := s.d.Node()
	// Runs before startBurstStack's cleanup (which lists 500 at most):
	// every sandbox goes, a page at a time.
	b.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for {
			items, _, err := mgr.List(dctx, sandbox.ListOptions{Limit: 500})
			if err != nil {
				b.Errorf("cleanup: list: %v", err)
				return
			}
			if len(items) == 0 {
				return
			}
			for _, sb := range items {
				if err := mgr.Delete(dctx, sb.ID); err != nil {
					b.Errorf("cleanup: delete %s: %v", sb.ID, err)
					return
				}
			}
		}
	})
	for b.Loop() {
		densityRun(ctx, b, s, n)
	}
}

func densityRun(ctx context.Context, b *testing.B, s *burstStack, n int) {
	b.Helper()
	availBefore := memAvailable(b)
	rssBefore, fdsBefore := selfRSS(), selfFDs()
	var (
		ids                          = make([]string, 0, n)
		createFirst, createLast      []time.Duration
		execFirst, execLast, execOld []time.Duration
		failed                       int
	)
	runTrue := func(sb *sdk.Sandbox) (time.Duration, error) {
		start := time.Now()
		c, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"})
		took := time.Since(start)
		if err == nil && c.ExitCodeOr(-1) != 0 {
			err = fmt.Errorf("true exited with %d", c.ExitCodeOr(-1))
		}
		return took, err
	}
	edge := min(densityEdge, n/2) // a small N splits in halves
	// The node's create phases of the first and the last creates only.
	s.phases.collect(true)
	start := time.Now()
	for i := range n {
		switch i {
		case edge:
			s.phases.report(b, "first-")
			s.phases.reset()
			s.phases.collect(false)
		case n - edge:
			s.phases.collect(true)
		}
		t0 := time.Now()
		sb, err := s.client.Create(ctx, api.CreateSandboxRequest{TimeoutMs: densityTimeout.Milliseconds()})
		took := time.Since(t0)
		if err != nil {
			// Counted and reported, not fatal: how many fail at scale is
			// one of the figures.
			failed++
			b.Errorf("create %d: %v", i, err)
			if failed > 20 {
				b.Fatalf("%d creates failed; stopping at %d sandboxes", failed, len(ids))
			}
			continue
		}
		ids = append(ids, sb.ID)
		if _, err := runTrue(sb); err != nil { // the first command: connects
			b.Fatalf("first command in sandbox %d (%s): %v", i, sb.ID, err)
		}
		exec, err := runTrue(sb)
		if err != nil {
			b.Fatalf("command in sandbox %d (%s): %v", i, sb.ID, err)
		}
		switch {
		case i < edge:
			createFirst, execFirst = append(createFirst, took), append(execFirst, exec)
		case i >= n-edge:
			createLast, execLast = append(createLast, took), append(execLast, exec)
		}
		if (i+1)%250 == 0 {
			b.Logf("%d sandboxes in %v; last create %v, exec %v; paddock RSS %.0f MB, %d fds",
				i+1, time.Since(start).Round(time.Second), took.Round(time.Millisecond), exec.Round(time.Microsecond),
				float64(selfRSS())/(1<<20), selfFDs())
		}
	}
	createWall := time.Since(start)
	s.phases.report(b, "last-")
	s.phases.collect(false)
	// The oldest sandboxes still answer, as fast.
	for _, id := range ids[:min(edge, len(ids))] {
		took, err := runTrue(s.client.Sandbox(id))
		if err != nil {
			b.Fatalf("command in old sandbox %s: %v", id, err)
		}
		execOld = append(execOld, took)
	}
	// Let the last ones settle (the agents' start-up garbage collected)
	// before memory is read.
	time.Sleep(5 * time.Second)
	var all sandboxMem
	for _, id := range ids {
		m, err := sandboxMemory(id)
		if err != nil {
			b.Fatalf("memory of %s: %v", id, err)
		}
		all.add(m)
	}
	pss, kmem, usage := all.pss, all.kmem, all.usage
	availAfter := memAvailable(b)
	rss, fds := selfRSS(), selfFDs()
	m := float64(max(len(ids), 1))
	mb := func(v int64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(ids)), "sandboxes")
	b.ReportMetric(float64(failed), "failed-creates")
	b.ReportMetric(mb(pss)/m, "pss-per-sandbox-mb")
	b.ReportMetric(mb(kmem)/m, "kmem-per-sandbox-mb")
	b.ReportMetric(mb(pss+kmem)/m, "mem-per-sandbox-mb")
	b.ReportMetric(mb(all.pssAnon)/m, "pss-anon-per-sandbox-mb")
	b.ReportMetric(mb(all.pssFile)/m, "pss-file-per-sandbox-mb")
	b.ReportMetric(float64(all.threads)/m, "threads-per-sandbox")
	b.ReportMetric(mb(usage)/m, "cgroup-usage-per-sandbox-mb")
	b.ReportMetric(mb(availBefore-availAfter)/m, "host-per-sandbox-mb")
	b.ReportMetric(mb(rss), "paddock-rss-mb")
	b.ReportMetric(float64(fds), "paddock-fds")
	b.ReportMetric(ms(pct(createFirst, 50)), "create-first-p50-ms")
	b.ReportMetric(ms(pct(createLast, 50)), "create-last-p50-ms")
	b.ReportMetric(ms(pct(execFirst, 50)), "exec-first-p50-ms")
	b.ReportMetric(ms(pct(execLast, 50)), "exec-last-p50-ms")
	b.ReportMetric(ms(pct(execOld, 50)), "exec-old-p50-ms")
	b.Logf("%d sandboxes: %d processes, %d threads; PSS anon %.2f MB, file %.2f MB each; %d IPv4 neighbour entries; "+
		"at most %d keys held by one non-root uid; paddock's fds: %v",
		len(ids), all.procs, all.threads, mb(all.pssAnon)/m, mb(all.pssFile)/m, neighbours(), maxUserKeys(), fdKinds())
	b.Logf("%d sandboxes (%d creates failed) in %v: PSS %.2f MB + kmem %.2f MB each (cgroup usage %.2f MB, host MemAvailable %.2f MB); "+
		"paddock RSS %.0f MB (%.0f before), %d fds (%d before); create p50 first %v last %v; exec p50 first %v last %v old %v",
		len(ids), failed, createWall.Round(time.Second), mb(pss)/m, mb(kmem)/m, mb(usage)/m, mb(availBefore-availAfter)/m,
		mb(rss), mb(rssBefore), fds, fdsBefore, pct(createFirst, 50), pct(createLast, 50),
		pct(execFirst, 50), pct(execLast, 50), pct(execOld, 50))
}

// reset forgets the phases collected so far.
func (l *phaseLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phases = map[string][]time.Duration{}
}

// sandboxMem is what one sandbox (or the sum of many) costs, in bytes.
type sandboxMem struct {
	pss, pssAnon, pssFile int64 // of its processes
	kmem, usage           int64 // charged to its memory cgroup
	procs, threads        int
}

func (m *sandboxMem) add(o sandboxMem) {
	m.pss, m.pssAnon, m.pssFile = m.pss+o.pss, m.pssAnon+o.pssAnon, m.pssFile+o.pssFile
	m.kmem, m.usage = m.kmem+o.kmem, m.usage+o.usage
	m.procs, m.threads = m.procs+o.procs, m.threads+o.threads
}

// sandboxMemory is the PSS of the processes in sandbox id's memory cgroup
// and the kernel memory and total memory charged to it.
func sandboxMemory(id string) (sandboxMem, error) {
	var m sandboxMem
	dir := filepath.Join("/sys/fs/cgroup/memory/paddock", id)
	var err error
	if m.kmem, err = readInt(filepath.Join(dir, "memory.kmem.usage_in_bytes")); err != nil {
		return m, err
	}
	if m.usage, err = readInt(filepath.Join(dir, "memory.usage_in_bytes")); err != nil {
		return m, err
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return m, err
	}
	for pid := range strings.FieldsSeq(string(procs)) {
		rollup := filepath.Join("/proc", pid, "smaps_rollup")
		for _, f := range []struct {
			key string
			v   *int64
		}{{"Pss:", &m.pss}, {"Pss_Anon:", &m.pssAnon}, {"Pss_File:", &m.pssFile}} {
			v, err := procField(rollup, f.key)
			if err != nil {
				return m, err
			}
			*f.v += v
		}
		threads, err := procNumber(filepath.Join("/proc", pid, "status"), "Threads:")
		if err != nil {
			return m, err
		}
		m.procs++
		m.threads += int(threads)
	}
	return m, nil
}

// maxUserKeys is the most keys any uid but root holds (/proc/key-users):
// each sandbox's user namespace maps its own host uids, so its keyring is
// charged to a uid of its own, against kernel.keys.maxkeys (200).
func maxUserKeys() int {
	b, _ := os.ReadFile("/proc/key-users")
	most := 0
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] == "0:" {
			continue
		}
		// f[3] is "keys/maxkeys".
		n, _ := strconv.Atoi(strings.Split(f[3], "/")[0])
		most = max(most, n)
	}
	return most
}

// fdKinds counts this process's fds by what they are (socket, pipe,
// anon_inode:[eventfd], a file's directory...).
func fdKinds() map[string]int {
	out := map[string]int{}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue
		}
		kind, _, _ := strings.Cut(target, ":")
		if strings.HasPrefix(target, "/") {
			kind = filepath.Dir(target)
			if strings.HasPrefix(kind, "/tmp/pb-") { // the data dir: by its first level
				parts := strings.SplitN(kind, "/", 5)
				kind = strings.Join(parts[:min(len(parts), 4)], "/")
			}
		} else if strings.HasPrefix(target, "anon_inode:") {
			kind = target
		}
		out[kind]++
	}
	return out
}

// neighbours is the number of entries in the host's IPv4 neighbour table.
func neighbours() int {
	b, _ := os.ReadFile("/proc/net/arp")
	return max(bytes.Count(b, []byte("\n"))-1, 0)
}

// procField is the kB figure of the line starting with key in a /proc
// file, in bytes.
func procField(path, key string) (int64, error) {
	kb, err := procNumber(path, key)
	return kb << 10, err
}

// procNumber is the number on the line starting with key in a /proc file.
func procNumber(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

func memAvailable(b *testing.B) int64 {
	b.Helper()
	v, err := procField("/proc/meminfo", "MemAvailable:")
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func selfRSS() int64 {
	v, _ := procField("/proc/self/status", "VmRSS:")
	return v
}

func selfFDs() int {
	fds, _ := os.ReadDir("/proc/self/fd")
	return len(fds)
}

// raiseDensityLimits raises, for n sandboxes, the host limits whose
// defaults n sandboxes may run into, and restores them after:
//
//   - RLIMIT_NOFILE of this process (paddock), to 8 per sandbox: it keeps
//     about 6 per sandbox (measured; the run logs them by kind);
//   - kernel.pid_max (32,768 by default), to 12 per sandbox: every agent
//     thread takes a pid, about 7 each (threads-per-sandbox).
//
// Each is raised only if n needs more than the host has; at 2,000 on a
// default host neither binds yet (12,000 fds of 20,000; 15,000 pids of
// 32,768), at 4,000 both do. What it leaves alone, measured by the run:
// the neighbour tables (idle sandboxes make next to no entries, far below
// gc_thresh3's 1,024: the run logs how many), conntrack (idle sandboxes
// keep no connections), ip_local_port_range (the agents are reached over
// unix sockets), the keyring quota (each sandbox's user namespace maps its
// own host uids, so no uid holds more than a key or two of its 200: the
// run logs the most), inotify (nothing watches per sandbox), user and
// network namespaces (limits near 100,000).
func raiseDensityLimits(b *testing.B, n int) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if need := uint64(8*n + 1024); lim.Cur < need {
		old := lim
		lim.Cur, lim.Max = need, max(lim.Max, need)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatalf("raise RLIMIT_NOFILE to %d: %v", need, err)
		}
		b.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	raiseSysctl(b, "kernel/pid_max", int64(12*n+8192))
}

// raiseSysctl sets /proc/sys/name to at least v for the benchmark, and
// back after. Cleanups run last-in first-out, so restores go in reverse.
func raiseSysctl(b *testing.B, name string, v int64) {
	b.Helper()
	path := filepath.Join("/proc/sys", name)
	old, err := readInt(path)
	if err != nil {
		b.Fatalf("sysctl %s: %v", name, err)
	}
	if old >= v {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.FormatInt(v, 10)), 0o644); err != nil {
		b.Fatalf("raise sysctl %s to %d: %v", name, v, err)
	}
	b.Logf("sysctl %s: %d → %d for the run", name, old, v)
	b.Cleanup(func() {
		if err := os.WriteFile(path, []byte(strconv.FormatInt(old, 10)), 0o644); err != nil {
			b.Errorf("restore sysctl %s to %d: %v", name, old, err)
		}
	})
}
