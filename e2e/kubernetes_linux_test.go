package e2e

import (
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/k8stest"
)

// onKubernetes is the stack options of a test that runs a suite's body
// again with the kubernetes runtime: sandboxes are Pods on the test
// cluster. Such a test's name ends in Kubernetes (go test -run
// Kubernetes); it skips unless PADDOCK_TEST_K8S=1 (k8stest.Require). The
// cluster comes up here, before the body's newDataDir: its leak check
// then finds the cluster's links (pdk8s*) on the host already.
func onKubernetes(t *testing.T) stackOptions {
	t.Helper()
	requireKubernetes(t)
	return stackOptions{runtime: daemon.RuntimeKubernetes}
}

// onKubernetesWithVolumes is onKubernetes with n PersistentVolumes of a
// class of the test's own (k8stest.StorageClass, made before the stack's
// namespace, whose claims go first), the class of the stack's volumes.
func onKubernetesWithVolumes(t *testing.T, n int) stackOptions {
	t.Helper()
	opts := onKubernetes(t)
	class := k8sShared.c.StorageClass(t, n, "1Gi")
	opts.config = func(c *daemon.Config) { c.Kubernetes.StorageClass = class }
	return opts
}

// k8sEnv is what the stacks on the kubernetes runtime share: the test
// cluster, and a registry on loopback that its node pulls from, holding
// the agent and host images (pushed once per test binary).
type k8sEnv struct {
	c      *k8stest.Cluster
	images k8stest.SandboxImages
}

var (
	k8sOnce   sync.Once
	k8sShared k8sEnv
	k8sReady  bool // the first test's setup finished
)

// requireKubernetes returns the shared cluster environment, setting it up
// on first use, or skips t when the cluster tests are off. The registry
// lives as long as the test binary: every later test pulls from it.
func requireKubernetes(t *testing.T) k8sEnv {
	t.Helper()
	c := k8stest.Require(t)
	k8sOnce.Do(func() {
		k8sShared = k8sEnv{c: c, images: c.PushSandboxImages(keepTB{TB: t})}
		// The Pods' bridge (pdk8sbr0) comes with the cluster's first Pod;
		// made now, it is on the host before the tests' leak checks look.
		c.EnsureBridge(t, c.Namespace(t))
		k8sReady = true
	})
	if !k8sReady {
		t.Fatal("the cluster's sandbox images failed in an earlier test")
	}
	return k8sShared
}

// keepTB is a TB whose cleanups are dropped: what it sets up lives until
// the test binary exits.
type keepTB struct{ testing.TB }

func (keepTB) Cleanup(func()) {}

// config is the daemon's kubernetes runtime on a fresh namespace, which
// is deleted when t ends.
func (e k8sEnv) config(t *testing.T) daemon.KubernetesConfig {
	t.Helper()
	return daemon.KubernetesConfig{Kubeconfig: e.c.Kubeconfig, Namespace: e.c.Namespace(t),
		AgentImage: e.images.Agent, HostImage: e.images.Host, HostImageBinds: e.images.HostBinds,
		// The test cluster has two cores: Pods requesting their whole
		// limits could not all be scheduled.
		RequestFraction: 0.02}
}
