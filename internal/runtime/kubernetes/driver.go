package kubernetes

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Labels and annotations on every object of a sandbox.
const (
	// labelManagedBy=managedBy marks what this driver made, for List.
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "paddock"
	// labelPod names the sandbox's Pod on its Secret and Pod, for the
	// NetworkPolicy's selector.
	labelPod = "paddock.dev/pod"
	// labelSandbox is the sandbox id when it is a valid label value (for
	// people with kubectl; the driver reads annotationID).
	labelSandbox = "paddock.dev/sandbox"
	// labelOwner is Config.Owner: the paddock replica whose sandbox it is.
	labelOwner = "paddock.dev/owner"
	// annotationID is the sandbox id, authoritative.
	annotationID = "paddock.dev/sandbox-id"
)

// Paths inside the Pod.
const (
	agentDir = "/.paddock" // agent.BinaryPath's directory
	credDir  = "/run/paddock-cred"
	// baseDir is where a Pod of the host image mounts its image again
	// (an image volume named baseVolume), for snapshots.
	baseDir    = "/.paddock-base"
	baseVolume = "image-base"
	secretDir  = "/run/paddock-secret" // the init container's only
	tokenKey   = "token"
	// initAgent is where the agent image holds the agent.
	initAgent = "/paddock-agent"
)

// Config configures the driver.
type Config struct {
	// Client reaches the API server with rights on Pods, Secrets and
	// NetworkPolicies in Namespace. Required.
	Client kubernetes.Interface
	// Namespace holds every sandbox. Required.
	Namespace string
	// RuntimeClass is the Pods' RuntimeClass (gvisor, kata...); "" is the
	// cluster's default (runc).
	RuntimeClass string
	// AgentImage is a registry image holding the static agent at
	// /paddock-agent, run as the init container. Required.
	AgentImage string
	// HostImage is what the image "host" (sandbox.HostImage) means here.
	HostImage HostImage
	// PullPolicy of the sandbox images; default IfNotPresent.
	PullPolicy corev1.PullPolicy
	// ImagePullSecrets name Secrets in Namespace (type
	// kubernetes.io/dockerconfigjson) that every sandbox Pod lists, so
	// that its node pulls private images and the snapshots pushed to a
	// registry that wants a login. The operator makes them; paddock only
	// names them, and no credential enters a Pod's containers.
	ImagePullSecrets []string
	// RequestFraction makes the Pods' requests this fraction of their
	// limits, 0 < f <= 1; default 1, a Guaranteed Pod. Below 1 the Pod is
	// Burstable: its node may be overcommitted (a warm pool's idle Pods,
	// a test cluster of 2 cores).
	RequestFraction float64
	// CgroupVersion of the cluster's nodes, as Capabilities reports it;
	// default 2.
	CgroupVersion int
	// Owner, when set, labels every object this driver makes, and List
	// reports only the sandboxes that carry it: the name of the paddock
	// replica (its node name) among several sharing Namespace, each of
	// which reconciles its own sandboxes and would otherwise destroy the
	// others' as orphans. A valid label value. "": every paddock sandbox
	// in Namespace is this driver's.
	Owner string
	// HostUsers runs the Pods in their node's user namespace
	// (`hostUsers: true`), for nodes whose runtime cannot give each Pod
	// one of its own (runc < 1.2, a kernel or filesystem without idmapped
	// mounts). By default (false) every Pod has a user namespace: root
	// and the sandbox's user inside are unprivileged host uids of a range
	// the kubelet gives that Pod alone. (Per-user counts the kernel also
	// charges to a namespace's owner, such as inotify instances, stay
	// shared: the runtime makes every Pod's namespace as root.)
	HostUsers bool
	// StartTimeout bounds a Pod's scheduling, pull and start in Create
	// beyond the caller's context; default 2 minutes.
	StartTimeout time.Duration
	// DNS, when set, makes the driver its Pods' resolver (see DNSConfig),
	// which lets policies allow egress by domain; without it they are
	// refused, and Pods use the cluster's DNS.
	DNS    *DNSConfig
	Logger *slog.Logger
}

// HostImage is the "host" image on a cluster: a registry image, and
// optionally directories of the node bound read-only over it (hostPath),
// as the runc driver binds the host's /usr. Binds are only for a cluster
// whose nodes are this host (tests, a one-node development cluster).
type HostImage struct {
	Ref           string
	ReadOnlyBinds []runtime.Bind
}

// Driver runs sandboxes as Pods. Safe for concurrent use.
type Driver struct {
	cfg Config
	log *slog.Logger

	dns *resolver // nil without Config.DNS

	mu     sync.Mutex
	tokens map[string]string // guarded by mu: sandbox id -> agent credential
}

var (
	_ runtime.Driver         = (*Driver)(nil)
	_ runtime.Addresser      = (*Driver)(nil)
	_ runtime.Adopter        = (*Driver)(nil)
	_ runtime.EgressUpdater  = (*Driver)(nil)
	_ runtime.RegistryImager = (*Driver)(nil)
)

// New checks cfg and returns a driver. It makes no request: a cluster that
// is not there yet fails the first Create.
func New(cfg Config) (*Driver, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.AgentImage == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: Client, Namespace and AgentImage are required")
	}
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = corev1.PullIfNotPresent
	}
	if cfg.RequestFraction == 0 {
		cfg.RequestFraction = 1
	}
	if cfg.RequestFraction < 0 || cfg.RequestFraction > 1 {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: RequestFraction %g is not in (0, 1]", cfg.RequestFraction)
	}
	if cfg.CgroupVersion == 0 {
		cfg.CgroupVersion = 2
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if errs := validation.IsValidLabelValue(cfg.Owner); len(errs) > 0 {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: Owner %q is not a label value: %s", cfg.Owner, strings.Join(errs, "; "))
	}
	for _, name := range cfg.ImagePullSecrets {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: image pull secret %q is not a Secret name: %s", name, strings.Join(errs, "; "))
		}
	}
	for _, b := range cfg.HostImage.ReadOnlyBinds {
		if !strings.HasPrefix(b.Source, "/") || !strings.HasPrefix(b.Target, "/") {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: host image bind %v is not absolute", b)
		}
	}
	d := &Driver{cfg: cfg, log: cfg.Logger.With("driver", "kubernetes"), tokens: map[string]string{}}
	if cfg.DNS != nil {
		dc, err := cfg.DNS.withDefaults()
		if err != nil {
			return nil, err
		}
		d.cfg.DNS = dc
		d.dns = newResolver(d, dc)
	}
	return d, nil
}

// Capabilities: the agent's seccomp filter confines every command (and the
// Pod runs under the runtime's default profile besides); a user namespace
// unless Config.HostUsers; snapshots of running sandboxes (see Snapshot)
// on Linux; no disk cap yet.
// ListIsCheap marks List as cheap enough for the node to poll for dead
// sandboxes (an evicted Pod): two list calls to the API server.
func (d *Driver) ListIsCheap() {}

func (d *Driver) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Name: "kubernetes", CgroupVersion: d.cfg.CgroupVersion, Seccomp: true, UserNS: !d.cfg.HostUsers,
		Snapshot: goruntime.GOOS == "linux", SnapshotRunningOnly: true, DiskCap: true, DiskCapStops: true}
}

// HostImageRef is Config.HostImage's registry image.
func (d *Driver) HostImageRef() string { return d.cfg.HostImage.Ref }

// podName is the name of a sandbox's objects. Sandbox ids may end in "-",
// which no object name may, so the name is a digest of the id; the id
// itself is in annotationID.
func podName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "sbx-" + hex.EncodeToString(sum[:10])
}

func (d *Driver) labels(id string) map[string]string {
	l := map[string]string{labelManagedBy: managedBy, labelPod: podName(id)}
	if len(validation.IsValidLabelValue(id)) == 0 {
		l[labelSandbox] = id
	}
	if d.cfg.Owner != "" {
		l[labelOwner] = d.cfg.Owner
	}
	return l
}

func (d *Driver) meta(id string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: podName(id), Namespace: d.cfg.Namespace, Labels: d.labels(id),
		Annotations: map[string]string{annotationID: id}}
}

// imageRef is the registry image a sandbox's container runs, and the
// node directories bound over it.
func (d *Driver) imageRef(spec runtime.Spec) (string, []runtime.Bind, error) {
	switch {
	case spec.Rootfs != nil && spec.Rootfs.Ref != "" && spec.Rootfs.OnHost:
		// A snapshot pushed on top of the host image: the host image's
		// binds lie over it as over the host image itself.
		return spec.Rootfs.Ref, d.cfg.HostImage.ReadOnlyBinds, nil
	case spec.Rootfs != nil && spec.Rootfs.Ref != "":
		return spec.Rootfs.Ref, nil, nil
	case spec.Rootfs != nil && spec.Rootfs.OnHost:
		return "", nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_registry_ref", "the kubernetes driver runs a snapshot only once it is pushed to a registry (paddock serve --snapshot-registry)")
	case spec.Rootfs != nil && len(spec.Rootfs.Lowers) > 0:
		// Layers on paddock's host with no registry name (a snapshot, an
		// image known by its digest alone): a node cannot pull them.
		return "", nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_registry_ref", "the kubernetes driver runs images from a registry only; %q has no registry reference", spec.Image)
	case spec.Image == "" || spec.Image == sandbox.HostImage:
		if d.cfg.HostImage.Ref == "" {
			return "", nil, sandbox.Errorf(sandbox.ErrInvalid, "unknown_image", "the kubernetes driver has no host image configured")
		}
		return d.cfg.HostImage.Ref, d.cfg.HostImage.ReadOnlyBinds, nil
	case strings.ContainsAny(spec.Image, " \t\n") || strings.HasPrefix(spec.Image, "/"):
		return "", nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_image", "image %q is not a registry reference", spec.Image)
	}
	// The node resolved the image to directories on its own host, which a
	// cluster cannot reach: the name itself is the registry reference.
	return spec.Image, nil, nil
}

// Create makes the Secret, the NetworkPolicy and the Pod, waits until the
// agent answers at the Pod IP and returns a client for it. On error it
// removes whatever it made.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (*agent.Client, error) {
	if err := ocispec.CheckID(spec.ID); err != nil {
		return nil, err
	}
	switch {
	case spec.Network != nil:
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_host_network", "a Pod has the cluster's network; it cannot join one prepared on this host")
	}
	if err := checkClaims(spec.Mounts); err != nil {
		return nil, err
	}
	ref, binds, err := d.imageRef(spec)
	if err != nil {
		return nil, err
	}
	policy, err := egressPolicy(d.meta(spec.ID), spec.Egress, d.cfg.DNS, nil)
	if err != nil {
		return nil, err
	}
	res := ocispec.WithDefaults(spec.Resources)
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	token := hex.EncodeToString(raw[:])

	// The Secret first: it is what makes the id taken, and what List finds
	// of a sandbox whose Pod is gone.
	secret := &corev1.Secret{ObjectMeta: d.meta(spec.ID), Immutable: new(true), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{tokenKey: []byte(token)}}
	if _, err := d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, sandbox.Errorf(sandbox.ErrConflict, "exists", "sandbox %s exists", spec.ID)
		}
		return nil, fmt.Errorf("kubernetes: create secret of %s: %w", spec.ID, apiErr(err))
	}
	c, err := d.create(ctx, spec, ref, binds, res, policy, token)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := d.Destroy(cctx, spec.ID); derr != nil {
			d.log.Error("cleanup after a failed create", "sandbox", spec.ID, "err", derr)
		}
		return nil, err
	}
	d.mu.Lock()
	d.tokens[spec.ID] = token
	d.mu.Unlock()
	return c, nil
}

func (d *Driver) create(ctx context.Context, spec runtime.Spec, ref string, binds []runtime.Bind, res sandbox.Resources, policy policyObject, token string) (*agent.Client, error) {
	if _, err := d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("kubernetes: create network policy of %s: %w", spec.ID, apiErr(err))
	}
	pod := d.pod(spec, ref, binds, res)
	created, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: create pod of %s: %w", spec.ID, apiErr(err))
	}
	wctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	running, err := d.waitRunning(wctx, created)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: sandbox %s: %w", spec.ID, err)
	}
	c := agent.TCPClient(net.JoinHostPort(running.Status.PodIP, strconv.Itoa(agent.TCPPort)), token)
	info, err := ping(wctx, c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kubernetes: agent of %s: %w", spec.ID, err)
	}
	if err := info.UserErr(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ping asks the agent until it answers: its container runs a moment
// before it listens.
func ping(ctx context.Context, c *agent.Client) (agent.Info, error) {
	for {
		info, err := c.Ping(ctx)
		if err == nil || !errors.Is(err, sandbox.ErrUnavailable) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return agent.Info{}, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pod is the sandbox's Pod.
func (d *Driver) pod(spec runtime.Spec, ref string, binds []runtime.Bind, res sandbox.Resources) *corev1.Pod {
	grace := int64(1)
	no := false
	root := int64(0)
	mem := resourceQuantity(res.MemoryMB<<20, "")
	cpu := resourceQuantity(int64(res.VCPUs*1000), "m")
	limits := corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem}
	requests := limits
	if f := d.cfg.RequestFraction; f < 1 {
		requests = corev1.ResourceList{
			corev1.ResourceCPU:    resourceQuantity(max(1, int64(res.VCPUs*1000*f)), "m"),
			corev1.ResourceMemory: resourceQuantity(max(1<<20, int64(float64(res.MemoryMB<<20)*f)), ""),
		}
	}
	if res.DiskMB > 0 {
		// The disk cap: the kubelet evicts a Pod whose writable layer,
		// logs and disk-backed emptyDirs (the agent's copy) together pass
		// its containers' limits. Requested as the CPU and memory are, so
		// the scheduler counts it against the node's ephemeral storage.
		limits = maps.Clone(limits)
		limits[corev1.ResourceEphemeralStorage] = resourceQuantity(res.DiskMB<<20, "")
		if f := d.cfg.RequestFraction; f < 1 {
			requests[corev1.ResourceEphemeralStorage] = resourceQuantity(max(1<<20, int64(float64(res.DiskMB<<20)*f)), "")
		} else {
			requests = limits
		}
	}
	caps := make([]corev1.Capability, 0, len(sandbox.Capabilities))
	for _, c := range sandbox.Capabilities {
		caps = append(caps, corev1.Capability(strings.TrimPrefix(c, "CAP_")))
	}
	memory := func(limit int64) corev1.VolumeSource {
		q := resourceQuantity(limit, "")
		return corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &q}}
	}
	secretMode := int32(0o400)
	volumes := []corev1.Volume{
		{Name: "agent", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "cred", VolumeSource: memory(1 << 20)},
		{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: podName(spec.ID), DefaultMode: &secretMode}}},
		// The command logs and /tmp in the sandbox's memory, as the runc
		// driver's tmpfs mounts.
		{Name: "state", VolumeSource: memory(ocispec.LogTmpfsBytes(res))},
		{Name: "tmp", VolumeSource: memory(min(res.MemoryMB<<20, 1<<30))},
	}
	mounts := []corev1.VolumeMount{
		{Name: "agent", MountPath: agentDir, ReadOnly: true},
		{Name: "cred", MountPath: credDir},
		{Name: "state", MountPath: agent.StateDir},
		{Name: "tmp", MountPath: "/tmp"},
	}
	rro := corev1.RecursiveReadOnlyIfPossible
	for i, b := range binds {
		name := "host-" + strconv.Itoa(i)
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: b.Source}}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: b.Target, ReadOnly: true, RecursiveReadOnly: &rro})
	}
	args := append([]string{
		"--listen-tcp=:" + strconv.Itoa(agent.TCPPort),
		"--token-file=" + credDir + "/" + tokenKey,
		"--user=" + spec.User,
	}, ocispec.AgentLogArgs(res)...)
	cv, cm, cargs := claimVolumes(spec.Mounts)
	volumes, mounts, args = append(volumes, cv...), append(mounts, cm...), append(args, cargs...)
	if onHostImage(spec) {
		// paddock holds no layers of the host image, so the Pod mounts
		// its own image again, as it was, for the agent to tell the
		// sandbox's deletions in a snapshot (Snapshot). The sandbox may
		// read it: it is the image it runs.
		volumes = append(volumes, corev1.Volume{Name: baseVolume, VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: ref, PullPolicy: d.cfg.PullPolicy}}})
		mounts = append(mounts, corev1.VolumeMount{Name: baseVolume, MountPath: baseDir, ReadOnly: true})
		args = append(args, "--base-root="+baseDir)
	}
	if !d.cfg.HostUsers {
		// A Pod's cgroup has the node's one pids limit and is read-only
		// inside, so the sandbox's own limit is a per-user one: in the
		// Pod's user namespace each of its users is a host uid no other
		// Pod has, and the kernel counts RLIMIT_NPROC per user there.
		// Never with the node's users: uid 1000 would be every Pod's.
		args = append(args, "--tasks-per-user="+strconv.FormatInt(tasksPerUser(res.PIDs), 10))
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.ID
	}
	if len(validation.IsDNS1123Label(hostname)) > 0 {
		hostname = "" // the Pod's name
	}
	p := &corev1.Pod{
		ObjectMeta: d.meta(spec.ID),
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			// No credential of the cluster's in the sandbox, nor the
			// addresses of its services.
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			Hostname:                     hostname,
			Volumes:                      volumes,
			InitContainers: []corev1.Container{{
				Name: "agent-install", Image: d.cfg.AgentImage, ImagePullPolicy: d.cfg.PullPolicy,
				Command: []string{initAgent, "install", "--agent", agentDir + "/agent",
					"--token-from", secretDir + "/" + tokenKey, "--token-to", credDir + "/" + tokenKey},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "agent", MountPath: agentDir},
					{Name: "cred", MountPath: credDir},
					{Name: "secret", MountPath: secretDir, ReadOnly: true},
				},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &root, RunAsGroup: &root, AllowPrivilegeEscalation: &no,
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				// A copy of a few MB: small requests, so that it never
				// weighs more than the sandbox in scheduling.
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resourceQuantity(10, "m"), corev1.ResourceMemory: resourceQuantity(16<<20, "")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resourceQuantity(500, "m"), corev1.ResourceMemory: resourceQuantity(64<<20, "")},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Containers: []corev1.Container{{
				Name: "sandbox", Image: ref, ImagePullPolicy: d.cfg.PullPolicy,
				Command:      append([]string{agent.BinaryPath}, args...),
				Env:          []corev1.EnvVar{{Name: "PATH", Value: strings.TrimPrefix(ocispec.AgentPATH, "PATH=")}},
				WorkingDir:   "/",
				VolumeMounts: mounts,
				Ports:        []corev1.ContainerPort{{Name: "agent", ContainerPort: agent.TCPPort, Protocol: corev1.ProtocolTCP}},
				Resources:    corev1.ResourceRequirements{Limits: limits, Requests: requests},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &root, RunAsGroup: &root, Privileged: &no,
					// no_new_privs, and the agent's capabilities only: the
					// same set the runc driver gives it.
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
	if d.cfg.DNS != nil {
		// Every Pod, whatever its policy now: UpdateEgress may give a
		// running one a policy of domains.
		p.Spec.DNSPolicy = corev1.DNSNone
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{d.cfg.DNS.Address.String()}}
	}
	if d.cfg.RuntimeClass != "" {
		rc := d.cfg.RuntimeClass
		p.Spec.RuntimeClassName = &rc
	}
	for _, name := range d.cfg.ImagePullSecrets {
		p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if !d.cfg.HostUsers {
		// The kubelet maps the Pod's ids to a range of its own and every
		// volume through idmapped mounts, so files keep the ids the Pod
		// sees on disk (the emptyDirs the init container fills included).
		p.Spec.HostUsers = &no
	}
	return p
}

// onHostImage reports a sandbox of the host image, or of a snapshot
// stacked on it: one whose image's layers paddock does not hold.
func onHostImage(spec runtime.Spec) bool {
	return spec.Rootfs == nil || spec.Rootfs.OnHost
}

// tasksPerUser is the RLIMIT_NPROC a Pod's agent sets for a sandbox
// limited to pids tasks: the limit less the agent's own threads (root's
// count inside), so that the default user's runaway forks leave the
// sandbox's total within it. Root's commands draw on a count of their own.
func tasksPerUser(pids int64) int64 {
	return pids - min(agentTasks, pids/2)
}

// agentTasks is what the agent's threads may take of a sandbox's pids
// limit: a Go server of a few goroutines blocked in syscalls.
const agentTasks = 16

// waitRunning watches the Pod until its sandbox container runs with an
// address, and fails at once when it cannot (a pull that fails, a
// container that exits).
func (d *Driver) waitRunning(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	pods := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace)
	rv := pod.ResourceVersion
	for {
		if done, err := podStarted(pod); done || err != nil {
			return pod, err
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: rv})
		if err != nil {
			if ctx.Err() != nil {
				return nil, startTimeout(ctx, pod)
			}
			return nil, apiErr(err)
		}
		p, err := d.watchStarted(ctx, pod, w)
		w.Stop()
		if p != nil || err != nil {
			return p, err
		}
		if ctx.Err() != nil {
			return nil, startTimeout(ctx, pod)
		}
		// The watch ended (a timeout, a compaction): look again.
		if pod, err = pods.Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return nil, apiErr(err)
		}
		rv = pod.ResourceVersion
	}
}

func (d *Driver) watchStarted(ctx context.Context, pod *corev1.Pod, w watch.Interface) (*corev1.Pod, error) {
	// A refusal of the kubelet's shows in events only, not in the Pod's
	// status, which stays Pending: look for it now and then.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-tick.C:
			if err := d.userNSRefused(ctx, pod); err != nil {
				return nil, err
			}
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, sandbox.Errorf(sandbox.ErrUnavailable, "pod_deleted", "its Pod was deleted while starting")
			case watch.Error:
				return nil, nil
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pod = p
			if done, err := podStarted(p); done || err != nil {
				return p, err
			}
		}
	}
}

// userNSRefused is a clear error if the kubelet refused the Pod a user
// namespace (`hostUsers: false` on a node whose runtime has none, runc
// before 1.2): it retries forever, so the Pod would only time out. Other
// sandbox failures may pass (a network plugin starting), and a namespace
// whose events paddock may not read is not an error.
func (d *Driver) userNSRefused(ctx context.Context, pod *corev1.Pod) error {
	if d.cfg.HostUsers {
		return nil
	}
	for _, e := range d.podEvents(ctx, pod, "FailedCreatePodSandBox") {
		if strings.Contains(e.Message, "hostUsers") {
			return sandbox.Errorf(sandbox.ErrUnavailable, "no_user_namespace",
				"its node %s cannot give the Pod a user namespace (%s): the node needs runc >= 1.2 under its container runtime and a kernel with idmapped mounts, "+
					"or paddock serve --k8s-host-users runs Pods in the node's user namespace (root in a sandbox is then root on the node)",
				pod.Spec.NodeName, strings.TrimPrefix(e.Message, "Failed to create pod sandbox: "))
		}
	}
	return nil
}

func startTimeout(ctx context.Context, pod *corev1.Pod) error {
	return sandbox.Errorf(sandbox.ErrUnavailable, "start_timeout", "its Pod did not start: %v (phase %s)", context.Cause(ctx), pod.Status.Phase)
}

// podStarted reports whether the sandbox container runs and the Pod has an
// address, or why it never will.
func podStarted(p *corev1.Pod) (bool, error) {
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return false, sandbox.Errorf(sandbox.ErrUnavailable, "pod_ended", "its Pod ended: %s %s %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
				return false, sandbox.Errorf(sandbox.ErrInvalid, "image_pull", "container %s: image %s: %s: %s", cs.Name, cs.Image, w.Reason, w.Message)
			case "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff":
				return false, sandbox.Errorf(sandbox.ErrUnavailable, "container_start", "container %s: %s: %s", cs.Name, w.Reason, w.Message)
			}
		}
		if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || cs.Name == "sandbox") {
			return false, sandbox.Errorf(sandbox.ErrUnavailable, "container_exit", "container %s exited %d: %s %s", cs.Name, t.ExitCode, t.Reason, strings.TrimSpace(t.Message))
		}
	}
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false, nil
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "sandbox" && cs.State.Running != nil {
			return true, nil
		}
	}
	return false, nil
}

// Agent returns a client for a running sandbox's agent, from the API
// server's view alone (a restarted paddock re-adopts its sandboxes).
func (d *Driver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	pod, err := d.runningPod(ctx, id)
	if err != nil {
		return nil, err
	}
	token, err := d.token(ctx, id)
	if err != nil {
		return nil, err
	}
	return agent.TCPClient(net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(agent.TCPPort)), token), nil
}

// Address is the sandbox's Pod IP, where its ports are reached.
func (d *Driver) Address(ctx context.Context, id string) (netip.Addr, error) {
	pod, err := d.runningPod(ctx, id)
	if err != nil {
		return netip.Addr{}, err
	}
	addr, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		return netip.Addr{}, sandbox.Errorf(sandbox.ErrUnavailable, "no_address", "sandbox %s: Pod IP %q: %v", id, pod.Status.PodIP, err)
	}
	return addr, nil
}

// runningPod is the sandbox's Pod if it runs; ErrNotRunning if the
// sandbox is known (its Secret exists) but not running, else ErrNotFound.
func (d *Driver) runningPod(ctx context.Context, id string) (*corev1.Pod, error) {
	if err := ocispec.CheckID(id); err != nil {
		return nil, err
	}
	pod, err := d.getPod(ctx, id)
	if err != nil {
		return nil, err
	}
	if pod == nil || !podRunning(pod) {
		if _, err := d.getSecret(ctx, id); err != nil {
			return nil, err
		}
		return nil, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
	}
	return pod, nil
}

func (d *Driver) token(ctx context.Context, id string) (string, error) {
	d.mu.Lock()
	t, ok := d.tokens[id]
	d.mu.Unlock()
	if ok {
		return t, nil
	}
	s, err := d.getSecret(ctx, id)
	if err != nil {
		return "", err
	}
	t = string(s.Data[tokenKey])
	if t == "" {
		return "", sandbox.Errorf(sandbox.ErrUnavailable, "no_token", "sandbox %s: its Secret holds no credential", id)
	}
	d.mu.Lock()
	d.tokens[id] = t
	d.mu.Unlock()
	return t, nil
}

func podRunning(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	done, err := podStarted(p)
	return done && err == nil
}

// endReason says why a sandbox's Pod does not run: podEndReason, or, while
// the kubelet has not yet written why it ended the Pod (it kills the
// containers first), its eviction event, which it records before the kill.
func (d *Driver) endReason(ctx context.Context, p *corev1.Pod) string {
	why := podEndReason(p)
	if p.Status.Reason != "" || p.DeletionTimestamp != nil {
		return why
	}
	if events := d.podEvents(ctx, p, "Evicted"); len(events) > 0 {
		return strings.TrimSpace("Evicted: " + events[0].Message)
	}
	return why
}

// podEvents returns the Pod's events of one reason, none when they cannot
// be read (a namespace whose events paddock may not read is not an error:
// they only make an error or a reason clearer).
func (d *Driver) podEvents(ctx context.Context, pod *corev1.Pod, reason string) []corev1.Event {
	sel := fields.Set{"involvedObject.uid": string(pod.UID), "reason": reason}.AsSelector().String()
	events, err := d.cfg.Client.CoreV1().Events(d.cfg.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		d.log.Debug("read the pod's events", "pod", pod.Name, "reason", reason, "err", err)
		return nil
	}
	return events.Items
}

// podEndReason says why a sandbox's Pod does not run, from its status: the
// kubelet's reason for the Pod (an eviction past its ephemeral-storage
// limit: the disk cap) or its container's exit.
func podEndReason(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "its Pod is being deleted"
	}
	if p.Status.Reason != "" || p.Status.Message != "" {
		return strings.TrimSpace(strings.Trim(p.Status.Reason+": "+p.Status.Message, ": "))
	}
	// The kubelet marks a Pod it evicts before it records the phase, so
	// this comes first to the container's exit (0: the agent ends on
	// SIGTERM).
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return strings.TrimSpace(strings.Trim(c.Reason+": "+c.Message, ": "))
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; cs.Name == "sandbox" && t != nil {
			return strings.TrimSpace(fmt.Sprintf("its container exited %d: %s %s", t.ExitCode, t.Reason, t.Message))
		}
	}
	return "its Pod is " + strings.ToLower(string(p.Status.Phase))
}

// getPod returns the sandbox's Pod, nil if there is none; one of another
// sandbox (a name collision) counts as none.
func (d *Driver) getPod(ctx context.Context, id string) (*corev1.Pod, error) {
	p, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && p.Annotations[annotationID] != id) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: get pod of %s: %w", id, apiErr(err))
	}
	return p, nil
}

// getSecret returns the sandbox's Secret, or ErrNotFound: a sandbox is
// known while its Secret exists.
func (d *Driver) getSecret(ctx context.Context, id string) (*corev1.Secret, error) {
	s, err := d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && s.Annotations[annotationID] != id) {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: get secret of %s: %w", id, apiErr(err))
	}
	return s, nil
}

// Stop deletes the Pod and waits until it is gone. The grace is 1 s, not
// 0: a delete with grace 0 removes the object at once, before the kubelet
// has killed anything, so "gone" would not mean "stopped". The agent
// ends its commands on the SIGTERM, and the kubelet kills what is left a
// second later. The Secret and NetworkPolicy stay until Destroy.
// Idempotent.
func (d *Driver) Stop(ctx context.Context, id string) error {
	if err := ocispec.CheckID(id); err != nil {
		return err
	}
	return d.deletePod(ctx, id)
}

func (d *Driver) deletePod(ctx context.Context, id string) error {
	pods := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace)
	pod, err := d.getPod(ctx, id)
	if err != nil || pod == nil {
		return err
	}
	grace := int64(1)
	err = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("kubernetes: delete pod of %s: %w", id, apiErr(err))
	}
	for {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && p.UID != pod.UID) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kubernetes: wait for the pod of %s to go: %w", id, apiErr(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: wait for the pod of %s to go: %w", id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Destroy deletes the Pod (waiting until it is gone), the NetworkPolicy
// and the Secret. Idempotent.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := ocispec.CheckID(id); err != nil {
		return err
	}
	if err := d.deletePod(ctx, id); err != nil {
		return err
	}
	name := podName(id)
	err := d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: delete network policy of %s: %w", id, apiErr(err))
	}
	// Last: while it exists, List reports the sandbox, so a Destroy cut
	// short is retried by reconcile.
	err = d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: delete secret of %s: %w", id, apiErr(err))
	}
	d.mu.Lock()
	delete(d.tokens, id)
	d.mu.Unlock()
	return nil
}

// List reports every sandbox with a Secret or a Pod in the namespace (its
// Owner's, when it has one).
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	sel := metav1.ListOptions{LabelSelector: labelManagedBy + "=" + managedBy}
	if d.cfg.Owner != "" {
		sel.LabelSelector += "," + labelOwner + "=" + d.cfg.Owner
	}
	secrets, err := d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list secrets: %w", apiErr(err))
	}
	pods, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list pods: %w", apiErr(err))
	}
	byID := map[string]*runtime.Info{}
	var order []string
	add := func(m metav1.ObjectMeta) *runtime.Info {
		id := m.Annotations[annotationID]
		if !sandbox.ValidID(id) || podName(id) != m.Name {
			return nil
		}
		if in, ok := byID[id]; ok {
			return in
		}
		in := &runtime.Info{ID: id, Created: m.CreationTimestamp.Time}
		byID[id] = in
		order = append(order, id)
		return in
	}
	for i := range secrets.Items {
		if in := add(secrets.Items[i].ObjectMeta); in != nil {
			in.Reason = "its Pod is gone"
		}
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		in := add(p.ObjectMeta)
		switch {
		case in == nil:
		case podRunning(p):
			in.Running, in.PID, in.Reason = true, 1, ""
		default:
			in.Reason = d.endReason(ctx, p)
		}
	}
	out := make([]runtime.Info, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// Adopt takes over a sandbox another replica's driver made in the same
// namespace: its Secret, NetworkPolicy and Pod get this driver's Owner,
// so that this driver's List reports it and the other's no longer does.
// The Secret goes first, as in Create: it is what List finds of a sandbox
// whose Pod is gone; a relabelling cut short is finished by the next
// Adopt. A Pod's labels change in place: the sandbox keeps running, its
// address and credential unchanged.
func (d *Driver) Adopt(ctx context.Context, id string) (runtime.Info, error) {
	if err := ocispec.CheckID(id); err != nil {
		return runtime.Info{}, err
	}
	name := podName(id)
	info := runtime.Info{ID: id}
	secret, err := d.getSecret(ctx, id)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
	case err != nil:
		return runtime.Info{}, err
	default:
		info.Created = secret.CreationTimestamp.Time
		_, err := d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).Patch(ctx, name, types.MergePatchType, d.ownerPatch(""), metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return runtime.Info{}, fmt.Errorf("kubernetes: adopt the secret of %s: %w", id, apiErr(err))
		}
	}
	_, err = d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Patch(ctx, name, types.MergePatchType, d.ownerPatch(""), metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return runtime.Info{}, fmt.Errorf("kubernetes: adopt the network policy of %s: %w", id, apiErr(err))
	}
	pod, err := d.getPod(ctx, id)
	if err != nil {
		return runtime.Info{}, err
	}
	if pod != nil {
		// The UID precondition: a Pod of the same name made meanwhile is
		// not the one looked at. The API server refuses a UID that differs
		// as an invalid change of an immutable field.
		p, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Patch(ctx, name, types.MergePatchType,
			d.ownerPatch(pod.UID), metav1.PatchOptions{})
		if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
			if now, gerr := d.getPod(ctx, id); gerr == nil && (now == nil || now.UID != pod.UID) {
				err = nil // another Pod of the name, or none: the one looked at is gone
			}
		}
		switch {
		case apierrors.IsNotFound(err):
			pod = nil // gone meanwhile
		case err != nil:
			return runtime.Info{}, fmt.Errorf("kubernetes: adopt the pod of %s: %w", id, apiErr(err))
		case p == nil || p.UID != pod.UID:
			pod = nil
		default:
			pod = p
		}
	}
	if secret == nil && pod == nil {
		return runtime.Info{}, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	if pod != nil {
		if info.Created.IsZero() {
			info.Created = pod.CreationTimestamp.Time
		}
		if podRunning(pod) {
			info.Running, info.PID = true, 1
		}
	}
	return info, nil
}

// ownerPatch is the merge patch that labels an object with this driver's
// Owner (removes the label for a driver without one, which makes none),
// on the condition that its UID is uid, if given.
func (d *Driver) ownerPatch(uid types.UID) []byte {
	var owner any
	if d.cfg.Owner != "" {
		owner = d.cfg.Owner
	}
	meta := map[string]any{"labels": map[string]any{labelOwner: owner}}
	if uid != "" {
		meta["uid"] = uid
	}
	patch, _ := json.Marshal(map[string]any{"metadata": meta}) // strings only: cannot fail
	return patch
}

// Close stops the resolver, if the driver has one; the sandboxes are the
// cluster's, and run on.
func (d *Driver) Close() error {
	if d.dns != nil {
		d.dns.close()
	}
	return nil
}

// apiErr gives an API error the kind of sandbox error it amounts to.
func apiErr(err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %w", sandbox.ErrNotFound, err)
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		return fmt.Errorf("%w: %w", sandbox.ErrConflict, err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: %w", sandbox.ErrForbidden, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
	case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err):
		return fmt.Errorf("%w: %w", sandbox.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: %w", sandbox.ErrUnavailable, err)
}
