package runtimetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Run runs the conformance suite against the drivers h.NewDriver returns,
// with h's fixtures for the cases that need an image, a volume or a
// network prepared from outside the driver.
func Run(t *testing.T, h Harness) {
	newDriver := h.NewDriver
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, h) })
	// The CPU test measures a quota, so it runs alone before the parallel
	// subtests load the machine.
	t.Run("CPUQuota", func(t *testing.T) { testCPUQuota(t, newDriver) })
	t.Run("Parallel", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			fn   func(*testing.T, func(*testing.T) runtime.Driver)
		}{
			{"Basics", testBasics},
			{"PIDNamespace", testPIDNamespace},
			{"Signals", testSignals},
			{"ReadOnlyBase", testReadOnlyBase},
			{"Network", testNetwork},
			{"OOM", testOOM},
			{"ForkBomb", testForkBomb},
			{"Privileged", testPrivileged},
			{"LargeFile", testLargeFile},
			{"LargeOutput", testLargeOutput},
			{"StopKillsAll", testStopKillsAll},
			{"Lifecycle", testLifecycle},
			{"User", testUser},
			{"Image", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testImage(t, h) }},
			{"Volume", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testVolume(t, h) }},
			{"JoinNetwork", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testJoinNetwork(t, h) }},
			{"SnapshotRoundTrip", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testSnapshotRoundTrip(t, h) }},
			{"SnapshotHostImage", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testSnapshotHostImage(t, h) }},
			{"Escape", testEscape},
			{"UserNamespace", func(t *testing.T, _ func(*testing.T) runtime.Driver) { testUserNamespace(t, h) }},
			{"UserNamespaceLimits", testUserNamespaceLimits},
			{"DiskCap", testDiskCap},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if why, ok := h.Known[tc.name]; ok {
					t.Skip("known to fail with this driver: " + why)
				}
				t.Parallel()
				tc.fn(t, newDriver)
			})
		}
	})
}

func testBasics(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "basics", defaultRes)
	r := b.sh("echo hi; id -u", false).mustOK(t)
	l := lines(r.Stdout)
	if len(l) != 2 || l[0] != "hi" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	if uid, _ := strconv.Atoi(l[1]); uid == 0 {
		t.Errorf("commands run as root without sudo (uid %s)", l[1])
	}
	r = b.sh("id -u; awk 'BEGIN{print 6*7}'; cat /etc/hostname >/dev/null; getent passwd user", true).mustOK(t)
	if l := lines(r.Stdout); len(l) < 2 || l[0] != "0" || l[1] != "42" {
		t.Errorf("sudo: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	info, err := b.c.Ping(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.PID != 1 {
		t.Errorf("agent is pid %d inside, want 1", info.PID)
	}
}

func testPIDNamespace(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "pidns", defaultRes)
	r := b.sh("ls /proc | grep -c '^[0-9]'; tr '\\0' ' ' </proc/1/cmdline", false).mustOK(t)
	l := strings.SplitN(strings.TrimSpace(r.Stdout), "\n", 2)
	n, _ := strconv.Atoi(l[0])
	if n == 0 || n > 10 {
		t.Errorf("sandbox sees %d processes, want a handful:\n%s", n, r.Stdout)
	}
	if len(l) < 2 || !strings.Contains(l[1], agent.BinaryPath) {
		t.Errorf("pid 1 is %q, want the agent", l)
	}
	// The test process's own pid must not be visible inside.
	r = b.sh(fmt.Sprintf("test -e /proc/%d/cmdline && cat /proc/%d/cmdline || echo absent", os.Getpid(), os.Getpid()), true).mustOK(t)
	if strings.Contains(r.Stdout, "runtimetest") || strings.Contains(r.Stdout, ".test") {
		t.Errorf("host process visible inside: %q", r.Stdout)
	}
}

// testSignals starts a host process in the test's own process group, then
// tries every way to signal outside the sandbox from inside.
func testSignals(t *testing.T, nd func(*testing.T) runtime.Driver) {
	host := exec.Command("sleep", "300")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- host.Wait() }()
	t.Cleanup(func() {
		_ = host.Process.Kill()
		<-exited
	})
	b := newBox(t, nd, "signals", defaultRes)
	for _, tc := range []struct {
		name, script string
		sudo         bool
	}{
		{"kill -1", "kill -9 -1; true", false},
		{"kill 0", "sh -c 'kill -9 0'; true", false},
		{"kill host pid", fmt.Sprintf("kill -9 %d; true", host.Process.Pid), false},
		{"sudo kill -1", "kill -9 -1; true", true},
		{"sudo kill 0", "sh -c 'kill -9 0'; true", true},
		{"sudo kill host pid", fmt.Sprintf("kill -9 %d; true", host.Process.Pid), true},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		// The command may kill itself; only its effect outside matters.
		_, _ = runCmd(ctx, b.c, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", tc.script}, Sudo: tc.sudo})
		cancel()
		select {
		case err := <-exited:
			t.Fatalf("%s: the host process died: %v", tc.name, err)
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := b.c.Ping(context.Background()); err != nil {
			t.Fatalf("%s: the agent died: %v", tc.name, err)
		}
	}
	b.sh("echo still here", false).mustOK(t)
}

func testReadOnlyBase(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "rofs", defaultRes)
	probe := "paddock-probe-" + b.id
	agentBefore := b.sh("sha256sum "+agent.BinaryPath, false).mustOK(t).Stdout
	// Writes to the bound host /usr fail, even as root.
	for _, sudo := range []bool{false, true} {
		r := b.sh("touch /usr/bin/"+probe+" || exit 3; echo wrote", sudo)
		if r.exitCode() != 3 {
			t.Errorf("sudo=%v: wrote into /usr/bin: %+v %q", sudo, r.Status, r.Stdout)
		}
		r = b.sh("echo x >> "+agent.BinaryPath+" || exit 3", sudo)
		if r.exitCode() != 3 {
			t.Errorf("sudo=%v: appended to the agent binary", sudo)
		}
		r = b.sh("cp /bin/true "+agent.BinaryPath+" 2>/dev/null || exit 3", sudo)
		if r.exitCode() != 3 {
			t.Errorf("sudo=%v: replaced the agent binary", sudo)
		}
	}
	if _, err := os.Stat("/usr/bin/" + probe); err == nil {
		os.Remove("/usr/bin/" + probe)
		t.Fatalf("a sandbox wrote /usr/bin/%s on the host", probe)
	}
	// /etc is the sandbox's own (upper layer): writable by root, not the user.
	if r := b.sh("echo x > /etc/"+probe, false); r.exitCode() == 0 {
		t.Errorf("user wrote /etc")
	}
	b.sh("echo x > /etc/"+probe+" && echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd && rm -f /etc/os-release", true).mustOK(t)
	if _, err := os.Stat("/etc/" + probe); err == nil {
		os.Remove("/etc/" + probe)
		t.Fatalf("a sandbox's /etc write reached the host's /etc")
	}
	if data, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(data), "evil:") {
		t.Fatalf("a sandbox's passwd write reached the host")
	}
	if agentAfter := b.sh("sha256sum "+agent.BinaryPath, false).mustOK(t).Stdout; agentAfter != agentBefore {
		t.Errorf("agent binary changed: %q -> %q", agentBefore, agentAfter)
	}
	// A second sandbox sees the pristine base.
	b2 := createBox(t, b.d, "rofs2", defaultRes)
	r := b2.sh("test -e /etc/"+probe+" && echo leaked; grep -c evil /etc/passwd; test -e /etc/os-release && echo ok", false)
	if strings.Contains(r.Stdout, "leaked") || !strings.Contains(r.Stdout, "ok") || !strings.HasPrefix(r.Stdout, "0") {
		t.Errorf("one sandbox's writes show in another: %q", r.Stdout)
	}
}

// testNetwork: a sandbox reaches nothing of its host, as root or not. A
// sandbox without a network of its own has loopback alone; one with its
// own (the driver is a runtime.Addresser: a Pod, with the cluster's
// network), created with the default egress (deny-all), reaches neither a
// listener on the host's loopback nor one on the host's address toward
// it (a Pod's gateway: the node), which NetworkPolicy alone leaves open.
// Both keep their own loopback.
func testNetwork(t *testing.T, nd func(*testing.T) runtime.Driver) {
	accepted := make(chan string, 16)
	targets := []netip.AddrPort{hostListener(t, netip.MustParseAddr("127.0.0.1"), accepted)}
	b := newBox(t, nd, "net", defaultRes)
	if node, ok := hostAddrToward(t, b); ok {
		targets = append(targets, hostListener(t, node, accepted))
	} else {
		r := b.sh("ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1", false).mustOK(t)
		for _, dev := range lines(r.Stdout) {
			if dev != "lo" {
				t.Errorf("sandbox has network device %q", dev)
			}
		}
	}
	for _, to := range targets {
		for _, sudo := range []bool{false, true} {
			r := b.sh(fmt.Sprintf("timeout 3 bash -c 'echo > /dev/tcp/%s/%d' && echo connected", to.Addr(), to.Port()), sudo)
			if strings.Contains(r.Stdout, "connected") {
				t.Errorf("sudo=%v: sandbox reached the host's listener on %s", sudo, to)
			}
		}
	}
	select {
	case to := <-accepted:
		t.Errorf("the host's listener on %s accepted a connection from the sandbox", to)
	default:
	}
	// Its own loopback works, with the same probe.
	r := b.sh("python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)' > /tmp/port & p=$!; "+
		"for i in $(seq 50); do test -s /tmp/port && break; sleep 0.1; done; "+
		"timeout 3 bash -c \"echo > /dev/tcp/127.0.0.1/$(cat /tmp/port)\" && echo connected; kill $p", false)
	if !strings.Contains(r.Stdout, "connected") {
		t.Errorf("the sandbox does not reach its own loopback: %q %q", r.Stdout, r.Stderr)
	}
}

// hostAddrToward is, for a sandbox with a network of its own (its driver
// is a runtime.Addresser), the host's address on its route to the
// sandbox's address: the sandbox's gateway, an address of the node. ok is
// false for a driver without such a network.
func hostAddrToward(t *testing.T, b *box) (addr netip.Addr, ok bool) {
	t.Helper()
	a, ok := b.d.(runtime.Addresser)
	if !ok {
		return netip.Addr{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := a.Address(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := netlink.RouteGet(sb.AsSlice())
	if err != nil || len(routes) == 0 {
		t.Fatalf("the host's route to the sandbox's %s: %v", sb, err)
	}
	node, ok := netip.AddrFromSlice(routes[0].Src)
	if !ok {
		t.Fatalf("the host's route to the sandbox's %s has no source address: %+v", sb, routes[0])
	}
	return node.Unmap(), true
}

// hostListener listens on a port of addr on the host until the test ends;
// each connection it accepts is reported on accepted (never blocking).
func hostListener(t *testing.T, addr netip.Addr, accepted chan<- string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	to := ln.Addr().(*net.TCPAddr).AddrPort()
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case accepted <- to.String():
			default:
			}
		}
	}()
	return to
}

func testOOM(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "oom", sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 64})
	before, err := b.d.Stats(context.Background(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := b.run(ctx, agent.CommandRequest{Cmd: "python3", Args: []string{"-c",
		"b=[]\nwhile True: b.append(bytearray(1<<20))"}})
	if r.Status != agent.StatusKilled || r.Signal != "SIGKILL" {
		t.Errorf("memory hog: status %s signal %q exit %d stderr %q, want killed by SIGKILL", r.Status, r.Signal, r.exitCode(), clip(r.Stderr))
	}
	after, err := b.d.Stats(context.Background(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OOMKilled {
		t.Errorf("agent did not report OOMKilled (stats oom kills %d -> %d)", before.OOMKills, after.OOMKills)
	}
	if after.OOMKills <= before.OOMKills {
		t.Errorf("Stats.OOMKills did not rise: %d -> %d", before.OOMKills, after.OOMKills)
	}
	if after.MemoryLimit != 64<<20 {
		t.Errorf("memory limit %d, want %d", after.MemoryLimit, 64<<20)
	}
	b.sh("echo alive", false).mustOK(t)
}

func testForkBomb(t *testing.T, nd func(*testing.T) runtime.Driver) {
	const limit = 64
	b := newBox(t, nd, "forkbomb", sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: limit})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The leader stays (exec, no fork needed) until the timeout, which
	// kills the command's whole session: a leader that exits at once would
	// leave the bomb running past a finished command, and recovering would
	// be a race for fork slots.
	cmd, err := b.c.Start(ctx, agent.CommandRequest{Cmd: "bash", Args: []string{"-c", "f(){ f | f & }; f; exec sleep 60"}, TimeoutMs: 3000})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	st, err := b.d.Stats(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.PIDs > limit {
		t.Errorf("%d tasks, over the limit %d", st.PIDs, limit)
	}
	// The host can still fork.
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("host cannot run a process during the bomb: %v", err)
	}
	if w, err := b.c.Wait(ctx, cmd.ID); err != nil {
		t.Fatal(err)
	} else if w.Status != agent.StatusTimedOut {
		t.Errorf("the bomb's command %s, want %s", w.Status, agent.StatusTimedOut)
	}
	// Stragglers reparented to the agent die with the group kill; give the
	// agent a moment to reap them, then it must serve again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := runCmd(ctx, b.c, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", "pkill -9 bash; echo ok"}, Sudo: true})
		if err == nil && strings.Contains(r.Stdout, "ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox does not recover after a fork bomb: %v %+v", err, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := b.d.Stop(ctx, b.id); err != nil {
		t.Fatalf("stop after fork bomb: %v", err)
	}
}

func testCPUQuota(t *testing.T, nd func(*testing.T) runtime.Driver) {
	const vcpus = 0.5
	b := newBox(t, nd, "cpu", sandbox.Resources{VCPUs: vcpus, MemoryMB: 128, PIDs: 64})
	ctx := context.Background()
	before, err := b.d.Stats(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	if before.CPUQuotaFrac != vcpus {
		t.Errorf("Stats.CPUQuotaFrac %g, want %g", before.CPUQuotaFrac, vcpus)
	}
	start := time.Now()
	// Two busy loops: without a quota they would take both cores.
	b.sh("timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'; wait", false)
	wall := time.Since(start)
	after, err := b.d.Stats(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	frac := float64(after.CPUUsage-before.CPUUsage) / float64(wall)
	t.Logf("cpu %.3f of %.1f s wall (quota %g)", frac, wall.Seconds(), vcpus)
	// Only the ceiling is the driver's to keep: on a busy host the
	// sandbox gets less than its quota (0.28 of 0.5 with the host's two
	// cores loaded by other work), and Stats.CPUQuotaFrac above checks the
	// quota itself is what was asked.
	if frac > vcpus*1.15 {
		t.Errorf("cpu use %.3f, over the quota %g (+15%%)", frac, vcpus)
	}
}

func testPrivileged(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "priv", defaultRes)
	// Positive controls: the probes below must fail for want of privilege,
	// not because their tools are missing.
	b.sh("python3 -c 'import ctypes, socket' && command -v mount unshare mknod chroot hostname date", false).mustOK(t)
	py := func(code string) string { return "python3 -c '" + code + "'" }
	const libc = "import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); "
	cases := []struct{ name, script string }{
		{"mount", "mount -t tmpfs none /mnt"},
		{"remount usr rw", "mount -o remount,rw /usr"},
		{"unshare", "unshare -m true"},
		{"ptrace pid 1", py(libc + "sys.exit(0 if l.ptrace(16,1,0,0)==0 else 1)")},
		{"init_module", py(libc + "sys.exit(0 if l.syscall(175,0,0,b\"\")==0 else 1)")},
		{"reboot", py(libc + "sys.exit(0 if l.syscall(169,0xfee1dead,672274793,0xcdef0123,0)==0 else 1)")},
		{"raw socket", py("import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)")},
		{"mknod", "mknod /tmp/sda b 8 0"},
		{"chroot", "chroot / true"},
		{"sethostname", "hostname evil"},
		{"settime", "date -s 2000-01-01"},
	}
	for _, tc := range cases {
		for _, sudo := range []bool{false, true} {
			r := b.sh(tc.script+" 2>&1", sudo)
			if r.Status == agent.StatusExited && r.exitCode() == 0 {
				t.Errorf("%s (sudo=%v) succeeded: %q", tc.name, sudo, r.Stdout)
			}
		}
	}
	// ptrace of a host process: not even visible, so not attachable.
	r := b.sh(py(libc+fmt.Sprintf("sys.exit(0 if l.ptrace(16,%d,0,0)==0 else 1)", os.Getpid())), true)
	if r.exitCode() == 0 {
		t.Errorf("attached to a host process")
	}
	if _, err := b.c.Ping(context.Background()); err != nil {
		t.Fatalf("agent died: %v", err)
	}
}

func testLargeFile(t *testing.T, nd func(*testing.T) runtime.Driver) {
	const size = 100 << 20
	const mode = 0o640
	b := newBox(t, nd, "bigfile", sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	content := func() io.Reader {
		return io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), size)
	}
	want := sha256.New()
	_, _ = io.Copy(want, content())

	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "big.bin", Mode: mode, Size: size, Typeflag: tar.TypeReg})
		if err == nil {
			_, err = io.Copy(tw, content())
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	res, err := b.c.WriteTar(ctx, agent.UserHome, false, pr)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 1 || res.Bytes != size {
		t.Errorf("write result %+v", res)
	}
	rc, info, err := b.c.ReadFile(ctx, agent.UserHome+"/big.bin", false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("read back %d bytes, content differs: %v", n, !bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	if info.Mode&0o7777 != mode {
		t.Errorf("mode %o, want %o", info.Mode, mode)
	}
}

func testLargeOutput(t *testing.T, nd func(*testing.T) runtime.Driver) {
	const n = 1_000_000 // 11 bytes a line: ~11 MB on each stream
	b := newBox(t, nd, "output", defaultRes)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd, err := b.c.Start(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c",
		fmt.Sprintf("seq -f 'o%%09.0f' 1 %d & seq -f 'e%%09.0f' 1 %d >&2; wait", n, n)}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.c.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var stdout, stderr bytes.Buffer
	var final agent.Command
	for i := 0; ; i++ {
		f, err := out.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f.Kind {
		case agent.FrameStdout:
			stdout.Write(f.Data)
		case agent.FrameStderr:
			stderr.Write(f.Data)
		case agent.FrameExit:
			final.Status = "exit"
		}
		if i%64 == 0 {
			time.Sleep(time.Millisecond) // a slow reader
		}
	}
	if final.Status == "" {
		t.Errorf("no exit frame")
	}
	for _, s := range []struct {
		name   string
		prefix byte
		got    *bytes.Buffer
	}{{"stdout", 'o', &stdout}, {"stderr", 'e', &stderr}} {
		var want bytes.Buffer
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&want, "%c%09d\n", s.prefix, i)
		}
		if !bytes.Equal(s.got.Bytes(), want.Bytes()) {
			t.Errorf("%s: got %d bytes, want %d (in order)", s.name, s.got.Len(), want.Len())
		}
	}
}

func testStopKillsAll(t *testing.T, nd func(*testing.T) runtime.Driver) {
	b := newBox(t, nd, "stop", defaultRes)
	ctx := context.Background()
	b.sh("setsid sleep 1000 </dev/null >/dev/null 2>&1 & nohup sleep 1001 </dev/null >/dev/null 2>&1 & echo started", false).mustOK(t)
	if _, err := b.c.Start(ctx, agent.CommandRequest{Cmd: "sleep", Args: []string{"1002"}, Sudo: true}); err != nil {
		t.Fatal(err)
	}
	st, err := b.d.Stats(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.PIDs < 4 {
		t.Errorf("%d tasks before stop, want the agent and 3 sleeps", st.PIDs)
	}
	if err := b.d.Stop(ctx, b.id); err != nil {
		t.Fatal(err)
	}
	// Right after Stop, before Destroy: no process, no cgroup.
	if leaks := leakcheck.Snapshot(leakcheck.Scope{IDs: []string{"-"}}).Leaks(leakcheck.Snapshot(leakcheck.Scope{IDs: []string{b.id}})); len(leaks) > 0 {
		t.Errorf("left after Stop: %v", leaks)
	}
	if _, err := b.d.Agent(ctx, b.id); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("Agent after Stop: %v, want ErrNotRunning", err)
	}
	if err := b.d.Stop(ctx, b.id); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func testLifecycle(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	ctx := context.Background()
	b := createBox(t, d, "life", defaultRes)
	if _, err := d.Create(ctx, runtime.Spec{ID: b.id, Resources: defaultRes}); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("second Create with the same id: %v, want ErrConflict", err)
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, info := range list {
		if info.ID == b.id {
			found = true
			if !info.Running || info.PID <= 0 || info.Created.IsZero() {
				t.Errorf("List entry %+v, want running with a pid", info)
			}
		}
	}
	if !found {
		t.Errorf("List lacks %s: %+v", b.id, list)
	}
	c, err := d.Agent(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Agent(ctx, "rt-unknown-0"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Agent of an unknown id: %v, want ErrNotFound", err)
	}
	if err := d.Destroy(ctx, "rt-unknown-0"); err != nil {
		t.Errorf("Destroy of an unknown id: %v", err)
	}
	if _, err := d.Create(ctx, runtime.Spec{ID: "Bad/ID", Resources: defaultRes}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("Create with a bad id: %v, want ErrInvalid", err)
	}
	if err := d.Destroy(ctx, b.id); err != nil {
		t.Fatal(err)
	}
	list, _ = d.List(ctx)
	for _, info := range list {
		if info.ID == b.id {
			t.Errorf("destroyed sandbox still listed: %+v", info)
		}
	}
}

// testUser: Spec.User is resolved by the agent inside the sandbox, against
// the image's own /etc/passwd and /etc/group (the host image's here), and
// reported by ping; root and "" keep the default user; a name the image
// lacks fails Create with ErrInvalid and leaves nothing behind.
func testUser(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	for _, tc := range []struct {
		user string
		want agent.User
		out  string // id -u, id -g, $HOME, pwd
	}{
		{"", agent.User{UID: 1000, GID: 1000, Home: agent.UserHome}, "1000 1000 /home/user /home/user"},
		{"root", agent.User{UID: 1000, GID: 1000, Home: agent.UserHome}, "1000 1000 /home/user /home/user"},
		{"1234:2345", agent.User{UID: 1234, GID: 2345, Home: "/"}, "1234 2345 / /"},
		{"4321", agent.User{UID: 4321, GID: 0, Home: "/"}, "4321 0 / /"},
		// nobody's home does not exist: HOME says it, commands start in /.
		{"nobody:users", agent.User{UID: 65534, GID: 100, Home: "/nonexistent"}, "65534 100 /nonexistent /"},
	} {
		b := createBoxSpec(t, d, "user", runtime.Spec{Image: "host", Resources: defaultRes, User: tc.user})
		info, err := b.c.Ping(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := info.RunAs(); got.UID != tc.want.UID || got.GID != tc.want.GID || got.Home != tc.want.Home {
			t.Errorf("user %q: ping reports %+v, want %+v", tc.user, got, tc.want)
		}
		r := b.sh(`echo $(id -u) $(id -g) $HOME $(pwd)`, false).mustOK(t)
		if got := strings.TrimSpace(r.Stdout); got != tc.out {
			t.Errorf("user %q: %q, want %q", tc.user, got, tc.out)
		}
		if r := b.sh("id -u", true).mustOK(t); strings.TrimSpace(r.Stdout) != "0" {
			t.Errorf("user %q: sudo runs as %q", tc.user, r.Stdout)
		}
	}

	id := newID("nouser")
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.Create(ctx, runtime.Spec{ID: id, Image: "host", Resources: defaultRes, User: "nosuch"}); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != agent.CodeUserUnknown {
		d.Destroy(ctx, id)
		t.Fatalf("create with an unknown user: %v, want ErrInvalid %s", err, agent.CodeUserUnknown)
	}
	infos, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID == id {
			t.Errorf("a failed create left %+v", in)
		}
	}
}

// testDiskCap fills a sandbox's capped writable layer, by bytes and then
// by files: both fail with ENOSPC inside, commands keep running, freeing
// space makes room again, and Stats report the disk. Errors go through
// /tmp, a tmpfs.
func testDiskCap(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	if !d.Capabilities().DiskCap {
		t.Skip("the driver cannot cap disks on this host")
	}
	const diskMB = 64
	b := createBox(t, d, "disk", sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 256, DiskMB: diskMB})
	if d.Capabilities().DiskCapStops {
		testDiskCapStops(t, d, b, diskMB)
		return
	}
	// Each command's log is a new file in the agent's state dir: on a
	// mount of its own commands start whatever the layer holds; on the
	// layer itself none starts while it is full, so the filling command
	// leaves a little room itself.
	var leaveRoom, leaveInodes string
	if b.sh("grep -q ' "+agent.StateDir+" ' /proc/self/mountinfo", false).exitCode() != 0 {
		t.Logf("%s is on the writable layer: commands cannot start while it is full; each fill frees a little", agent.StateDir)
		leaveRoom, leaveInodes = "; rc=$?; truncate -s -4M big; exit $rc", "; rc=$?; rm -f 1 2 3 4; exit $rc"
	}
	// Twice the cap, into the user's home (on the writable layer).
	if r := b.sh("head -c 134217728 /dev/zero > big 2>/tmp/err"+leaveRoom, false); r.exitCode() == 0 {
		t.Fatalf("writing twice the disk cap succeeded")
	}
	b.sh("grep -q 'No space left on device' /tmp/err", false).mustOK(t)
	st, err := d.Stats(context.Background(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.DiskLimitBytes > diskMB<<20 || st.DiskLimitBytes < diskMB<<20*8/10 || st.DiskBytes < st.DiskLimitBytes*85/100 {
		t.Errorf("stats of a full disk: %d of %d bytes used", st.DiskBytes, st.DiskLimitBytes)
	}
	if st.DiskInodesLimit != diskMB<<20/8192 {
		t.Errorf("stats: %d inodes, want %d", st.DiskInodesLimit, diskMB<<20/8192)
	}
	if r := b.sh("echo still here", false).mustOK(t); r.Stdout != "still here\n" {
		t.Errorf("a command on a full disk: stdout %q", r.Stdout)
	}
	b.sh("rm big && head -c 1048576 /dev/zero > small", false).mustOK(t)

	// Files: one inode each, until the disk's inode count is used up.
	if r := b.sh("mkdir many && cd many && seq 1 20000 | xargs touch 2>/tmp/err"+leaveInodes, false); r.exitCode() == 0 {
		t.Fatalf("20000 files on a disk of %d inodes succeeded", diskMB<<20/8192)
	}
	b.sh("grep -q 'No space left on device' /tmp/err", false).mustOK(t)
	if r := b.sh("echo still here", false).mustOK(t); r.Stdout != "still here\n" {
		t.Errorf("a command with no inode left: stdout %q", r.Stdout)
	}
	b.sh("rm -r many && touch one-more", false).mustOK(t)
}

// testDiskCapStops: a driver whose disk cap stops the sandbox past it
// (Kubernetes: the kubelet evicts the Pod) lets writes within the cap
// through, reports the cap, and stops a sandbox that wrote twice it, saying
// why, within a few of its housekeeping periods.
func testDiskCapStops(t *testing.T, d runtime.Driver, b *box, diskMB int64) {
	st, err := d.Stats(context.Background(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.DiskLimitBytes != uint64(diskMB)<<20 {
		t.Errorf("stats: disk limit %d bytes, want %d", st.DiskLimitBytes, diskMB<<20)
	}
	b.sh("head -c 16777216 /dev/zero > small && rm small", false).mustOK(t)
	// The write itself may succeed, or end with the sandbox.
	b.sh("head -c "+strconv.FormatInt(diskMB<<21, 10)+" /dev/zero > big; sync", false)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		infos, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(infos, func(in runtime.Info) bool { return in.ID == b.id })
		if i < 0 || !infos[i].Running {
			why := "gone from the list"
			if i >= 0 {
				why = infos[i].Reason
			}
			t.Logf("stopped past its disk cap: %s", why)
			if why == "" {
				t.Error("the driver says no reason for the stop")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a sandbox that wrote twice its %d MiB disk cap still runs after 3 minutes", diskMB)
		}
		time.Sleep(2 * time.Second)
	}
}
