package deploy_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/deploy"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/sdk"
)

func mainWithCluster(m *testing.M) int { return k8stest.Main(m) }

// TestInstall installs the chart into the test cluster: paddock's image
// built from this tree and pulled from a registry on this machine, two
// replicas on one MongoDB (an embedded FerretDB the test serves on the
// Pods' bridge), the keys from a Secret, sandboxes on the Kubernetes
// runtime (the chart's default) with paddock's image as the agent image
// and as the image "host", reaching the API server (bound to loopback) by a
// relay on the Pods' gateway. Both replicas become Ready, /healthz and
// /readyz answer through the Service (the API server's service proxy: the
// cluster has no kube-proxy), the admin token the first replica printed
// works on either replica, and an e2e client of one replica runs
// sandboxes as Pods (testSandboxes).
func TestInstall(t *testing.T) {
	c := k8stest.Require(t)
	begin := time.Now()
	ns := c.Namespace(t)
	sandboxes := ns + "-sandboxes"
	c.DeleteNamespaceAtEnd(t, sandboxes)

	c.EnsureBridge(t, ns)
	gateway := c.PodGateway(t).String()
	mongoURI := serveFerretDB(t, net.JoinHostPort(gateway, "0"))

	img := k8stest.PaddockImage(t)
	// On the Pods' gateway: the node's containerd pulls from it, and so
	// does paddock, in a Pod, for the images' configs.
	registry := serveRegistry(t, gateway)
	c.TrustRegistry(t, registry)
	repo := registry + "/paddock/paddock"
	imagetest.Push(t, repo+":test", img)
	standin := registry + "/paddock/goose-standin:test"
	pushStandin(t, standin)
	t.Logf("images built and pushed after %s", time.Since(begin).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	keys := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "paddock-keys"},
		Data:       map[string][]byte{"proxy.key": randomKey(t), "secrets.key": randomKey(t)},
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, keys, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// paddock's Pods reach the API server through a relay on their
	// gateway, with a kubeconfig from a ConfigMap (kubernetes.kubeconfig).
	apiHost := strings.TrimPrefix(c.Config.Host, "https://")
	kubeconfig := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "paddock-kubeconfig"},
		Data: map[string]string{"config": podKubeconfig(forwardAPIServer(t, gateway, apiHost))}}
	if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, kubeconfig, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	rel := deploy.Release{Name: "paddock", Namespace: ns}
	objs, err := deploy.Render(rel, map[string]any{
		"image":            map[string]any{"repository": repo, "tag": "test", "pullPolicy": "Always"},
		"mongodb":          map[string]any{"uri": mongoURI, "database": "paddock_install_test"},
		"sandboxNamespace": map[string]any{"name": sandboxes},
		// Two replicas on two cores beside the control plane.
		"resources": map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"}, "limits": map[string]any{"memory": "512Mi"}},
		// Sandboxes ask for a tenth of their limits: the cluster has two cores.
		"kubernetes":        map[string]any{"hostImage": repo + ":test", "requestFraction": 0.1, "kubeconfig": "/etc/paddock-kube/config"},
		"extraVolumes":      []any{map[string]any{"name": "kubeconfig", "configMap": map[string]any{"name": "paddock-kubeconfig"}}},
		"extraVolumeMounts": []any{map[string]any{"name": "kubeconfig", "mountPath": "/etc/paddock-kube", "readOnly": true}},
		"config": map[string]any{"sandbox-disk": "0", "lease-ttl": "15s", "lease-renew": "5s",
			// The registry is on the Pods' gateway, a private address.
			"registry-allow-private": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	var us []*unstructured.Unstructured
	for _, o := range objs {
		us = append(us, k8stest.DecodeYAML(t, o.YAML))
	}
	c.Apply(t, us)
	t.Logf("chart applied after %s", time.Since(begin).Round(time.Millisecond))

	pods := waitReady(t, c, ns, "app.kubernetes.io/instance=paddock", 2)
	t.Logf("both replicas Ready after %s", time.Since(begin).Round(time.Millisecond))

	t.Run("health through the Service", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			b, err := c.Client.CoreV1().Services(ns).ProxyGet("http", "paddock", "80", path, nil).DoRaw(ctx)
			if err != nil || strings.TrimSpace(string(b)) != "ok" {
				t.Errorf("GET %s through Service paddock = %q, %v", path, b, err)
			}
		}
	})

	token := adminToken(t, c, ns, pods)
	t.Run("admin token on either replica", func(t *testing.T) {
		for _, p := range pods {
			base := "http://" + net.JoinHostPort(p.Status.PodIP, "7420")
			if code, _ := get(t, base+"/api/v1/teams", ""); code != http.StatusUnauthorized {
				t.Errorf("%s: GET /api/v1/teams without a token = %d, want 401", p.Name, code)
			}
			code, body := get(t, base+"/api/v1/teams", token)
			if code != http.StatusOK || !json.Valid([]byte(body)) {
				t.Errorf("%s: GET /api/v1/teams = %d %s", p.Name, code, body)
			}
		}
	})
	t.Run("permissions only in the sandbox namespace", func(t *testing.T) {
		user := "system:serviceaccount:" + ns + ":paddock"
		for _, tc := range []struct {
			ns, verb, resource string
			want               bool
		}{
			{sandboxes, "create", "pods", true},
			{sandboxes, "delete", "secrets", true},
			{sandboxes, "watch", "persistentvolumeclaims", true},
			{sandboxes, "update", "pods", false},
			{sandboxes, "create", "pods/exec", false},
			{sandboxes, "create", "networkpolicies.networking.k8s.io", true},
			{sandboxes, "update", "networkpolicies.networking.k8s.io", false},
			// The takeover relabels a gone replica's sandboxes.
			{sandboxes, "patch", "pods", true},
			{sandboxes, "patch", "secrets", true},
			{sandboxes, "patch", "networkpolicies.networking.k8s.io", true},
			{sandboxes, "patch", "persistentvolumeclaims", false},
			{ns, "patch", "pods", false},
			{ns, "create", "pods", false},
			{ns, "get", "secrets", false},
			{"", "list", "nodes", false},
			{"", "list", "namespaces", false},
		} {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:               user,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: tc.ns, Verb: tc.verb, Resource: tc.resource},
			}}
			if res, sub, ok := strings.Cut(tc.resource, "/"); ok {
				sar.Spec.ResourceAttributes.Resource, sar.Spec.ResourceAttributes.Subresource = res, sub
			}
			if res, group, ok := strings.Cut(tc.resource, "."); ok {
				sar.Spec.ResourceAttributes.Resource, sar.Spec.ResourceAttributes.Group = res, group
			}
			got, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != tc.want {
				t.Errorf("%s %s in %q: allowed %v, want %v", tc.verb, tc.resource, tc.ns, got.Status.Allowed, tc.want)
			}
		}
	})
	t.Run("sandboxes as Pods", func(t *testing.T) {
		testSandboxes(t, c, pods[0], token, sandboxes, standin)
	})
	t.Run("a replica's sandbox through the other", func(t *testing.T) {
		testForwarding(t, pods, token)
	})
	t.Logf("install test done after %s", time.Since(begin).Round(time.Millisecond))
}

// serveFerretDB runs an embedded FerretDB (SQLite backend, in a temp dir)
// on addr until t ends and returns its URI.
func serveFerretDB(t *testing.T, addr string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("FerretDB: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owned: the cleanup cancels and waits
		defer close(done)
		f.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return f.MongoDBURI()
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// waitReady waits until n Pods matching selector are Ready and returns
// them; on timeout it logs their states and logs to say why not.
func waitReady(t *testing.T, c *k8stest.Cluster, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		var ready []corev1.Pod
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					ready = append(ready, p)
				}
			}
		}
		if len(ready) == n {
			return ready
		}
		select {
		case <-ctx.Done():
			for _, p := range list.Items {
				t.Logf("pod %s: %s %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
				lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
				logs, err := c.PodLogs(lctx, ns, p.Name)
				lcancel()
				t.Logf("logs of %s (%v):\n%s", p.Name, err, logs)
			}
			t.Fatalf("%d of %d Pods %s Ready", len(ready), n, selector)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var tokenRE = regexp.MustCompile(`pdk_[A-Za-z0-9_-]{43}`)

// adminToken finds the host admin token in the replicas' logs: the one
// that made it on the empty store printed it once.
func adminToken(t *testing.T, c *k8stest.Cluster, ns string, pods []corev1.Pod) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tokens []string
	for _, p := range pods {
		logs, err := c.PodLogs(ctx, ns, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tokenRE.FindAllString(logs, -1)...)
	}
	if len(tokens) == 0 {
		t.Fatalf("no replica printed an admin token")
	}
	// Replicas starting together on an empty store may each make one
	// (auth.Bootstrap lists, then creates): each works.
	t.Logf("%d admin token(s) printed by %d replicas", len(tokens), len(pods))
	return tokens[0]
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// testForwarding: a sandbox the first replica runs is served by the second
// (which forwards to the first at the Pod IP it advertises): got, listed,
// a command run with its output streamed back, deleted.
func testForwarding(t *testing.T, pods []corev1.Pod, token string) {
	hc := &http.Client{Timeout: 3 * time.Minute}
	client := func(p corev1.Pod) *sdk.Client {
		return sdk.New("http://"+net.JoinHostPort(p.Status.PodIP, "7420"), token, sdk.WithHTTPClient(hc))
	}
	a, b := client(pods[0]), client(pods[1])
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sb, err := a.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Sandbox(sb.ID).Delete(context.Background()) })
	through := b.Sandbox(sb.ID)
	if err := through.Refresh(ctx); err != nil || through.Status != api.StatusRunning {
		t.Fatalf("%s's sandbox through %s: %+v %v", pods[0].Name, pods[1].Name, through.Sandbox, err)
	}
	page, err := b.ListPage(ctx, sdk.ListOptions{})
	if err != nil || !slices.ContainsFunc(page.Sandboxes, func(s api.Sandbox) bool { return s.ID == sb.ID }) {
		t.Fatalf("%s lists %+v (%v), without %s's sandbox %s", pods[1].Name, page.Sandboxes, err, pods[0].Name, sb.ID)
	}
	// The image "host" here is paddock's own: paddock is its one command.
	cmd, err := through.RunCommand(ctx, api.CommandRequest{Cmd: "paddock", Args: []string{"version"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.Output(ctx, "stdout"); err != nil || cmd.ExitCodeOr(-1) != 0 || !strings.HasPrefix(out, "paddock ") {
		t.Fatalf("a command through %s: exit %d, %q, %v", pods[1].Name, cmd.ExitCodeOr(-1), out, err)
	}
	if err := through.Delete(ctx); err != nil {
		t.Fatalf("delete through %s: %v", pods[1].Name, err)
	}
}
