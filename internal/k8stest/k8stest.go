// Package k8stest gives tests a real one-node Kubernetes cluster on this
// machine: the one hack/k8s/up.sh brings up (kube-apiserver, controller
// manager, scheduler and kubelet over containerd and runc), a clientset for
// it, and a fresh namespace per test. It is test support, like imagetest and
// leakcheck: no production code imports it.
//
// The cluster tests are slow to start (about 15 s) and need root and the
// binaries hack/k8s/build.sh caches, so they run only when PADDOCK_TEST_K8S=1;
// otherwise Require skips and says so. With PADDOCK_K8S_KUBECONFIG set to
// the admin kubeconfig of a cluster up.sh started, tests use that cluster
// and leave it running; without it, the first Require of a test binary
// brings one up in a temp dir and Main tears it down when the tests end. A
// package that uses Require therefore has
//
//	func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }
//
// Bring-up and teardown touch the host's network, cgroups and iptables:
// run such tests under the host-wide lock (flock /tmp/paddock-root-tests.lock).
package k8stest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// Environment variables.
const (
	// EnvEnable turns the cluster tests on ("1").
	EnvEnable = "PADDOCK_TEST_K8S"
	// EnvKubeconfig names a running cluster's admin kubeconfig to use
	// instead of starting one. When cluster.env (written by up.sh) sits
	// beside it, image import works too.
	EnvKubeconfig = "PADDOCK_K8S_KUBECONFIG"
)

// Cluster is a running cluster and the ways in that tests need.
type Cluster struct {
	// Config and Client speak to the API server as cluster-admin.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is the admin kubeconfig file Config was read from, for
	// what takes a path (paddock's --kubeconfig).
	Kubeconfig string
	// Node is the only node's name; NodeIP its address (local to this
	// machine). Pods get addresses in PodCIDR, reachable from the host.
	Node, NodeIP, PodCIDR string
	// NetworkPolicy names the agent that enforces NetworkPolicies on the
	// Pods (up.sh runs kube-network-policies); empty when none does, or
	// when unknown (a bare kubeconfig): Pods' egress is then open.
	NetworkPolicy string
	// TestNet is a range (TEST-NET-2) Pods route to the host and no
	// further: a test that routes addresses of it into a network namespace
	// of its own has egress targets a NetworkPolicy may allow, which no
	// private address is for paddock's drivers. Empty when unknown.
	TestNet string

	env  map[string]string // cluster.env; empty for a bare kubeconfig
	work string            // the dir up.sh ran in, when this process started it
}

var (
	mainRan bool // Main is running this binary's tests

	once     sync.Once
	cluster  *Cluster
	startErr error
)

// Main runs the tests and then tears down the cluster if a test brought one
// up. It returns the exit code for os.Exit: the tests' own, or 1 when the
// teardown failed or left something behind.
func Main(m *testing.M) int {
	mainRan = true
	code := m.Run()
	if cluster != nil && cluster.work != "" {
		start := time.Now()
		out, err := runScript("down.sh", cluster.work)
		os.Stderr.Write(out) // its steps, and anything it found new on the machine
		if err != nil {
			fmt.Fprintf(os.Stderr, "k8stest: teardown of %s failed: %v\n", cluster.work, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "k8stest: cluster torn down in %s\n", time.Since(start).Round(time.Millisecond))
	}
	return code
}

// Require returns the cluster, starting it on first use, or skips tb when
// the cluster tests are off. A cluster that fails to start fails tb: with
// EnvEnable set, a missing cluster is a broken setup, not a reason to skip.
func Require(tb testing.TB) *Cluster {
	tb.Helper()
	if os.Getenv(EnvEnable) != "1" {
		tb.Skipf("needs a Kubernetes cluster: set %s=1 (root, and the binaries of hack/k8s/build.sh; slow)", EnvEnable)
	}
	if !mainRan {
		tb.Fatal("k8stest: the package's TestMain must call k8stest.Main, which tears the cluster down")
	}
	once.Do(func() { cluster, startErr = start() })
	if startErr != nil {
		tb.Fatalf("k8stest: %v", startErr)
	}
	return cluster
}

// start connects to the cluster named by EnvKubeconfig, or brings one up.
func start() (*Cluster, error) {
	if kc := os.Getenv(EnvKubeconfig); kc != "" {
		env, err := readEnvFile(filepath.Join(filepath.Dir(kc), "cluster.env"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return connect(kc, env, "")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bringing up a cluster needs root")
	}
	work, err := os.MkdirTemp("", "paddock-k8s-")
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	out, err := runScript("up.sh", work)
	if err != nil {
		os.Remove(work) // up.sh tore down and emptied it
		return nil, fmt.Errorf("bring-up failed: %w\n%s", err, out)
	}
	if testing.Verbose() {
		os.Stderr.Write(out)
	}
	fmt.Fprintf(os.Stderr, "k8stest: cluster up in %s (%s)\n", time.Since(begin).Round(time.Millisecond), work)
	env, err := readEnvFile(filepath.Join(work, "cluster.env"))
	if err == nil {
		var c *Cluster
		if c, err = connect(env["KUBECONFIG"], env, work); err == nil {
			return c, nil
		}
	}
	if out, derr := runScript("down.sh", work); derr != nil {
		err = fmt.Errorf("%w (and teardown: %v\n%s)", err, derr, out)
	}
	return nil, err
}

func connect(kubeconfig string, env map[string]string, work string) (*Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	// Tests create in bursts; the default 5 QPS would pace them.
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Config: cfg, Client: cs, Kubeconfig: kubeconfig, env: env, work: work,
		Node: env["PADDOCK_K8S_NODE"], NodeIP: env["PADDOCK_K8S_NODE_IP"], PodCIDR: env["PADDOCK_K8S_POD_CIDR"],
		NetworkPolicy: env["PADDOCK_K8S_NETWORK_POLICY"], TestNet: env["PADDOCK_K8S_TEST_NET"]}
	if c.Node == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		if len(nodes.Items) != 1 {
			return nil, fmt.Errorf("want a one-node cluster, found %d nodes", len(nodes.Items))
		}
		c.Node = nodes.Items[0].Name
	}
	return c, nil
}

// runScript runs hack/k8s/<script> with args and returns its output.
func runScript(script string, args ...string) ([]byte, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	keepDescriptors()
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "hack", "k8s", script)}, args...)...)
	cmd.Dir = root
	return cmd.CombinedOutput()
}

// repoRoot is the directory of the go.mod above the working directory (a
// test runs in its package's directory).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "k8s", "up.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/k8s/up.sh not found above the working directory")
		}
		dir = parent
	}
}

// readEnvFile parses KEY=VALUE lines (no quoting: up.sh writes none).
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseEnv(f)
}

func parseEnv(r io.Reader) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: want KEY=VALUE, got %q", n, line)
		}
		env[k] = v
	}
	return env, sc.Err()
}

// Namespace creates a namespace for tb and deletes it when tb ends, waiting
// until it is gone and none of its containers runs any more, so a test that
// passes has left no Pod behind.
func (c *Cluster) Namespace(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "paddock-test-", Labels: map[string]string{"paddock.dev/test": "true"}},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	tb.Cleanup(func() { c.deleteNamespace(tb, ns.Name) })
	// The ServiceAccount admission refuses Pods until the default account
	// exists, which the controller manager adds shortly after.
	c.poll(ctx, tb, "default ServiceAccount in "+ns.Name, func() (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	return ns.Name
}

func (c *Cluster) deleteNamespace(tb testing.TB, ns string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Pods first with a short grace, so the namespace goes in seconds
	// whatever the test's Pods asked for.
	grace := int64(1)
	err := c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		tb.Errorf("delete pods in %s: %v", ns, err)
	}
	err = c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		tb.Errorf("delete namespace %s: %v", ns, err)
		return
	}
	c.poll(ctx, tb, "namespace "+ns+" gone", func() (bool, error) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if c.env["PADDOCK_K8S_CTR"] == "" {
		return
	}
	c.poll(ctx, tb, "containers of "+ns+" stopped", func() (bool, error) {
		running, err := c.runningContainers(ctx, ns)
		return len(running) == 0, err
	})
}

// runningContainers lists the containerd tasks (Pod sandboxes included)
// still running for namespace ns.
func (c *Cluster) runningContainers(ctx context.Context, ns string) ([]string, error) {
	ids, err := c.ctr(ctx, nil, "containers", "ls", "-q", fmt.Sprintf("labels.%q==%s", "io.kubernetes.pod.namespace", ns))
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, id := range strings.Fields(string(ids)) {
		mine[id] = true
	}
	tasks, err := c.ctr(ctx, nil, "tasks", "ls")
	if err != nil {
		return nil, err
	}
	var running []string
	for _, line := range strings.Split(string(tasks), "\n") {
		f := strings.Fields(line) // TASK PID STATUS
		if len(f) == 3 && mine[f[0]] && f[2] == "RUNNING" {
			running = append(running, f[0])
		}
	}
	return running, nil
}

// ctr runs containerd's client against the cluster's containerd, in the
// namespace the kubelet uses.
func (c *Cluster) ctr(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	bin, sock := c.env["PADDOCK_K8S_CTR"], c.env["PADDOCK_K8S_CONTAINERD"]
	if bin == "" || sock == "" {
		return nil, errors.New("no cluster.env beside the kubeconfig: the cluster's containerd is unknown")
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ImportImage puts img into the node's containerd as ref, for Pods that
// use it with imagePullPolicy Never. It skips tb when the cluster's
// containerd is unknown (a bare kubeconfig).
func (c *Cluster) ImportImage(tb testing.TB, ref string, img v1.Image) {
	tb.Helper()
	if c.env["PADDOCK_K8S_CTR"] == "" {
		tb.Skip("importing an image needs the cluster.env that up.sh writes beside the kubeconfig")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		tb.Fatal(err)
	}
	tar := filepath.Join(tb.TempDir(), "image.tar")
	if err := tarball.WriteToFile(tar, tag, img); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.ctr(ctx, nil, "images", "import", tar); err != nil {
		tb.Fatalf("import %s: %v", ref, err)
	}
}

// TrustRegistry lets the node's containerd pull from host (a registry on
// this machine, plain HTTP) until tb ends.
func (c *Cluster) TrustRegistry(tb testing.TB, host string) {
	tb.Helper()
	dir := c.env["PADDOCK_K8S_REGISTRY_CONFIG"]
	if dir == "" {
		tb.Skip("pulling from a local registry needs the cluster.env that up.sh writes beside the kubeconfig")
	}
	// containerd reads <config_path>/<host>/hosts.toml at each pull.
	hostDir := filepath.Join(dir, host)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(hostDir) })
	conf := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, "http://"+host)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// WaitRunning waits until the Pod runs and has an address, and returns it.
// A Pod that fails, or whose container cannot start, fails tb at once.
func (c *Cluster) WaitRunning(tb testing.TB, ns, pod string) *corev1.Pod {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var p *corev1.Pod
	c.poll(ctx, tb, "pod "+ns+"/"+pod+" running", func() (bool, error) {
		var err error
		if p, err = c.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{}); err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended: %s %s", p.Status.Phase, p.Status.Message)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && (strings.HasSuffix(w.Reason, "BackOff") || strings.Contains(w.Reason, "Err")) {
				return false, fmt.Errorf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
			}
		}
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	return p
}

// ExecResult is what a command run in a container wrote, and its exit code.
type ExecResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// Exec runs cmd in a container of a Pod through the API server, as
// `kubectl exec` does: WebSocket first, SPDY when the server lacks it. A
// command that ran and exited non-zero is not an error: see ExitCode.
func (c *Cluster) Exec(ctx context.Context, ns, pod, container string, cmd []string, stdin io.Reader) (ExecResult, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container, Command: cmd,
			Stdin: stdin != nil, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(c.Config, "GET", req.URL().String())
	if err != nil {
		return ExecResult{}, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return ExecResult{}, err
	}
	exe, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return ExecResult{}, err
	}
	var stdout, stderr bytes.Buffer
	err = exe.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	res := ExecResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit interface{ ExitStatus() int }
	if errors.As(err, &exit) {
		res.ExitCode = exit.ExitStatus()
		return res, nil
	}
	return res, err
}

// poll calls check every 100 ms until it reports done, fails tb when check
// errs or ctx ends.
func (c *Cluster) poll(ctx context.Context, tb testing.TB, what string, check func() (bool, error)) {
	tb.Helper()
	for {
		done, err := check()
		if err != nil {
			tb.Fatalf("waiting for %s: %v", what, err)
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
