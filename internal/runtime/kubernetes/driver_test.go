package kubernetes

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/runtimetest"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }

// env is what every cluster test of this package shares: the cluster, a
// registry on loopback the node pulls from, and the agent and host images
// pushed there once.
type env struct {
	c                     *k8stest.Cluster
	registry              string
	agentImage, hostImage string
	hostBinds             []runtime.Bind
}

var (
	envOnce sync.Once
	shared  *env
	envErr  error
)

// testEnv returns the shared environment, setting it up on first use. The
// registry lives as long as the test binary (its server is closed by the
// process's end, not a test's cleanup), since every test pulls from it.
func testEnv(t *testing.T) *env {
	t.Helper()
	c := k8stest.Require(t)
	envOnce.Do(func() { shared, envErr = setup(t, c) })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return shared
}

// setup is done under the first test's t, with a registry that outlives
// it: a TB whose cleanups never run.
func setup(t *testing.T, c *k8stest.Cluster) (*env, error) {
	im := c.PushSandboxImages(&keepTB{TB: t})
	return &env{c: c, registry: im.Registry, agentImage: im.Agent, hostImage: im.Host, hostBinds: im.HostBinds}, nil
}

// keepTB is a TB whose cleanups are dropped: what it sets up lives until
// the test binary exits.
type keepTB struct{ testing.TB }

func (keepTB) Cleanup(func()) {}

// newDriver is a driver on a namespace of its own, which the test deletes
// at its end (waiting until its containers are gone); opts change its
// Config.
func (e *env) newDriver(t *testing.T, opts ...func(*Config)) *Driver {
	t.Helper()
	cfg := Config{
		Client:     e.c.Client,
		Namespace:  e.c.Namespace(t),
		AgentImage: e.agentImage,
		HostImage:  HostImage{Ref: e.hostImage, ReadOnlyBinds: e.hostBinds},
		// Two cores: the suite's parallel sandboxes could not all be
		// scheduled with their whole limits requested.
		RequestFraction: 0.02,
		CgroupVersion:   1,
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// runtimeClass creates a RuntimeClass of the node's runtime handler
// named handler, deleted at the test's end, and returns its name; it
// fails t if the node has no such handler.
func (e *env) runtimeClass(t *testing.T, handler string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := e.c.Client.CoreV1().Nodes().Get(ctx, e.c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(node.Status.RuntimeHandlers, func(h corev1.NodeRuntimeHandler) bool { return h.Name == handler }) {
		t.Fatalf("node %s has no runtime handler %q (hack/k8s/up.sh adds it): %+v", e.c.Node, handler, node.Status.RuntimeHandlers)
	}
	rc, err := e.c.Client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "paddock-test-"}, Handler: handler}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.c.Client.NodeV1().RuntimeClasses().Delete(context.Background(), rc.Name, metav1.DeleteOptions{})
	})
	return rc.Name
}

// TestConformance runs the runtime conformance suite against Pods on the
// test cluster, through the node's runtime handler "paddock": runc behind
// cmd/paddock-runc, which gives each Pod a user namespace owned by its
// range's first uid and keeps it off its node's addresses (the case
// Network; the other tests here use the node's plain runc).
func TestConformance(t *testing.T) {
	e := testEnv(t)
	rc := e.runtimeClass(t, "paddock")
	runtimetest.Run(t, runtimetest.Harness{
		NewDriver:   func(t *testing.T) runtime.Driver { return e.newDriver(t, func(c *Config) { c.RuntimeClass = rc }) },
		Image:       e.image,
		Restore:     e.restore,
		HostPID:     func(t *testing.T, id string) int { return e.hostPID(t, id, "sandbox", true) },
		Volume:      harnessVolume,
		VolumeMount: e.claimAt,
		// The Pod's container has no_new_privs (allowPrivilegeEscalation:
		// false), so a set-user-ID file raises no one, and the runtime's
		// device cgroup lets no host block device open.
		PlainVolumeMounts: "a claim is mounted by the kubelet and the container runtime, without nosuid or nodev; no_new_privs and the device cgroup guard instead",
	})
}

// hostPID finds, on this host (the test cluster's node), a process of
// sandbox id's Pod's container: its agent (pid 1 inside) if agent, else
// the first other one. 0 if there is none (yet).
func (e *env) hostPID(t *testing.T, id, container string, agent bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Every test's driver has a namespace of its own: look in all.
	pods, err := e.c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: labelPod + "=" + podName(id)})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the Pod of %s: %d found, %v", id, len(pods.Items), err)
	}
	cid := ""
	for _, cs := range pods.Items[0].Status.ContainerStatuses {
		if cs.Name == container {
			_, cid, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if cid == "" {
		t.Fatalf("the Pod of %s has no container %s: %+v", id, container, pods.Items[0].Status.ContainerStatuses)
	}
	// The container's processes are those in its cgroup, named by its id
	// whatever the kubelet's cgroup driver and QoS class.
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cg, err := os.ReadFile("/proc/" + p.Name() + "/cgroup")
		if err != nil || !strings.Contains(string(cg), cid) {
			continue
		}
		status, err := os.ReadFile("/proc/" + p.Name() + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				if isInit := len(f) > 1 && f[len(f)-1] == "1"; isInit == agent {
					return pid
				}
			}
		}
	}
	return 0
}

// hostUID is pid's real uid on the host and the first host uid of its
// user namespace's mapping of uid 0.
func hostUID(t *testing.T, pid int) (uid, base uint64) {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				uid, _ = strconv.ParseUint(f[0], 10, 32)
			}
		}
	}
	m, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(m)); len(f) == 3 && f[0] == "0" {
		base, _ = strconv.ParseUint(f[1], 10, 32)
	} else {
		t.Fatalf("uid_map of %d: %q, want one range from 0", pid, m)
	}
	return uid, base
}

// TestUserNamespace: each Pod has a user namespace of its own (the
// default, Config.HostUsers false): the sandbox's user, uid 1000 in both
// of two Pods, is a different unprivileged host uid in each, and what the
// init container wrote into the agent's emptyDir is root's inside.
func TestUserNamespace(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	if !d.Capabilities().UserNS {
		t.Fatal("Capabilities().UserNS is false by default")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	uids := map[uint64]string{}
	for _, id := range []string{"k8s-userns-a", "k8s-userns-b"} {
		c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		t.Cleanup(func() { d.Destroy(context.Background(), id) })
		if got := sh(t, c, "id -u; stat -c %u:%g "+agentDir+"/agent", false); got != "1000\n0:0\n" {
			t.Errorf("%s: id and the agent's owner: %q, want 1000 and 0:0", id, got)
		}
		if _, err := c.Start(ctx, agent.CommandRequest{Cmd: "sleep", Args: []string{"300"}}); err != nil {
			t.Fatal(err)
		}
		pid := 0
		for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			pid = e.hostPID(t, id, "sandbox", false)
		}
		if pid == 0 {
			t.Fatalf("%s: no process of the user's found on the host", id)
		}
		uid, base := hostUID(t, pid)
		t.Logf("%s: uid 1000 inside is host uid %d (uid_map: 0 -> %d)", id, uid, base)
		if uid == 1000 || uid != base+1000 || base == 0 {
			t.Errorf("%s: uid 1000 inside is host uid %d, its range starts at %d: want base+1000 of a range not from 0", id, uid, base)
		}
		if other, ok := uids[uid]; ok {
			t.Errorf("%s and %s: uid 1000 is host uid %d in both", other, id, uid)
		}
		uids[uid] = id
	}
}

// sh runs script in the sandbox and returns its stdout; it fails t unless
// the script exits 0.
func sh(t *testing.T, c *agent.Client, script string, sudo bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", script}, Sudo: sudo})
	if err != nil {
		t.Fatalf("start %q: %v", script, err)
	}
	out, err := c.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var stdout, stderr strings.Builder
	for {
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
		}
	}
	done, err := c.Wait(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.ExitCode == nil || *done.ExitCode != 0 {
		t.Fatalf("%q: %s %v\nstdout: %s\nstderr: %s", script, done.Status, done.ExitCode, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// nsGetOwnerUID is NS_GET_OWNER_UID, _IO(0xb7, 0x4) (linux/nsfs.h).
const nsGetOwnerUID = 0xb7<<8 | 0x4

// TestUserNamespaceOwner: through the node's runtime handler "paddock"
// (runc behind cmd/paddock-runc) a Pod's user namespace is owned by its
// range's first host uid, so the kernel charges the Pod's per-user counts
// there; through plain runc it is owned by host root (containerd makes
// it), which every such Pod shares. Once the Pod is gone the wrapper has
// nothing left in its state dir.
func TestUserNamespaceOwner(t *testing.T) {
	e := testEnv(t)
	rc := e.runtimeClass(t, "paddock")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name, class string
		rootOwned   bool
	}{
		{"runc", "", true},
		{"paddock-runc", rc, false},
	} {
		d := e.newDriver(t, func(c *Config) { c.RuntimeClass = tc.class })
		id := "k8s-owner-" + tc.name
		c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		pid := e.hostPID(t, id, "sandbox", true)
		if pid == 0 {
			t.Fatalf("%s: the agent is not on this host", tc.name)
		}
		_, base := hostUID(t, pid)
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/user")
		if err != nil {
			t.Fatal(err)
		}
		var owner uint32
		_, _, e1 := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nsGetOwnerUID, uintptr(unsafe.Pointer(&owner)))
		f.Close()
		if e1 != 0 {
			t.Fatal(e1)
		}
		want := uint32(base)
		if tc.rootOwned {
			want = 0
		}
		t.Logf("%s: the Pod's user namespace maps 0 to %d and is owned by host uid %d", tc.name, base, owner)
		if owner != want {
			t.Errorf("%s: the Pod's user namespace is owned by host uid %d, want %d", tc.name, owner, want)
		}
		if err := d.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// up.sh bakes WORK/run/paddock-runc (WORK holds the admin kubeconfig)
	// into the wrapper as its state dir; the shim's runc delete of each
	// container empties it, shortly after the Pod stops.
	state := filepath.Join(filepath.Dir(e.c.Kubeconfig), "run", "paddock-runc")
	var left []os.DirEntry
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if left, _ = os.ReadDir(state); len(left) == 0 {
			return
		}
	}
	t.Errorf("left in the wrapper's state dir %s: %v", state, left)
}

// TestNoUserNamespaceNode: on a node whose runtime cannot give a Pod a
// user namespace (the test cluster's handler debian-runc: Debian's runc
// 1.1), Create fails within seconds with no_user_namespace and the way
// out, not at the start timeout, and leaves nothing; with Config.HostUsers
// the sandbox runs there.
func TestNoUserNamespaceNode(t *testing.T) {
	e := testEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, err := e.c.Client.CoreV1().Nodes().Get(ctx, e.c.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handler := ""
	for _, h := range node.Status.RuntimeHandlers {
		if f := h.Features; h.Name != "" && f != nil && f.UserNamespaces != nil && !*f.UserNamespaces {
			handler = h.Name
		}
	}
	if handler == "" {
		t.Skipf("no runtime handler of node %s lacks user namespaces (up.sh adds debian-runc when Debian's runc is installed): %+v",
			e.c.Node, node.Status.RuntimeHandlers)
	}
	cfg := e.newDriver(t).cfg
	cfg.RuntimeClass = e.runtimeClass(t, handler)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: "k8s-no-userns", Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}}
	start := time.Now()
	_, err = d.Create(ctx, spec)
	t.Logf("create failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, sandbox.ErrUnavailable) || sandbox.CodeOf(err) != "no_user_namespace" || !strings.Contains(err.Error(), "--k8s-host-users") {
		d.Destroy(ctx, spec.ID)
		t.Fatalf("Create = %v, want ErrUnavailable no_user_namespace naming --k8s-host-users", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("the refusal took %v to be reported", time.Since(start))
	}
	if list, err := d.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("after the failed create: List = %+v, %v", list, err)
	}

	cfg.HostUsers = true
	shared, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := shared.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Cleanup(func() { shared.Destroy(context.Background(), spec.ID) })
	if got := sh(t, c, "id -u", false); got != "1000\n" {
		t.Errorf("id -u in the node's user namespace: %q", got)
	}
}

// TestSandboxPod: a sandbox is a Pod whose agent, reached at the Pod IP,
// runs commands and serves files; a server in it answers the host at the
// Pod IP; the credential is nowhere a command (even with sudo) can read
// it, and nothing answers without it; a second driver (a restarted
// paddock) re-adopts the sandbox from the API server; Stop and Destroy
// leave the Secret until the end, then nothing.
func TestSandboxPod(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "k8s-pod-1"
	start := time.Now()
	c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create took %v", time.Since(start).Round(time.Millisecond))
	defer c.Close()
	t.Cleanup(func() { d.Destroy(context.Background(), id) })

	if got := sh(t, c, "echo hi; id -u", false); got != "hi\n1000\n" {
		t.Errorf("stdout %q", got)
	}
	if _, err := c.WriteFile(ctx, "/home/user/f.txt", 0o640, false, strings.NewReader("content\n")); err != nil {
		t.Fatal(err)
	}
	rc, _, err := c.ReadFile(ctx, "/home/user/f.txt", false)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if string(data) != "content\n" {
		t.Errorf("read back %q", data)
	}

	// A port at the Pod IP.
	pod, err := e.c.Client.CoreV1().Pods(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, agent.CommandRequest{Cmd: "python3", Args: []string{"-m", "http.server", "8080"}}); err != nil {
		t.Fatal(err)
	}
	ip, err := d.Address(ctx, id)
	if err != nil || ip.String() != pod.Status.PodIP {
		t.Fatalf("Address = %v, %v; the Pod's IP is %s", ip, err, pod.Status.PodIP)
	}
	addr := net.JoinHostPort(ip.String(), "8080")
	for deadline := time.Now().Add(20 * time.Second); ; {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host cannot reach %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ports, err := c.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.Port == agent.TCPPort {
			t.Errorf("the agent's own port is listed: %v", ports)
		}
	}
	checkNetworkBytes(t, d, c, id, addr)

	// The credential: refused without it, and nowhere inside.
	secret, err := e.c.Client.CoreV1().Secrets(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := string(secret.Data[tokenKey])
	agentAddr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(agent.TCPPort))
	if _, err := agent.TCPClient(agentAddr, strings.Repeat("0", len(token))).Ping(ctx); err == nil {
		t.Error("the agent answered a wrong credential")
	}
	for _, sudo := range []bool{false, true} {
		got := sh(t, c, "ls -A "+credDir+"; cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable; "+
			"grep -rlsF '"+token+"' /run /tmp /etc /home /root /.paddock /proc/1/cmdline /proc/self/environ; true", sudo)
		if got != "" {
			t.Errorf("sudo=%v: the credential or its traces are visible inside: %q", sudo, got)
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, v := range c.VolumeMounts {
			if v.Name == "secret" {
				t.Errorf("container %s mounts the Secret", c.Name)
			}
		}
	}

	// A restarted paddock finds the sandbox on the API server.
	d2, err := New(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := d2.Agent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := sh(t, c2, "cat /home/user/f.txt", false); got != "content\n" {
		t.Errorf("re-adopted: %q", got)
	}
	c2.Close()
	list, err := d2.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id || !list[0].Running {
		t.Errorf("List = %+v, %v", list, err)
	}
	np, err := e.c.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if err != nil || len(np.Spec.Egress) != 0 || np.Spec.PodSelector.MatchLabels[labelPod] != podName(id) {
		t.Errorf("default egress policy %+v, %v: want deny-all for the Pod", np, err)
	}

	if err := d2.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Agent(ctx, id); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("Agent after Stop: %v, want ErrNotRunning", err)
	}
	if _, err := d2.Address(ctx, id); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("Address after Stop: %v, want ErrNotRunning", err)
	}
	if list, err := d.List(ctx); err != nil || len(list) != 1 || list[0].Running {
		t.Errorf("List after Stop = %+v, %v: want the stopped sandbox", list, err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if list, err := d.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after Destroy = %+v, %v", list, err)
	}
	if _, err := d.Agent(ctx, id); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Agent after Destroy: %v, want ErrNotFound", err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// checkNetworkBytes: a known download from the sandbox's port at addr
// (an http.server serving the home directory) shows in Stats as the
// sandbox's egress within 5% (and not less: headers only add), and the
// request as some ingress.
func checkNetworkBytes(t *testing.T, d *Driver, c *agent.Client, id, addr string) {
	t.Helper()
	ctx := t.Context()
	const size = 8 << 20
	sh(t, c, "head -c "+strconv.Itoa(size)+" /dev/zero > /home/user/blob", false)
	before, err := d.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/blob")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	after, err := d.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	tx, rx := after.NetworkTxBytes-before.NetworkTxBytes, after.NetworkRxBytes-before.NetworkRxBytes
	t.Logf("downloaded %d bytes: the Pod counted tx %d (%.2f%% over), rx %d", n, tx, (float64(tx)/size-1)*100, rx)
	if tx < size || float64(tx) > 1.05*size || rx == 0 {
		t.Errorf("network bytes tx %d rx %d for a %d-byte download: want tx within 5%% (and not less), rx > 0", tx, rx, size)
	}

	// The same file read through the agent is paddock's traffic, not the
	// sandbox's (as over a runc sandbox's unix socket): only the packets'
	// headers may show.
	rc, _, err := c.ReadFile(ctx, "/home/user/blob", false)
	if err != nil {
		t.Fatal(err)
	}
	n, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n != size {
		t.Fatalf("read %d bytes through the agent (%v), want %d", n, err, size)
	}
	last, err := d.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	own := last.NetworkTxBytes - after.NetworkTxBytes
	t.Logf("read %d bytes through the agent: the Pod counted tx %d", n, own)
	if float64(own) > 0.05*size {
		t.Errorf("a %d-byte read through the agent counted as %d bytes of the sandbox's egress, want under 5%%", size, own)
	}
}

// TestCreateFails: a Create that cannot succeed (an image the registry
// lacks, an image user the image lacks) fails with the reason and leaves
// nothing on the API server.
func TestCreateFails(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	for _, tc := range []struct {
		name string
		spec runtime.Spec
		kind error
	}{
		{"missing image", runtime.Spec{Image: e.registry + "/paddock/missing:none"}, sandbox.ErrInvalid},
		{"unknown user", runtime.Spec{Image: sandbox.HostImage, User: "nosuch"}, sandbox.ErrInvalid},
		{"volume", runtime.Spec{Image: sandbox.HostImage, Mounts: []runtime.Mount{{Source: "/tmp", Dest: "/data"}}}, sandbox.ErrUnsupported},
		{"domain egress", runtime.Spec{Image: sandbox.HostImage, Egress: &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"example.com"}}}, sandbox.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			tc.spec.ID = "k8s-fail-" + strings.ReplaceAll(tc.name, " ", "-")
			tc.spec.Resources = sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}
			if _, err := d.Create(ctx, tc.spec); !errors.Is(err, tc.kind) {
				d.Destroy(ctx, tc.spec.ID)
				t.Fatalf("Create = %v, want %v", err, tc.kind)
			}
			list, err := d.List(ctx)
			if err != nil || len(list) != 0 {
				t.Errorf("after a failed create: List = %+v, %v", list, err)
			}
			for _, kind := range []string{"pods", "secrets"} {
				n := 0
				switch kind {
				case "pods":
					l, _ := e.c.Client.CoreV1().Pods(d.cfg.Namespace).List(ctx, metav1.ListOptions{})
					n = len(l.Items)
				case "secrets":
					l, _ := e.c.Client.CoreV1().Secrets(d.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelManagedBy + "=" + managedBy})
					n = len(l.Items)
				}
				if n != 0 {
					t.Errorf("%d %s left", n, kind)
				}
			}
		})
	}
}

// TestEgressPolicyAccepted: the API server accepts the NetworkPolicy of
// every mode (its validation of ipBlocks and their exceptions is stricter
// than a unit test's).
func TestEgressPolicyAccepted(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	pfx := netip.MustParsePrefix
	for _, p := range []*sandbox.NetworkPolicy{
		nil,
		{Mode: modeAllowAll, DenyCIDRs: []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8::/32")}},
		{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8::/32"), pfx("10.0.0.0/8")}, DenyCIDRs: []netip.Prefix{pfx("203.0.113.128/25")}},
	} {
		np, err := networkPolicy(d.meta("egress-1"), p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.c.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Create(t.Context(), np, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("policy %+v: %v", p, err)
		}
	}
}

// TestUpdateEgress: a running sandbox's egress changes in place: its
// NetworkPolicy's spec is the new policy's (what the traffic does is
// TestEgressEnforced's),
// the Pod runs on untouched, a policy Create refuses changes nothing, and
// the object, where the policy lives, is what a restarted driver finds.
func TestUpdateEgress(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "k8s-egress-1"
	pfx := netip.MustParsePrefix
	first := &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx("203.0.113.0/24")}}
	c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}, Egress: first})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Cleanup(func() { d.Destroy(context.Background(), id) })
	pods, nps := e.c.Client.CoreV1().Pods(d.cfg.Namespace), e.c.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace)
	pod, err := pods.Get(ctx, podName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(p *sandbox.NetworkPolicy) {
		t.Helper()
		want, err := networkPolicy(d.meta(id), p)
		if err != nil {
			t.Fatal(err)
		}
		np, err := nps.Get(ctx, podName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(np.Spec, want.Spec) {
			t.Errorf("the NetworkPolicy's spec:\n%+v\nwant (policy %+v)\n%+v", np.Spec, p, want.Spec)
		}
	}
	check(first)

	second := &sandbox.NetworkPolicy{Mode: modeAllowAll, DenyCIDRs: []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8::/32")}}
	if err := d.UpdateEgress(ctx, id, second); err != nil {
		t.Fatal(err)
	}
	check(second)
	if got := sh(t, c, "echo still-here", false); got != "still-here\n" {
		t.Errorf("the sandbox after the update: %q", got)
	}
	if p, err := pods.Get(ctx, podName(id), metav1.GetOptions{}); err != nil || p.UID != pod.UID || !podRunning(p) {
		t.Errorf("the Pod after the update: %v; want the same Pod (%s) running", err, pod.UID)
	}
	for _, bad := range []*sandbox.NetworkPolicy{
		{Mode: modeCustom, AllowDomains: []string{"example.com"}},
		{Mode: "open"},
	} {
		if err := d.UpdateEgress(ctx, id, bad); err == nil {
			t.Errorf("UpdateEgress(%+v) succeeded", bad)
		}
	}
	check(second)

	// A restarted paddock (a new driver) changes the same object.
	d2, err := New(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.UpdateEgress(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	check(nil)
	if err := d2.UpdateEgress(ctx, "k8s-egress-unknown", second); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("UpdateEgress of an unknown sandbox = %v, want ErrNotFound", err)
	}
}

// TestAdopt: a replica takes over a sandbox another replica made in the
// same namespace: after Adopt it lists it running (the other replica
// does not), reaches its agent and address with the sandbox's state
// intact, and its Destroy leaves nothing.
func TestAdopt(t *testing.T) {
	e := testEnv(t)
	base := e.newDriver(t)
	owned := func(owner string) *Driver {
		cfg := base.cfg
		cfg.Owner = owner
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := owned("paddock-a"), owned("paddock-b")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "k8s-adopt-1"
	c, err := a.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Destroy(context.Background(), id) })
	sh(t, c, "echo made-by-a > /home/user/f.txt", false)
	c.Close()

	for range 2 { // idempotent
		info, err := b.Adopt(ctx, id)
		if err != nil || info.ID != id || !info.Running {
			t.Fatalf("Adopt = %+v, %v; want %s running", info, err, id)
		}
	}
	if list, err := b.List(ctx); err != nil || len(list) != 1 || list[0].ID != id || !list[0].Running {
		t.Errorf("the adopter's List = %+v, %v; want the sandbox running", list, err)
	}
	if list, err := a.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("the old owner's List = %+v, %v; want nothing", list, err)
	}
	c2, err := b.Agent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := sh(t, c2, "cat /home/user/f.txt", false); got != "made-by-a\n" {
		t.Errorf("the adopted sandbox's file: %q", got)
	}
	c2.Close()
	if _, err := b.Address(ctx, id); err != nil {
		t.Errorf("Address: %v", err)
	}
	// The Pod's relabelling is conditional on its UID: another Pod of
	// the same name is not taken.
	pods := e.c.Client.CoreV1().Pods(base.cfg.Namespace)
	if _, err := pods.Patch(ctx, podName(id), types.MergePatchType, a.ownerPatch("not-its-uid"), metav1.PatchOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("a relabelling with another UID: %v, want it refused (invalid: the UID is immutable)", err)
	}
	if p, err := pods.Get(ctx, podName(id), metav1.GetOptions{}); err != nil || p.Labels[labelOwner] != "paddock-b" {
		t.Errorf("the Pod's owner after a refused relabelling: %v, %v", p.Labels, err)
	}

	if err := b.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*Driver{a, b} {
		if list, err := d.List(ctx); err != nil || len(list) != 0 {
			t.Errorf("List of %s after Destroy = %+v, %v", d.cfg.Owner, list, err)
		}
	}
	name := podName(id)
	if _, err := e.c.Client.CoreV1().Secrets(base.cfg.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Error("the Secret is left")
	}
	if _, err := e.c.Client.NetworkingV1().NetworkPolicies(base.cfg.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Error("the NetworkPolicy is left")
	}
	if _, err := b.Adopt(ctx, id); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Adopt after Destroy = %v, want ErrNotFound", err)
	}
}

// harnessVolume is a directory holding "seed", writable by the sandbox
// user, as the runc driver's harness makes.
func harnessVolume(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seed"), []byte("seed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// claimAt is a claim in d's namespace bound to a PersistentVolume at dir
// (hostPath: the node is this host), as a volume is mounted on Pods. The
// claim and the volume go when t ends, after the sandbox that mounts it.
func (e *env) claimAt(t *testing.T, d runtime.Driver, dir string) runtime.Mount {
	t.Helper()
	ns := d.(*Driver).cfg.Namespace
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "conformance-" + podName(t.Name())
	none := ""
	dirType := corev1.HostPathDirectory
	pv, err := e.c.Client.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"paddock.dev/test": "true"}},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              none,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: name},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := e.c.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
		if err := e.c.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
		for {
			if _, err := e.c.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return
			} else if ctx.Err() != nil {
				t.Errorf("persistent volume %s not gone: %v", pv.Name, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	_, err = e.c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &none, VolumeName: pv.Name,
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return runtime.Mount{Claim: name}
}
