package k8stest

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// PaddockImage builds paddock's image from this tree with
// hack/k8s/paddockimage (static paddock, paddock-agent and paddock-init over
// a small base; no Docker) and returns it. The build takes minutes on a cold
// cache.
func PaddockImage(tb testing.TB) v1.Image {
	tb.Helper()
	root, err := repoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(tb.TempDir(), "paddock.tar")
	start := time.Now()
	cmd := exec.Command("go", "run", "./hack/k8s/paddockimage", "-ref", "docker.io/paddock/paddock:test", "-o", out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("hack/k8s/paddockimage: %v\n%s", err, b)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("paddock's image built in %s", time.Since(start).Round(time.Millisecond))
	return img
}

// PodGateway is the host's address on the Pods' bridge: the first address
// of PodCIDR. Pods reach it (they have no route anywhere else off the
// bridge) once the bridge exists, i.e. after the first Pod ran; see
// EnsureBridge.
func (c *Cluster) PodGateway(tb testing.TB) netip.Addr {
	tb.Helper()
	p, err := netip.ParsePrefix(c.PodCIDR)
	if err != nil {
		tb.Fatalf("pod CIDR %q: %v", c.PodCIDR, err)
	}
	return p.Masked().Addr().Next()
}

// EnsureBridge makes sure the host holds PodGateway, which the bridge
// plugin assigns when the cluster's first Pod starts: if it is missing, a
// pause Pod in ns runs (and is deleted) to bring the bridge up.
func (c *Cluster) EnsureBridge(tb testing.TB, ns string) {
	tb.Helper()
	gw := c.PodGateway(tb)
	if hostHas(gw) {
		return
	}
	pause := c.env["PADDOCK_K8S_PAUSE_IMAGE"]
	if pause == "" {
		tb.Skip("no Pod bridge yet and no pause image known (cluster.env)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	obj := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "bridge-up", "namespace": ns},
		"spec": map[string]any{
			"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false,
			"containers": []any{map[string]any{"name": "pause", "image": pause, "imagePullPolicy": "Never"}},
		},
	}
	c.Apply(tb, []*unstructured.Unstructured{{Object: obj}})
	c.WaitRunning(tb, ns, "bridge-up")
	c.poll(ctx, tb, "address "+gw.String()+" on the Pod bridge", func() (bool, error) { return hostHas(gw), nil })
}

// hostHas reports whether a on a local interface: `ip -o addr` lists it.
func hostHas(a netip.Addr) bool {
	out, err := exec.Command("ip", "-o", "addr", "show").Output()
	return err == nil && strings.Contains(string(out), " "+a.String()+"/")
}

// Apply creates or updates objs by server-side apply (field manager
// paddock-test), each in the namespace its metadata names, as `kubectl
// apply --server-side` does.
func (c *Cluster) Apply(tb testing.TB, objs []*unstructured.Unstructured) {
	tb.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		tb.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			tb.Fatalf("%s %s: %v", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := o.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "paddock-test", Force: true}); err != nil {
			tb.Fatalf("apply %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// DecodeYAML turns one YAML document into an object for Apply.
func DecodeYAML(tb testing.TB, doc string) *unstructured.Unstructured {
	tb.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		tb.Fatalf("decode: %v\n%s", err, doc)
	}
	if m == nil {
		tb.Fatalf("empty document")
	}
	return &unstructured.Unstructured{Object: m}
}

// DeleteNamespaceAtEnd deletes namespace ns, made by something else than
// Namespace (a chart), when tb ends, as Namespace's own are: waiting until
// it is gone and its containers stopped.
func (c *Cluster) DeleteNamespaceAtEnd(tb testing.TB, ns string) {
	tb.Helper()
	tb.Cleanup(func() { c.deleteNamespace(tb, ns) })
}

// PodLogs is everything the container of a Pod wrote so far.
func (c *Cluster) PodLogs(ctx context.Context, ns, pod string) (string, error) {
	b, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s: %w", ns, pod, err)
	}
	return string(b), nil
}
