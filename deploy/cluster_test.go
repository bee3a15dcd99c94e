package deploy_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
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
// works on either replica, an e2e client of one replica runs sandboxes as
// Pods (testSandboxes), the other serves them (testForwarding), and once
// the first replica's Pod is deleted the others take its sandboxes over
// (testTakeover).
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
		"config": map[string]any{"sandbox-disk": "1G", "lease-ttl": "15s", "lease-renew": "5s",
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

	const selector = "app.kubernetes.io/instance=paddock"
	pods := waitReady(t, c, ns, selector, 2)
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
	// Last: it deletes a replica.
	t.Run("a gone replica's sandbox taken over", func(t *testing.T) {
		testTakeover(t, c, ns, sandboxes, selector, pods, token)
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

// takeoverBound bounds how long after a replica's Pod is deleted its
// sandboxes are served again by the others. Expected, with the chart's
// lease times (kept here: they are what installs run with, and shorter ones
// on two loaded cores would risk a live replica's lease lapsing): the
// replica drains for 5 s and leaves its liveness lease to expire (15 s
// after its last renewal), which must have lapsed for one more TTL (15 s);
// the holder of the background lease looks on control's sweep tick (5 s)
// at most once per TTL (15 s): about 30 to 50 s. Measured: 27 and 35 s.
const takeoverBound = 2 * time.Minute

// testTakeover: a sandbox the first replica runs outlives that replica.
// Its paddock Pod is deleted (the Deployment starts a replacement under a
// new name, which never comes back for its predecessor's sandboxes); the
// replica holding the background lease takes the sandbox over: its Pod,
// never restarted (same UID), with its Secret and NetworkPolicy, now
// carries a surviving replica's owner label, and a command runs in it
// through each remaining replica. Deleting it through one leaves nothing of
// it in the sandbox namespace.
func testTakeover(t *testing.T, c *k8stest.Cluster, ns, sandboxNS, selector string, pods []corev1.Pod, token string) {
	hc := &http.Client{Timeout: 3 * time.Minute}
	client := func(p corev1.Pod) *sdk.Client {
		return sdk.New("http://"+net.JoinHostPort(p.Status.PodIP, "7420"), token, sdk.WithHTTPClient(hc))
	}
	gone := pods[0]
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sb, err := client(gone).Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bySandbox := metav1.ListOptions{LabelSelector: "paddock.dev/sandbox=" + sb.ID}
	before := sandboxPod(ctx, t, c, sandboxNS, bySandbox)
	if owner := before.Labels["paddock.dev/owner"]; owner != gone.Name {
		t.Fatalf("sandbox %s's Pod owned by %q, want %s", sb.ID, owner, gone.Name)
	}

	deleted := time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, gone.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	survivors := waitReady(t, c, ns, selector, 2)
	names := make([]string, len(survivors))
	for i, p := range survivors {
		if p.Name == gone.Name {
			t.Fatalf("replica %s still Ready after its deletion", gone.Name)
		}
		names[i] = p.Name
	}
	t.Logf("replicas %v Ready %s after %s's deletion", names, time.Since(deleted).Round(time.Millisecond), gone.Name)
	first := client(survivors[0])
	t.Cleanup(func() { _ = first.Sandbox(sb.ID).Delete(context.Background()) })

	// Until the takeover a survivor forwards to the gone replica's address
	// and fails; poll the whole check, each attempt bounded.
	var why error
	for {
		why = servedThrough(ctx, survivors, client, sb.ID)
		if why == nil {
			why = ownedBy(ctx, c, sandboxNS, bySandbox, names)
		}
		if why == nil {
			break
		}
		if time.Since(deleted) > takeoverBound {
			t.Fatalf("sandbox %s not taken over %s after %s's deletion: %v", sb.ID, takeoverBound, gone.Name, why)
		}
		time.Sleep(time.Second)
	}
	t.Logf("sandbox %s served by %v %s after %s's deletion", sb.ID, names, time.Since(deleted).Round(time.Millisecond), gone.Name)
	after := sandboxPod(ctx, t, c, sandboxNS, bySandbox)
	if after.UID != before.UID {
		t.Errorf("sandbox %s's Pod UID %s, was %s: replaced, not taken over", sb.ID, after.UID, before.UID)
	}
	for _, cs := range after.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("sandbox %s's container %s restarted %d times", sb.ID, cs.Name, cs.RestartCount)
		}
	}

	if err := first.Sandbox(sb.ID).Delete(ctx); err != nil {
		t.Fatalf("delete through %s: %v", survivors[0].Name, err)
	}
	if left, err := sandboxObjects(ctx, c, sandboxNS, bySandbox); err != nil || len(left) > 0 {
		t.Errorf("left of the deleted sandbox %s: %v, %v", sb.ID, left, err)
	}
}

// servedThrough: through each replica, the sandbox id is running and a
// command in it runs with its output back.
func servedThrough(ctx context.Context, replicas []corev1.Pod, client func(corev1.Pod) *sdk.Client, id string) error {
	for _, p := range replicas {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := func() error {
			sb := client(p).Sandbox(id)
			if err := sb.Refresh(actx); err != nil {
				return err
			}
			if sb.Status != api.StatusRunning {
				return fmt.Errorf("status %s", sb.Status)
			}
			// The image "host" is paddock's own: paddock is its one command.
			cmd, err := sb.RunCommand(actx, api.CommandRequest{Cmd: "paddock", Args: []string{"version"}})
			if err != nil {
				return err
			}
			out, err := cmd.Output(actx, "stdout")
			if err != nil || cmd.ExitCodeOr(-1) != 0 || !strings.HasPrefix(out, "paddock ") {
				return fmt.Errorf("paddock version: exit %d, %q, %v", cmd.ExitCodeOr(-1), out, err)
			}
			return nil
		}()
		cancel()
		if err != nil {
			return fmt.Errorf("through %s: %w", p.Name, err)
		}
	}
	return nil
}

// ownedBy: the sandbox's Pod, Secret and NetworkPolicy carry the owner
// label of one of replicas, the same on all three.
func ownedBy(ctx context.Context, c *k8stest.Cluster, sandboxNS string, sel metav1.ListOptions, replicas []string) error {
	objs, err := sandboxObjects(ctx, c, sandboxNS, sel)
	if err != nil {
		return err
	}
	if len(objs) != 3 {
		return fmt.Errorf("objects %v, want a Pod, a Secret and a NetworkPolicy", objs)
	}
	owner := objs[0].owner
	for _, o := range objs {
		if o.owner != owner || !slices.Contains(replicas, o.owner) {
			return fmt.Errorf("owners %v, want one of %v", objs, replicas)
		}
	}
	return nil
}

type sandboxObject struct{ kind, name, owner string }

func (o sandboxObject) String() string { return o.kind + " " + o.name + " of " + o.owner }

// sandboxObjects lists the Pods, Secrets and NetworkPolicies sel selects.
func sandboxObjects(ctx context.Context, c *k8stest.Cluster, ns string, sel metav1.ListOptions) ([]sandboxObject, error) {
	var objs []sandboxObject
	add := func(kind string, m metav1.ObjectMeta) {
		objs = append(objs, sandboxObject{kind, m.Name, m.Labels["paddock.dev/owner"]})
	}
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range pods.Items {
		add("Pod", o.ObjectMeta)
	}
	secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range secrets.Items {
		add("Secret", o.ObjectMeta)
	}
	policies, err := c.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range policies.Items {
		add("NetworkPolicy", o.ObjectMeta)
	}
	return objs, nil
}

// sandboxPod is the one Pod sel selects, running.
func sandboxPod(ctx context.Context, t *testing.T, c *k8stest.Cluster, ns string, sel metav1.ListOptions) corev1.Pod {
	t.Helper()
	l, err := c.Client.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Status.Phase != corev1.PodRunning {
		t.Fatalf("Pods %s: %+v, want one running", sel.LabelSelector, l.Items)
	}
	return l.Items[0]
}
