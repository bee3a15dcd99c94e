package deploy_test

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"

	"github.com/paddock-dev/paddock/deploy"
)

func TestMain(m *testing.M) { os.Exit(mainWithCluster(m)) }

// TestLint runs Helm's linter over the chart directory: Chart.yaml,
// values, every template rendered and parsed.
func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
	}{
		{name: "defaults"},
		{name: "one replica with a URI", values: map[string]any{"replicaCount": 1, "mongodb": map[string]any{"uri": "mongodb://db.example:27017/"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := lint.RunAll(deploy.ChartDir, tc.values, deploy.DefaultRelease.Namespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %v", m)
				} else {
					t.Logf("lint: %v", m)
				}
			}
		})
	}
}

// rendered is a render's objects decoded with client-go's scheme, strictly:
// a field Kubernetes does not know fails the decode.
type rendered struct {
	objs []runtime.Object
	raw  []deploy.Object
}

func render(t *testing.T, values map[string]any) rendered {
	t.Helper()
	raw, err := deploy.Render(deploy.DefaultRelease, values)
	if err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	r := rendered{raw: raw}
	for _, o := range raw {
		obj, gvk, err := dec.Decode([]byte(o.YAML), nil, nil)
		if err != nil {
			t.Fatalf("%s %s (%s): %v", o.Kind, o.Name, o.Template, err)
		}
		if gvk.Kind != o.Kind {
			t.Fatalf("%s decoded as %s", o.Kind, gvk.Kind)
		}
		r.objs = append(r.objs, obj)
	}
	return r
}

// all returns the rendered objects of type T.
func all[T runtime.Object](r rendered) []T {
	var out []T
	for _, o := range r.objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func one[T runtime.Object](t *testing.T, r rendered, what string) T {
	t.Helper()
	got := all[T](r)
	if len(got) != 1 {
		t.Fatalf("want one %s, got %d", what, len(got))
	}
	return got[0]
}

const sandboxNS = "paddock-sandboxes"

// TestRender renders the chart with several sets of values and checks what
// must hold whatever the values: paddock's permissions are a Role in the
// sandbox namespace with no wildcard and no verb beyond the driver's; the
// sandbox namespace denies all traffic but paddock's; probes, resources
// and a locked-down security context are there.
func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name     string
		values   map[string]any
		replicas int32
		uriInChart,
		pdb, nsObject, netpol bool
	}{
		{name: "defaults", replicas: 2, pdb: true, nsObject: true, netpol: true},
		{name: "one replica: no PDB", values: map[string]any{"replicaCount": 1}, replicas: 1, nsObject: true, netpol: true},
		{name: "URI in the chart's Secret", values: map[string]any{"mongodb": map[string]any{"uri": "mongodb://db.example:27017/"}},
			replicas: 2, uriInChart: true, pdb: true, nsObject: true, netpol: true},
		{name: "existing sandbox namespace", values: map[string]any{"sandboxNamespace": map[string]any{"create": false}},
			replicas: 2, pdb: true, netpol: true},
		{name: "network policy off", values: map[string]any{"sandboxNamespace": map[string]any{"networkPolicy": map[string]any{"enabled": false}}},
			replicas: 2, pdb: true, nsObject: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.values)
			checkNamespaces(t, r)
			checkRBAC(t, r)
			dep := checkDeployment(t, r, tc.replicas)
			podLabels := labels.Set(dep.Spec.Template.Labels)

			svc := one[*corev1.Service](t, r, "Service")
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				t.Errorf("Service selector %v does not select the Pods %v", svc.Spec.Selector, podLabels)
			}
			pdbs := all[*policyv1.PodDisruptionBudget](r)
			if (len(pdbs) == 1) != tc.pdb {
				t.Errorf("PodDisruptionBudgets: %d, want one: %v", len(pdbs), tc.pdb)
			}
			for _, p := range pdbs {
				if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() < 1 {
					t.Errorf("PDB maxUnavailable %v blocks every disruption", p.Spec.MaxUnavailable)
				}
				if !labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(podLabels) {
					t.Errorf("PDB selector %v does not select the Pods", p.Spec.Selector)
				}
			}
			secrets := all[*corev1.Secret](r)
			if (len(secrets) == 1) != tc.uriInChart {
				t.Errorf("Secrets: %d, want the URI's: %v", len(secrets), tc.uriInChart)
			}
			nss := all[*corev1.Namespace](r)
			if (len(nss) == 1) != tc.nsObject {
				t.Errorf("Namespaces: %d, want the sandboxes': %v", len(nss), tc.nsObject)
			}
			for _, ns := range nss {
				if ns.Name != sandboxNS {
					t.Errorf("the chart creates namespace %s", ns.Name)
				}
			}
			checkNetworkPolicies(t, r, tc.netpol, podLabels)
			rq := one[*corev1.ResourceQuota](t, r, "ResourceQuota")
			if rq.Namespace != sandboxNS || len(rq.Spec.Hard) == 0 {
				t.Errorf("ResourceQuota in %s with %v", rq.Namespace, rq.Spec.Hard)
			}
			lr := one[*corev1.LimitRange](t, r, "LimitRange")
			if lr.Namespace != sandboxNS || len(lr.Spec.Limits) == 0 {
				t.Errorf("LimitRange in %s with %v", lr.Namespace, lr.Spec.Limits)
			}
		})
	}
}

// checkNamespaces: every object but a Namespace names its namespace (so
// plain manifests apply anywhere), and only the release's or the
// sandboxes'.
func checkNamespaces(t *testing.T, r rendered) {
	t.Helper()
	for i, o := range r.objs {
		if _, ok := o.(*corev1.Namespace); ok {
			continue
		}
		ns := o.(interface{ GetNamespace() string }).GetNamespace()
		if ns != deploy.DefaultRelease.Namespace && ns != sandboxNS {
			t.Errorf("%s %s in namespace %q", r.raw[i].Kind, r.raw[i].Name, ns)
		}
	}
}

// checkRBAC: a Role and a RoleBinding in the sandbox namespace, nothing
// cluster-wide, no wildcard, no verb beyond create/get/list/watch/delete
// but patch, which the takeover's relabelling needs on pods, secrets and
// networkpolicies (and gets there, on nothing else).
func checkRBAC(t *testing.T, r rendered) {
	t.Helper()
	for i := range r.raw {
		if k := r.raw[i].Kind; strings.HasPrefix(k, "Cluster") {
			t.Errorf("cluster-wide %s %s", k, r.raw[i].Name)
		}
	}
	allowed := []string{"create", "get", "list", "watch", "delete"}
	// resource.group, "" the core group
	patchable := []string{"pods.", "secrets.", "networkpolicies.networking.k8s.io"}
	patched := map[string]bool{}
	role := one[*rbacv1.Role](t, r, "Role")
	if role.Namespace != sandboxNS {
		t.Errorf("Role in %s, want %s", role.Namespace, sandboxNS)
	}
	for _, rule := range role.Rules {
		for _, v := range slices.Concat(rule.Verbs, rule.Resources, rule.APIGroups, rule.ResourceNames) {
			if strings.Contains(v, "*") {
				t.Errorf("wildcard %q in %+v", v, rule)
			}
		}
		for _, v := range rule.Verbs {
			if v == "patch" {
				for _, g := range rule.APIGroups {
					for _, res := range rule.Resources {
						if !slices.Contains(patchable, res+"."+g) {
							t.Errorf("patch on %s.%s beyond %v", res, g, patchable)
						}
						patched[res+"."+g] = true
					}
				}
				continue
			}
			if !slices.Contains(allowed, v) {
				t.Errorf("verb %q on %v beyond %v", v, rule.Resources, allowed)
			}
		}
		if len(rule.NonResourceURLs) > 0 {
			t.Errorf("non-resource URLs %v", rule.NonResourceURLs)
		}
	}
	for _, res := range patchable {
		if !patched[res] {
			t.Errorf("no patch on %s: a takeover is refused", res)
		}
	}
	rb := one[*rbacv1.RoleBinding](t, r, "RoleBinding")
	if rb.Namespace != sandboxNS || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name {
		t.Errorf("RoleBinding %s/%s binds %s %s", rb.Namespace, rb.Name, rb.RoleRef.Kind, rb.RoleRef.Name)
	}
	sa := one[*corev1.ServiceAccount](t, r, "ServiceAccount")
	want := rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: deploy.DefaultRelease.Namespace}
	if len(rb.Subjects) != 1 || rb.Subjects[0] != want {
		t.Errorf("RoleBinding subjects %+v, want %+v", rb.Subjects, want)
	}
}

func checkDeployment(t *testing.T, r rendered, replicas int32) *appsv1.Deployment {
	t.Helper()
	dep := one[*appsv1.Deployment](t, r, "Deployment")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != replicas {
		t.Errorf("replicas %v, want %d", dep.Spec.Replicas, replicas)
	}
	sa := one[*corev1.ServiceAccount](t, r, "ServiceAccount")
	if dep.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("Pods run as %q, not the chart's ServiceAccount %q", dep.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	if !labels.SelectorFromSet(dep.Spec.Selector.MatchLabels).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("Deployment selector does not select its own Pods")
	}
	cs := dep.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
	c := cs[0]
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", c.StartupProbe, "/healthz"},
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %+v, want GET %s on port http", p.name, p.probe, p.path)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no securityContext")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.Privileged != nil && *sc.Privileged,
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("securityContext %+v: want no privilege, no escalation, a read-only root and every capability dropped", sc)
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 && !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
		t.Errorf("capabilities added %v, want at most CHOWN", sc.Capabilities.Add)
	}
	// A read-only root leaves paddock only its mounts to write: the data
	// dir, /tmp and /run (the runc driver's state).
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			mounted[m.MountPath] = true
		}
	}
	for _, dir := range []string{"/var/lib/paddock", "/tmp", "/run"} {
		if !mounted[dir] {
			t.Errorf("no writable mount at %s under a read-only root", dir)
		}
	}
	var mongoFromSecret, podIP bool
	advertise := ""
	for _, e := range c.Env {
		switch e.Name {
		case "PADDOCK_MONGODB_URI":
			mongoFromSecret = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		case "POD_IP":
			podIP = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
		case "PADDOCK_ADVERTISE_URL":
			advertise = e.Value
		}
	}
	// The other replicas forward a sandbox's requests to the Pod that runs
	// it, at its own address and the port paddock listens on.
	if !podIP || advertise != "http://$(POD_IP):7420" || !slices.Contains(c.Args, "--listen=:7420") {
		t.Errorf("no advertise URL from the Pod's IP and port: env %v args %v", c.Env, c.Args)
	}
	// paddock reads the variable itself: an argument would show the URI
	// (and its password) in the process's command line.
	if !mongoFromSecret || slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "mongodb-uri") }) {
		t.Errorf("the MongoDB URI does not come from a Secret: env %v args %v", c.Env, c.Args)
	}
	return dep
}

// checkNetworkPolicies: when on, a default-deny of both directions for
// every Pod of the sandbox namespace, and ingress only from paddock's Pods
// in the release namespace.
func checkNetworkPolicies(t *testing.T, r rendered, on bool, paddockPods labels.Set) {
	t.Helper()
	nps := all[*networkingv1.NetworkPolicy](r)
	if !on {
		if len(nps) != 0 {
			t.Errorf("%d NetworkPolicies with the policy off", len(nps))
		}
		return
	}
	var deny, fromPaddock bool
	for _, np := range nps {
		if np.Namespace != sandboxNS {
			t.Errorf("NetworkPolicy %s in %s", np.Name, np.Namespace)
		}
		if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) != 0 {
			t.Errorf("NetworkPolicy %s selects only some Pods: %v", np.Name, np.Spec.PodSelector)
		}
		// Policies add up: an egress rule for every Pod would let a
		// deny-all sandbox out whatever its own policy says.
		if len(np.Spec.Egress) != 0 {
			t.Errorf("NetworkPolicy %s lets every sandbox out to %+v", np.Name, np.Spec.Egress)
		}
		types := np.Spec.PolicyTypes
		if len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
			slices.Contains(types, networkingv1.PolicyTypeIngress) && slices.Contains(types, networkingv1.PolicyTypeEgress) {
			deny = true
		}
		for _, in := range np.Spec.Ingress {
			for _, from := range in.From {
				if from.IPBlock != nil || from.NamespaceSelector == nil || from.PodSelector == nil {
					t.Errorf("NetworkPolicy %s lets in %+v, not only paddock's Pods", np.Name, from)
					continue
				}
				if from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != deploy.DefaultRelease.Namespace ||
					!labels.SelectorFromSet(from.PodSelector.MatchLabels).Matches(paddockPods) {
					t.Errorf("NetworkPolicy %s lets in %+v", np.Name, from)
					continue
				}
				fromPaddock = true
			}
		}
	}
	if !deny || !fromPaddock {
		t.Errorf("sandbox namespace: default deny %v, ingress from paddock %v", deny, fromPaddock)
	}
}

// TestRenderKubernetesRuntime: by default paddock runs sandboxes as Pods,
// with its own image as the agent image and the Role's rights on the
// driver's objects; kubernetes.enabled false leaves the runtime to config.
func TestRenderKubernetesRuntime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string
		absent string
	}{
		{name: "defaults", want: []string{"--runtime=kubernetes", "--k8s-agent-image=paddock:", "--k8s-request-fraction=1", "--k8s-pull-policy=IfNotPresent"}, absent: "--k8s-host-image"},
		{name: "user namespaces by default", absent: "--k8s-host-users"},
		{name: "the cluster's default storage class", absent: "--k8s-storage-class"},
		{name: "no pull secrets", absent: "--k8s-image-pull-secret"},
		{name: "every value", values: map[string]any{"image": map[string]any{"repository": "r.example/paddock", "tag": "v1"},
			"kubernetes": map[string]any{"hostImage": "r.example/debian:12", "runtimeClass": "gvisor", "requestFraction": 0.25, "hostUsers": true, "snapshotRegistry": "r.example/snaps", "storageClass": "fast",
				"imagePullSecrets": []any{"regcred", "snapcred"}}},
			want: []string{"--k8s-agent-image=r.example/paddock:v1", "--k8s-host-image=r.example/debian:12", "--k8s-runtime-class=gvisor", "--k8s-request-fraction=0.25", "--k8s-host-users", "--snapshot-registry=r.example/snaps", "--k8s-storage-class=fast",
				"--k8s-image-pull-secret=regcred --k8s-image-pull-secret=snapcred"}},
		{name: "off", values: map[string]any{"kubernetes": map[string]any{"enabled": false}}, absent: "--runtime"},
		{name: "no resolver", absent: "--k8s-dns"},
		{name: "a resolver", values: map[string]any{"kubernetes": map[string]any{"dns": map[string]any{"clusterIP": "10.96.0.53", "upstream": []any{"10.96.0.10"}}}},
			want: []string{"--k8s-dns-listen=:5353 --k8s-dns-address=10.96.0.53 --k8s-dns-pod-label=app.kubernetes.io/instance=paddock --k8s-dns-pod-label=app.kubernetes.io/name=paddock --k8s-dns-upstream=10.96.0.10"}},
		{name: "a RuntimeClass of the chart's", values: map[string]any{"kubernetes": map[string]any{"runtimeClass": "paddock-owned", "runtimeClassHandler": "paddock"}},
			want: []string{"--k8s-runtime-class=paddock-owned"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.values)
			args := strings.Join(one[*appsv1.Deployment](t, r, "Deployment").Spec.Template.Spec.Containers[0].Args, " ")
			for _, w := range tc.want {
				if !strings.Contains(args, w) {
					t.Errorf("args %s lack %s", args, w)
				}
			}
			if tc.absent != "" && strings.Contains(args, tc.absent) {
				t.Errorf("args %s hold %s", args, tc.absent)
			}
			// A RuntimeClass only when asked for, of the handler asked for.
			k, _ := tc.values["kubernetes"].(map[string]any)
			rcs := all[*nodev1.RuntimeClass](r)
			if h, _ := k["runtimeClassHandler"].(string); h == "" && len(rcs) > 0 {
				t.Errorf("a RuntimeClass no value asked for: %+v", rcs)
			} else if h != "" && (len(rcs) != 1 || rcs[0].Name != k["runtimeClass"] || rcs[0].Handler != h) {
				t.Errorf("RuntimeClasses %+v, want one named %v of handler %s", rcs, k["runtimeClass"], h)
			}
			var netpols bool
			for _, rule := range one[*rbacv1.Role](t, r, "Role").Rules {
				netpols = netpols || slices.Contains(rule.APIGroups, "networking.k8s.io") && slices.Contains(rule.Resources, "networkpolicies") &&
					slices.Contains(rule.Verbs, "create") && slices.Contains(rule.Verbs, "delete")
			}
			if !netpols {
				t.Error("the Role cannot create and delete NetworkPolicies (each sandbox's egress)")
			}
		})
	}
}

// TestRenderResolver: with kubernetes.dns.clusterIP, a ClusterIP Service
// of that address maps port 53 (UDP and TCP) to the container's resolver
// port, which the Deployment names; without it, neither.
func TestRenderResolver(t *testing.T) {
	if svcs := all[*corev1.Service](render(t, nil)); len(svcs) != 1 {
		t.Errorf("Services by default: %d, want the API's alone", len(svcs))
	}
	r := render(t, map[string]any{"kubernetes": map[string]any{"dns": map[string]any{"clusterIP": "10.96.0.53", "port": 5300}}})
	var dns *corev1.Service
	for _, s := range all[*corev1.Service](r) {
		if s.Name == "paddock-dns" {
			dns = s
		}
	}
	if dns == nil {
		t.Fatal("no Service paddock-dns")
	}
	if dns.Spec.ClusterIP != "10.96.0.53" || dns.Spec.Type != corev1.ServiceTypeClusterIP || len(dns.Spec.Ports) != 2 {
		t.Fatalf("Service %+v", dns.Spec)
	}
	c := one[*appsv1.Deployment](t, r, "Deployment").Spec.Template.Spec.Containers[0]
	for _, p := range dns.Spec.Ports {
		i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.StrVal })
		if p.Port != 53 || i < 0 || c.Ports[i].ContainerPort != 5300 || c.Ports[i].Protocol != p.Protocol {
			t.Errorf("Service port %+v: want 53 to the container's %s port 5300 (container ports %+v)", p, p.Protocol, c.Ports)
		}
	}
	if !slices.Contains(c.Args, "--k8s-dns-listen=:5300") {
		t.Errorf("args %v", c.Args)
	}
	// The resolver reads a sandbox's NetworkPolicy, and patches it.
	var get, patch bool
	for _, rule := range one[*rbacv1.Role](t, r, "Role").Rules {
		if slices.Contains(rule.APIGroups, "networking.k8s.io") && slices.Contains(rule.Resources, "networkpolicies") {
			get, patch = get || slices.Contains(rule.Verbs, "get"), patch || slices.Contains(rule.Verbs, "patch")
		}
	}
	if !get || !patch {
		t.Errorf("the Role may get NetworkPolicies: %v, patch them: %v; the resolver needs both", get, patch)
	}
}

// TestRenderRefuses: values that would break paddock fail the render.
func TestRenderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{name: "a flag the chart sets", values: map[string]any{"config": map[string]any{"mongodb-uri": "mongodb://x/"}}, want: "set by the chart"},
		{name: "sandboxes in paddock's namespace", values: map[string]any{"sandboxNamespace": map[string]any{"name": deploy.DefaultRelease.Namespace}}, want: "must differ"},
		{name: "no ServiceAccount name", values: map[string]any{"serviceAccount": map[string]any{"create": false}}, want: "serviceAccount.name is required"},
		{name: "a runtime flag beside kubernetes.*", values: map[string]any{"config": map[string]any{"k8s-namespace": "elsewhere"}}, want: "from kubernetes.*"},
		{name: "a RuntimeClass without a name", values: map[string]any{"kubernetes": map[string]any{"runtimeClassHandler": "paddock"}}, want: "needs kubernetes.runtimeClass"},
		{name: "the snapshot registry beside kubernetes.*", values: map[string]any{"config": map[string]any{"snapshot-registry": "r.example/s"}}, want: "from kubernetes.*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := deploy.Render(deploy.DefaultRelease, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestManifestsMatchChart keeps deploy/manifests equal to the chart
// rendered with its defaults.
func TestManifestsMatchChart(t *testing.T) {
	objs, err := deploy.Render(deploy.DefaultRelease, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := deploy.Manifests(objs)
	got, err := os.ReadFile(deploy.ManifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the chart rendered with its defaults: run `go generate ./deploy`", deploy.ManifestsFile)
	}
}
