package kubernetes

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func testDriver(t *testing.T, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{Client: fake.NewClientset(), Namespace: "sandboxes", AgentImage: "registry.local/paddock/agent:1",
		HostImage: HostImage{Ref: "registry.local/paddock/host:1"}}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPodName: every valid sandbox id, those ending in "-" included,
// names valid objects, and different ids different ones.
func TestPodName(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"a", "a-", "a--", "sbx-1", strings.Repeat("z", 63), strings.Repeat("b", 62) + "-"} {
		if !sandbox.ValidID(id) {
			t.Fatalf("%q is not a valid id", id)
		}
		n := podName(id)
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("podName(%q) = %q: %v", id, n, errs)
		}
		if other, ok := seen[n]; ok {
			t.Errorf("%q and %q share the name %q", id, other, n)
		}
		seen[n] = id
	}
}

// TestPodSpec: what keeps the sandbox confined and the credential out of
// its reach is in the Pod it asks for.
func TestPodSpec(t *testing.T) {
	d := testDriver(t, func(c *Config) { c.RuntimeClass = "gvisor"; c.ImagePullSecrets = []string{"regcred", "snapcred"} })
	spec := runtime.Spec{ID: "p-1", Resources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 256, PIDs: 64}, User: "1000"}
	p := d.pod(spec, "img:1", []runtime.Bind{{Source: "/usr", Target: "/usr"}}, spec.Resources)
	ps := p.Spec
	if ps.RuntimeClassName == nil || *ps.RuntimeClassName != "gvisor" {
		t.Errorf("runtime class %v", ps.RuntimeClassName)
	}
	// The node pulls with the named Secrets; the containers see none.
	if !slices.Equal(ps.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "snapcred"}}) {
		t.Errorf("image pull secrets %v", ps.ImagePullSecrets)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the Pod mounts a service account token")
	}
	if p.Annotations[annotationID] != "p-1" || p.Labels[labelManagedBy] != managedBy {
		t.Errorf("meta %v %v", p.Labels, p.Annotations)
	}
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 1 {
		t.Fatalf("%d containers, %d init containers", len(ps.Containers), len(ps.InitContainers))
	}
	c := ps.Containers[0]
	// 64 less the agent's 16: the default user's bomb leaves the total within 64.
	if c.Command[0] != agent.BinaryPath || !slices.Contains(c.Command, "--user=1000") || !slices.Contains(c.Command, "--tasks-per-user=48") {
		t.Errorf("command %q", c.Command)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged == nil || *sc.Privileged ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("security context %+v", sc)
	}
	for _, a := range sc.Capabilities.Add {
		if a == "SYS_ADMIN" || a == "SYS_PTRACE" || a == "NET_ADMIN" || a == "NET_RAW" {
			t.Errorf("capability %s added", a)
		}
	}
	if q := c.Resources.Limits.Cpu().MilliValue(); q != 500 {
		t.Errorf("cpu limit %dm", q)
	}
	if q := c.Resources.Limits.Memory().Value(); q != 256<<20 {
		t.Errorf("memory limit %d", q)
	}
	if !c.Resources.Requests.Cpu().Equal(*c.Resources.Limits.Cpu()) {
		t.Errorf("requests %v, want the limits (a Guaranteed Pod)", c.Resources.Requests)
	}
	// The Secret reaches the init container alone; the sandbox holds the
	// agent read-only.
	for _, m := range c.VolumeMounts {
		if m.Name == "secret" {
			t.Error("the sandbox container mounts the Secret")
		}
		if (m.Name == "agent" || strings.HasPrefix(m.Name, "host-")) && !m.ReadOnly {
			t.Errorf("%s is mounted writable", m.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("env %s comes from %+v", e.Name, e.ValueFrom)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("env from %+v", c.EnvFrom)
	}
	if ps.HostUsers == nil || *ps.HostUsers || !d.Capabilities().UserNS {
		t.Errorf("hostUsers %v, Capabilities().UserNS %v: want a user namespace by default", ps.HostUsers, d.Capabilities().UserNS)
	}
	shared := testDriver(t, func(c *Config) { c.HostUsers = true })
	if p := shared.pod(spec, "img:1", nil, spec.Resources); p.Spec.HostUsers != nil || shared.Capabilities().UserNS ||
		slices.ContainsFunc(p.Spec.Containers[0].Command, func(a string) bool { return strings.HasPrefix(a, "--tasks-per-user") }) {
		t.Errorf("Config.HostUsers: hostUsers %v, Capabilities().UserNS %v, command %q: want the node's users and no per-user task cap (uid 1000 would be every Pod's)",
			p.Spec.HostUsers, shared.Capabilities().UserNS, p.Spec.Containers[0].Command)
	}
}

func TestNetworkPolicy(t *testing.T) {
	meta := testDriver(t, nil).meta("n-1")
	pfx := netip.MustParsePrefix
	// Every allowed block must except these (those inside it).
	mustExcept := []string{"10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8", "192.168.0.0/16", "fc00::/7", "fe80::/10"}
	for _, tc := range []struct {
		name   string
		policy *sandbox.NetworkPolicy
		blocks map[string][]string // allowed CIDR -> extra exceptions wanted; nil: nothing allowed
		err    error
	}{
		{name: "nil is deny-all"},
		{name: "deny-all", policy: &sandbox.NetworkPolicy{Mode: modeDenyAll}},
		{name: "allow-all", policy: &sandbox.NetworkPolicy{Mode: modeAllowAll, DenyCIDRs: []netip.Prefix{pfx("198.51.100.0/24")}},
			blocks: map[string][]string{"0.0.0.0/0": {"198.51.100.0/24"}, "::/0": nil}},
		{name: "custom CIDRs", policy: &sandbox.NetworkPolicy{Mode: modeCustom,
			AllowCIDRs: []netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8::/32")}, DenyCIDRs: []netip.Prefix{pfx("203.0.113.128/25"), pfx("198.51.100.0/24")}},
			blocks: map[string][]string{"203.0.113.0/24": {"203.0.113.128/25"}, "2001:db8::/32": nil}},
		{name: "custom private CIDR is refused", policy: &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx("10.96.0.0/16"), pfx("169.254.169.254/32")}}},
		{name: "custom denied CIDR", policy: &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx("203.0.113.0/25")}, DenyCIDRs: []netip.Prefix{pfx("203.0.113.0/24")}}},
		{name: "custom with nothing allowed", policy: &sandbox.NetworkPolicy{Mode: modeCustom}},
		{name: "domains", policy: &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"example.com"}}, err: sandbox.ErrUnsupported},
		{name: "unknown mode", policy: &sandbox.NetworkPolicy{Mode: "open"}, err: sandbox.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np, err := networkPolicy(meta, tc.policy)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}) {
				t.Errorf("policy types %v", np.Spec.PolicyTypes)
			}
			if np.Spec.PodSelector.MatchLabels[labelPod] != podName("n-1") || len(np.Spec.PodSelector.MatchLabels) != 1 {
				t.Errorf("selector %v: want the sandbox's Pod alone", np.Spec.PodSelector)
			}
			if tc.blocks == nil {
				if len(np.Spec.Egress) != 0 {
					t.Fatalf("egress %+v, want none", np.Spec.Egress)
				}
				return
			}
			if len(np.Spec.Egress) != 2 || len(np.Spec.Egress[1].Ports) != 2 || np.Spec.Egress[1].Ports[0].Port.IntValue() != 53 {
				t.Fatalf("egress %+v: want the blocks and the cluster DNS", np.Spec.Egress)
			}
			got := map[string][]string{}
			for _, peer := range np.Spec.Egress[0].To {
				got[peer.IPBlock.CIDR] = peer.IPBlock.Except
			}
			if len(got) != len(tc.blocks) {
				t.Errorf("blocks %v, want %v", got, tc.blocks)
			}
			for cidr, extra := range tc.blocks {
				except, ok := got[cidr]
				if !ok {
					t.Errorf("%s not allowed: %v", cidr, got)
					continue
				}
				for _, e := range append(slices.Clone(extra), mustExcept...) {
					if within(netip.MustParsePrefix(e), netip.MustParsePrefix(cidr)) && !slices.Contains(except, netip.MustParsePrefix(e).String()) {
						t.Errorf("%s does not except %s: %v", cidr, e, except)
					}
				}
				for _, e := range except {
					if !within(netip.MustParsePrefix(e), netip.MustParsePrefix(cidr)) || e == cidr {
						t.Errorf("%s has exception %s not strictly inside it", cidr, e)
					}
				}
			}
		})
	}
}

// TestPodDiskCap: a disk cap is the sandbox container's ephemeral-storage
// limit, requested by the same fraction as its CPU and memory; without a
// cap there is no limit.
func TestPodDiskCap(t *testing.T) {
	spec := runtime.Spec{ID: "p-1", Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 64, DiskMB: 2048}}
	for _, tc := range []struct {
		fraction float64
		request  int64
	}{{1, 2048 << 20}, {0.25, 512 << 20}} {
		d := testDriver(t, func(c *Config) { c.RequestFraction = tc.fraction })
		if caps := d.Capabilities(); !caps.DiskCap || !caps.DiskCapStops {
			t.Fatalf("capabilities %+v: want a disk cap that stops the sandbox", caps)
		}
		r := d.pod(spec, "img:1", nil, spec.Resources).Spec.Containers[0].Resources
		if q := r.Limits[corev1.ResourceEphemeralStorage]; q.Value() != 2048<<20 {
			t.Errorf("fraction %v: ephemeral-storage limit %v", tc.fraction, q.String())
		}
		if q := r.Requests[corev1.ResourceEphemeralStorage]; q.Value() != tc.request {
			t.Errorf("fraction %v: ephemeral-storage request %v, want %d", tc.fraction, q.String(), tc.request)
		}
		if q := r.Limits[corev1.ResourceMemory]; q.Value() != 256<<20 {
			t.Errorf("fraction %v: memory limit %v", tc.fraction, q.String())
		}
	}
	uncapped := spec
	uncapped.Resources.DiskMB = 0
	d := testDriver(t, nil)
	r := d.pod(uncapped, "img:1", nil, uncapped.Resources).Spec.Containers[0].Resources
	if _, ok := r.Limits[corev1.ResourceEphemeralStorage]; ok {
		t.Errorf("no cap asked, limits %v", r.Limits)
	}
}

// TestEndReason: what List says of a Pod that does not run.
func TestEndReason(t *testing.T) {
	evicted := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted",
		Message: "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "}}
	exited := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
		{Name: "sandbox", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}}}
	evicting := exited.DeepCopy()
	evicting.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		Reason: "TerminationByKubelet", Message: "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "}}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{evicted, "Evicted: Pod ephemeral local storage usage exceeds the total limit of containers 64Mi."},
		{evicting, "TerminationByKubelet: Pod ephemeral local storage usage exceeds the total limit of containers 64Mi."},
		{exited, "its container exited 137: OOMKilled"},
		{&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, "its Pod is pending"},
	} {
		if got := podEndReason(tc.pod); got != tc.want {
			t.Errorf("podEndReason = %q, want %q", got, tc.want)
		}
	}
	// Before the kubelet writes the Pod's status, its eviction event says
	// why (found by the Pod's uid).
	d := testDriver(t, nil)
	pod := exited.DeepCopy()
	pod.UID = "uid-1"
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: d.cfg.Namespace},
		InvolvedObject: corev1.ObjectReference{UID: "uid-1"}, Reason: "Evicted",
		Message: "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "}
	if _, err := d.cfg.Client.CoreV1().Events(d.cfg.Namespace).Create(t.Context(), ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := d.endReason(t.Context(), pod), "Evicted: Pod ephemeral local storage usage exceeds the total limit of containers 64Mi."; got != want {
		t.Errorf("endReason with an eviction event = %q, want %q", got, want)
	}
}

// TestCreateRefuses: what the driver cannot do fails before any object is
// made.
func TestCreateRefuses(t *testing.T) {
	d := testDriver(t, nil)
	for _, tc := range []struct {
		name string
		spec runtime.Spec
		err  error
	}{
		{"bad id", runtime.Spec{ID: "Bad/ID"}, sandbox.ErrInvalid},
		{"host directory", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Source: "/v", Dest: "/data"}}}, sandbox.ErrUnsupported},
		{"claim copy-on-write", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Claim: "vol-1", Dest: "/data", Upper: "/u", Work: "/w"}}}, sandbox.ErrUnsupported},
		{"claim over /tmp", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Claim: "vol-1", Dest: "/tmp/x"}}}, sandbox.ErrInvalid},
		{"claim over the agent", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Claim: "vol-1", Dest: "/"}}}, sandbox.ErrInvalid},
		{"claims overlap", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Claim: "vol-1", Dest: "/a"}, {Claim: "vol-2", Dest: "/a/b"}}}, sandbox.ErrInvalid},
		{"claim name", runtime.Spec{ID: "x", Mounts: []runtime.Mount{{Claim: "Vol_1", Dest: "/a"}}}, sandbox.ErrInvalid},
		{"host network", runtime.Spec{ID: "x", Network: &runtime.NetworkSpec{NSPath: "/run/netns/x"}}, sandbox.ErrUnsupported},
		{"snapshot not pushed", runtime.Spec{ID: "x", Rootfs: &runtime.Rootfs{Lowers: []string{"/l"}, OnHost: true}}, sandbox.ErrUnsupported},
		{"layers without a registry name", runtime.Spec{ID: "x", Image: "sha256:00", Rootfs: &runtime.Rootfs{Lowers: []string{"/l"}}}, sandbox.ErrUnsupported},
		{"path as image", runtime.Spec{ID: "x", Image: "/var/lib/images/x"}, sandbox.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := d.Create(t.Context(), tc.spec); !errors.Is(err, tc.err) {
				t.Fatalf("Create = %v, want %v", err, tc.err)
			}
			cs := d.cfg.Client.(*fake.Clientset)
			if n := len(cs.Actions()); n != 0 {
				t.Errorf("%d API calls: %v", n, cs.Actions())
			}
		})
	}
}

// TestImageRef: a pushed snapshot runs as its image; one of the host
// image keeps the host image's binds.
func TestImageRef(t *testing.T) {
	binds := []runtime.Bind{{Source: "/usr", Target: "/usr"}}
	d := testDriver(t, func(c *Config) { c.HostImage.ReadOnlyBinds = binds })
	for _, tc := range []struct {
		name      string
		rootfs    *runtime.Rootfs
		ref       string
		hostBinds bool
	}{
		{"host", nil, "registry.local/paddock/host:1", true},
		{"image", &runtime.Rootfs{Lowers: []string{"/l"}, Ref: "r.local/img@sha256:aa"}, "r.local/img@sha256:aa", false},
		{"snapshot of an image", &runtime.Rootfs{Lowers: []string{"/s", "/l"}, Ref: "r.local/snaps@sha256:bb"}, "r.local/snaps@sha256:bb", false},
		{"snapshot of the host image", &runtime.Rootfs{Lowers: []string{"/s"}, OnHost: true, Ref: "r.local/snaps@sha256:cc"}, "r.local/snaps@sha256:cc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, got, err := d.imageRef(runtime.Spec{ID: "x", Rootfs: tc.rootfs})
			if err != nil || ref != tc.ref || (len(got) > 0) != tc.hostBinds {
				t.Errorf("imageRef = %q %v %v, want %q, host binds %v", ref, got, err, tc.ref, tc.hostBinds)
			}
		})
	}
}

// TestPodClaims: a claim is a persistentVolumeClaim volume mounted at its
// path, read-only when asked, and the agent gives a writable one's empty
// root to the sandbox user.
func TestPodClaims(t *testing.T) {
	d := testDriver(t, nil)
	spec := runtime.Spec{ID: "p-1", Mounts: []runtime.Mount{{Claim: "vol-rw", Dest: "/data"}, {Claim: "vol-ro", Dest: "/ref", ReadOnly: true}}}
	p := d.pod(spec, "img:1", nil, spec.Resources)
	claims := map[string]bool{}
	for _, v := range p.Spec.Volumes {
		if c := v.PersistentVolumeClaim; c != nil {
			claims[c.ClaimName] = c.ReadOnly
		}
	}
	if len(claims) != 2 || claims["vol-rw"] || !claims["vol-ro"] {
		t.Fatalf("claims %v", claims)
	}
	c := p.Spec.Containers[0]
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.ReadOnly
	}
	if ro, ok := mounts["/data"]; !ok || ro {
		t.Errorf("/data mounted %v %v", ok, ro)
	}
	if ro, ok := mounts["/ref"]; !ok || !ro {
		t.Errorf("/ref mounted %v %v", ok, ro)
	}
	if !slices.Contains(c.Command, "--own-if-empty=/data") || slices.Contains(c.Command, "--own-if-empty=/ref") {
		t.Errorf("agent args %v", c.Command)
	}
	if len(p.Spec.InitContainers[0].VolumeMounts) != 3 {
		t.Errorf("the init container mounts %v", p.Spec.InitContainers[0].VolumeMounts)
	}
}

// TestOwner: replicas sharing a namespace list only their own sandboxes,
// so that none destroys another's as an orphan; without an Owner a driver
// lists them all.
func TestOwner(t *testing.T) {
	cs := fake.NewClientset()
	drivers := map[string]*Driver{}
	for _, owner := range []string{"paddock-a", "paddock-b", ""} {
		drivers[owner] = testDriver(t, func(c *Config) { c.Client, c.Owner = cs, owner })
	}
	for owner, id := range map[string]string{"paddock-a": "sbx-a", "paddock-b": "sbx-b"} {
		s := &corev1.Secret{ObjectMeta: drivers[owner].meta(id)}
		if _, err := cs.CoreV1().Secrets("sandboxes").Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for owner, want := range map[string]string{"paddock-a": "sbx-a", "paddock-b": "sbx-b", "": "sbx-a,sbx-b"} {
		infos, err := drivers[owner].List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, in := range infos {
			ids = append(ids, in.ID)
		}
		slices.Sort(ids)
		if got := strings.Join(ids, ","); got != want {
			t.Errorf("List of owner %q = %s, want %s", owner, got, want)
		}
	}
	if _, err := New(Config{Client: cs, Namespace: "sandboxes", AgentImage: "a", Owner: "not a label/value"}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("New with an invalid Owner = %v, want ErrInvalid", err)
	}
}

// TestAdoptRelabels: Adopt moves a sandbox's Secret, NetworkPolicy and
// Pod to the adopting driver's Owner (its List has it, the old owner's
// not), again without harm, and finds nothing of a sandbox that is gone.
// TestAdopt does it on a real cluster, with the sandbox running.
func TestAdoptRelabels(t *testing.T) {
	cs := fake.NewClientset()
	a := testDriver(t, func(c *Config) { c.Client, c.Owner = cs, "paddock-a" })
	b := testDriver(t, func(c *Config) { c.Client, c.Owner = cs, "paddock-b" })
	const id = "sbx-adopted"
	ctx := t.Context()
	if _, err := cs.CoreV1().Secrets("sandboxes").Create(ctx, &corev1.Secret{ObjectMeta: a.meta(id)}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("sandboxes").Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: a.meta(id)}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("sandboxes").Create(ctx, &corev1.Pod{ObjectMeta: a.meta(id)}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		info, err := b.Adopt(ctx, id)
		if err != nil || info.ID != id || info.Running {
			t.Fatalf("Adopt = %+v, %v; want %s, not running (the fake Pod has no status)", info, err, id)
		}
	}
	name := podName(id)
	s, err := cs.CoreV1().Secrets("sandboxes").Get(ctx, name, metav1.GetOptions{})
	if err != nil || s.Labels[labelOwner] != "paddock-b" {
		t.Errorf("the Secret's owner: %v, %v", s.Labels, err)
	}
	np, err := cs.NetworkingV1().NetworkPolicies("sandboxes").Get(ctx, name, metav1.GetOptions{})
	if err != nil || np.Labels[labelOwner] != "paddock-b" {
		t.Errorf("the NetworkPolicy's owner: %v, %v", np.Labels, err)
	}
	p, err := cs.CoreV1().Pods("sandboxes").Get(ctx, name, metav1.GetOptions{})
	if err != nil || p.Labels[labelOwner] != "paddock-b" || p.Labels[labelPod] != name {
		t.Errorf("the Pod's labels: %v, %v", p.Labels, err)
	}
	if infos, err := b.List(ctx); err != nil || len(infos) != 1 || infos[0].ID != id {
		t.Errorf("the adopter's List = %+v, %v", infos, err)
	}
	if infos, err := a.List(ctx); err != nil || len(infos) != 0 {
		t.Errorf("the old owner's List = %+v, %v; want nothing", infos, err)
	}
	if _, err := b.Adopt(ctx, "sbx-gone"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Adopt of a sandbox with no objects = %v, want ErrNotFound", err)
	}
}

// TestUpdateEgressPatch: UpdateEgress replaces the NetworkPolicy's spec
// with the one Create would make, refuses what Create refuses (leaving
// the object as it was), and changes no object of another sandbox.
func TestUpdateEgressPatch(t *testing.T) {
	cs := fake.NewClientset()
	d := testDriver(t, func(c *Config) { c.Client = cs })
	ctx := t.Context()
	const id = "sbx-egress"
	nps := cs.NetworkingV1().NetworkPolicies("sandboxes")
	created, err := networkPolicy(d.meta(id), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nps.Create(ctx, created, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spec := func() networkingv1.NetworkPolicySpec {
		t.Helper()
		np, err := nps.Get(ctx, podName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return np.Spec
	}
	custom := &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	if err := d.UpdateEgress(ctx, id, custom); err != nil {
		t.Fatal(err)
	}
	want, _ := networkPolicy(d.meta(id), custom)
	if got := spec(); !equality.Semantic.DeepEqual(got, want.Spec) {
		t.Errorf("spec after the update:\n%+v\nwant\n%+v", got, want.Spec)
	}
	domains := &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"example.com"}}
	if err := d.UpdateEgress(ctx, id, domains); !errors.Is(err, sandbox.ErrUnsupported) {
		t.Errorf("an update to domains = %v, want ErrUnsupported", err)
	}
	if got := spec(); !equality.Semantic.DeepEqual(got, want.Spec) {
		t.Errorf("a refused update changed the spec: %+v", got)
	}
	if err := d.UpdateEgress(ctx, id, nil); err != nil || len(spec().Egress) != 0 {
		t.Errorf("an update to deny-all = %v, egress %+v", err, spec().Egress)
	}
	if err := d.UpdateEgress(ctx, "sbx-unknown", custom); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("an update of an unknown sandbox = %v, want ErrNotFound", err)
	}

	// An object of the same name whose id differs (a digest collision)
	// fails the patch's test and stays as it was.
	const other = "sbx-other"
	np, _ := networkPolicy(d.meta(other), nil)
	np.Annotations[annotationID] = "someone-else"
	if _, err := nps.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.UpdateEgress(ctx, other, custom); err == nil {
		t.Error("the update of another sandbox's object succeeded")
	}
	if got, err := nps.Get(ctx, podName(other), metav1.GetOptions{}); err != nil || len(got.Spec.Egress) != 0 {
		t.Errorf("another sandbox's object: %+v, %v; want it untouched", got, err)
	}
}

// TestNewRefuses: a config the cluster would refuse at the first Pod fails
// at start instead.
func TestNewRefuses(t *testing.T) {
	base := Config{Client: fake.NewClientset(), Namespace: "sandboxes", AgentImage: "registry.local/paddock/agent:1"}
	for name, mod := range map[string]func(*Config){
		"no client":                  func(c *Config) { c.Client = nil },
		"request fraction above 1":   func(c *Config) { c.RequestFraction = 1.5 },
		"owner not a label value":    func(c *Config) { c.Owner = "replica/1" },
		"pull secret not a name":     func(c *Config) { c.ImagePullSecrets = []string{"Reg_Cred"} },
		"relative host image source": func(c *Config) { c.HostImage.ReadOnlyBinds = []runtime.Bind{{Source: "usr", Target: "/usr"}} },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			mod(&cfg)
			if _, err := New(cfg); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "k8s_config" {
				t.Fatalf("New = %v, want ErrInvalid k8s_config", err)
			}
		})
	}
}
