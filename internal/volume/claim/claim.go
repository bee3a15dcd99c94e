// Package claim keeps named volumes as PersistentVolumeClaims, for the
// kubernetes runtime, whose sandboxes are Pods on nodes that are not
// paddock's host: the same volumes API as internal/volume (per-team names,
// sizes, per-team quotas, in use while mounted), with the cluster keeping
// the bytes.
//
// A volume is a claim in the sandboxes' namespace, of Config.StorageClass
// (the cluster's default class if empty), requesting the volume's size.
// The claims are the truth: nothing is kept on paddock's side, so every
// replica sharing the namespace sees the same volumes. A claim's name is
// a digest of team and name (claimName); its annotations hold the name,
// the team, the size and the creation time, authoritative; its labels
// (managed-by, kind, team when it is a label value, the replica that
// made it) are for selection and for people with kubectl.
//
// Who mounts a volume is read from the cluster too: the sandbox Pods in
// the namespace whose spec names the claim, terminating ones included
// (their kubelet still mounts it). So delete is refused while any
// replica's sandbox mounts the volume, and a read-write user is alone.
// There is nothing to release: a Pod's deletion is its release. Checks and
// changes are not atomic across replicas: two replicas creating at once
// may both pass a team's quota, and a Pod created between a delete's
// check and the delete starts with a claim that is going (the cluster's
// pvc-protection keeps a claim until the Pods using it are gone).
//
// Copy-on-write mounts are refused (volume_mode_unsupported): a Pod has
// no overlay over a claim of its own. The sandbox's user gets a new
// volume's root from the sandbox's agent at start (the kubernetes
// driver's claimVolumes), so SetUser has nothing to do here.
package claim

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	k8sdriver "github.com/paddock-dev/paddock/internal/runtime/kubernetes"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume"
)

// Labels and annotations of a volume's claim.
const (
	// labelKind=kindVolume tells paddock's volumes from its other objects.
	labelKind  = "paddock.dev/kind"
	kindVolume = "volume"
	// labelTeam is the team when it is a label value (annotationTeam is
	// authoritative).
	labelTeam        = "paddock.dev/team"
	annotationName   = "paddock.dev/volume-name"
	annotationTeam   = "paddock.dev/volume-team"
	annotationSize   = "paddock.dev/volume-size"
	annotationCreate = "paddock.dev/volume-created"
)

// Config configures a Manager.
type Config struct {
	// Client reaches the API server with rights on persistentvolumeclaims
	// (create, get, list, delete) and pods (list) in Namespace. Required.
	Client kubernetes.Interface
	// Namespace is the sandboxes' namespace. Required.
	Namespace string
	// StorageClass of the claims; "" is the cluster's default class.
	StorageClass string
	// Owner labels the claims this replica makes (its node name), as the
	// driver labels its objects; every replica sees every claim.
	Owner string
	// DefaultSize, MaxSize, TeamMaxVolumes and TeamMaxBytes are as in
	// volume.Config, with its defaults.
	DefaultSize    int64
	MaxSize        int64
	TeamMaxVolumes int
	TeamMaxBytes   int64
	Logger         *slog.Logger
	Now            func() time.Time
}

func (c *Config) setDefaults() {
	if c.DefaultSize == 0 {
		c.DefaultSize = volume.DefaultSize
	}
	if c.MaxSize == 0 {
		c.MaxSize = max(volume.DefaultMaxSize, c.DefaultSize)
	}
	if c.TeamMaxVolumes == 0 {
		c.TeamMaxVolumes = volume.DefaultTeamMaxVolumes
	}
	if c.TeamMaxBytes == 0 {
		c.TeamMaxBytes = volume.DefaultTeamMaxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports an impossible setting, after defaults.
func (c *Config) Validate() error {
	switch {
	case c.Client == nil || c.Namespace == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "claim: Client and Namespace are required")
	case c.DefaultSize < volume.MinSize || c.MaxSize < c.DefaultSize:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "claim: want %d <= DefaultSize (%d) <= MaxSize (%d)", volume.MinSize, c.DefaultSize, c.MaxSize)
	case c.StorageClass != "" && len(validation.IsDNS1123Subdomain(c.StorageClass)) > 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "claim: StorageClass %q is not a class name", c.StorageClass)
	case len(validation.IsValidLabelValue(c.Owner)) > 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "claim: Owner %q is not a label value", c.Owner)
	}
	return nil
}

// Manager keeps the volumes of one namespace. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	// mu serialises this replica's creates, so that its own concurrent
	// creates do not both pass a quota.
	mu sync.Mutex
}

// New checks cfg and returns a Manager. It makes no request.
func New(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "volume")}, nil
}

// claimName is the claim of team's volume name: a digest, since names may
// hold "_" and teams and names together may be longer than an object name.
func claimName(team, name string) string {
	sum := sha256.Sum256([]byte(team + "/" + name))
	return "vol-" + hex.EncodeToString(sum[:12])
}

func notFound(name string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "volume_not_found", "volume %q not found", name)
}

// Create makes an empty volume named name in team teamID, of size bytes
// (0: the default) rounded up to a whole MiB, as internal/volume does.
func (m *Manager) Create(ctx context.Context, teamID, name string, size int64) (volume.Volume, error) {
	size, err := volume.CheckCreate(teamID, name, size, m.cfg.DefaultSize, m.cfg.MaxSize)
	if err != nil {
		return volume.Volume{}, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.get(ctx, teamID, name); err == nil {
		return volume.Volume{}, exists(name)
	} else if !errors.Is(err, sandbox.ErrNotFound) {
		return volume.Volume{}, err
	}
	claims, err := m.claims(ctx, teamID)
	if err != nil {
		return volume.Volume{}, err
	}
	if err := m.checkQuota(claims, size); err != nil {
		return volume.Volume{}, err
	}
	now := m.cfg.Now().UTC().Truncate(time.Second)
	labels := map[string]string{k8sdriver.LabelManagedBy: k8sdriver.ManagedBy, labelKind: kindVolume}
	if len(validation.IsValidLabelValue(teamID)) == 0 {
		labels[labelTeam] = teamID
	}
	if m.cfg.Owner != "" {
		labels[k8sdriver.LabelOwner] = m.cfg.Owner
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claimName(teamID, name), Namespace: m.cfg.Namespace, Labels: labels,
			Annotations: map[string]string{annotationName: name, annotationTeam: teamID,
				annotationSize: strconv.FormatInt(size, 10), annotationCreate: now.Format(time.RFC3339)}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	if m.cfg.StorageClass != "" {
		pvc.Spec.StorageClassName = &m.cfg.StorageClass
	}
	created, err := m.cfg.Client.CoreV1().PersistentVolumeClaims(m.cfg.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return volume.Volume{}, exists(name) // another replica's create, meanwhile
	}
	if err != nil {
		return volume.Volume{}, fmt.Errorf("volume: create claim of %s: %w", name, k8sdriver.APIErr(err))
	}
	if err := m.settleQuota(ctx, teamID, created, size); err != nil {
		return volume.Volume{}, err
	}
	m.log.Info("volume created", "volume", name, "team", teamID, "sizeBytes", size, "claim", created.Name)
	v, _ := toVolume(created)
	return v, nil
}

// settleQuota checks the team's quota again with the claim made: mu
// serialises this replica's creates only, and another replica's create
// may have landed between the check above and this one's. Counting every
// other claim of the team, whenever made, means that of two racing creates
// the one that lists last sees both: the team never ends past its cap
// (both may be refused, and the caller retries). A claim refused here is
// deleted, by its UID.
func (m *Manager) settleQuota(ctx context.Context, teamID string, created *corev1.PersistentVolumeClaim, size int64) error {
	claims, err := m.claims(ctx, teamID)
	if err == nil {
		others := slices.DeleteFunc(claims, func(c corev1.PersistentVolumeClaim) bool { return c.Name == created.Name })
		if err = m.checkQuota(others, size); err == nil {
			return nil
		}
	}
	// The claim goes whatever the reason: unchecked, it could hold the
	// team past its cap. Not under ctx, which may be what failed.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	derr := m.cfg.Client.CoreV1().PersistentVolumeClaims(m.cfg.Namespace).Delete(dctx, created.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &created.UID}})
	if derr != nil && !apierrors.IsNotFound(derr) {
		m.log.Error("volume: remove a claim past the team's quota", "claim", created.Name, "team", teamID, "err", derr)
	}
	return err
}

func exists(name string) error {
	return sandbox.Errorf(sandbox.ErrConflict, "volume_exists", "volume %q already exists", name)
}

// checkQuota refuses a new volume of size bytes that takes the team past
// its count or size cap; claims are the team's.
func (m *Manager) checkQuota(claims []corev1.PersistentVolumeClaim, size int64) error {
	n, total := 0, int64(0)
	for i := range claims {
		v, ok := toVolume(&claims[i])
		if ok {
			n++
			total += v.SizeBytes
		}
	}
	return volume.CheckTeamQuota(n, total, size, m.cfg.TeamMaxVolumes, m.cfg.TeamMaxBytes)
}

// toVolume reads a claim's annotations; false if it is not a volume's (a
// claim of another tool, or one whose annotations were changed).
func toVolume(c *corev1.PersistentVolumeClaim) (volume.Volume, bool) {
	a := c.Annotations
	name, team := a[annotationName], a[annotationTeam]
	size, err := strconv.ParseInt(a[annotationSize], 10, 64)
	if err != nil || !volume.ValidName(name) || !sandbox.ValidID(team) || claimName(team, name) != c.Name || c.DeletionTimestamp != nil {
		return volume.Volume{}, false
	}
	created, err := time.Parse(time.RFC3339, a[annotationCreate])
	if err != nil {
		created = c.CreationTimestamp.UTC()
	}
	return volume.Volume{Name: name, TeamID: team, SizeBytes: size, CreatedAt: created}, true
}

// claims lists the volume claims of team teamID, or every team's if "".
func (m *Manager) claims(ctx context.Context, teamID string) ([]corev1.PersistentVolumeClaim, error) {
	sel := k8sdriver.LabelManagedBy + "=" + k8sdriver.ManagedBy + "," + labelKind + "=" + kindVolume
	if teamID != "" && len(validation.IsValidLabelValue(teamID)) == 0 {
		sel += "," + labelTeam + "=" + teamID
	}
	l, err := m.cfg.Client.CoreV1().PersistentVolumeClaims(m.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("volume: list claims: %w", k8sdriver.APIErr(err))
	}
	out := l.Items[:0]
	for _, c := range l.Items {
		if v, ok := toVolume(&c); ok && (teamID == "" || v.TeamID == teamID) {
			out = append(out, c)
		}
	}
	return out, nil
}

// users maps each claim the namespace's sandbox Pods mount to those
// sandboxes and their modes. A terminating Pod still counts: its kubelet
// has yet to unmount the claim.
func (m *Manager) users(ctx context.Context) (map[string]map[string]string, error) {
	pods, err := m.cfg.Client.CoreV1().Pods(m.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: k8sdriver.LabelManagedBy + "=" + k8sdriver.ManagedBy})
	if err != nil {
		return nil, fmt.Errorf("volume: list pods: %w", k8sdriver.APIErr(err))
	}
	out := map[string]map[string]string{}
	for _, p := range pods.Items {
		id := cmp.Or(p.Annotations[k8sdriver.AnnotationID], p.Name)
		for _, v := range p.Spec.Volumes {
			if c := v.PersistentVolumeClaim; c != nil {
				if out[c.ClaimName] == nil {
					out[c.ClaimName] = map[string]string{}
				}
				out[c.ClaimName][id] = sandbox.VolumeReadWrite
			}
		}
	}
	return out, nil
}

// get returns team teamID's volume name, without its users.
func (m *Manager) get(ctx context.Context, teamID, name string) (*corev1.PersistentVolumeClaim, error) {
	if !volume.ValidName(name) || !sandbox.ValidID(teamID) {
		return nil, notFound(name)
	}
	c, err := m.cfg.Client.CoreV1().PersistentVolumeClaims(m.cfg.Namespace).Get(ctx, claimName(teamID, name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("volume: get claim of %s: %w", name, k8sdriver.APIErr(err))
	}
	if v, ok := toVolume(c); !ok || v.TeamID != teamID || v.Name != name {
		return nil, notFound(name)
	}
	return c, nil
}

// Get returns team teamID's volume name; another team's is not found.
func (m *Manager) Get(ctx context.Context, teamID, name string) (volume.Volume, error) {
	c, err := m.get(ctx, teamID, name)
	if err != nil {
		return volume.Volume{}, err
	}
	users, err := m.users(ctx)
	if err != nil {
		return volume.Volume{}, err
	}
	v, _ := toVolume(c)
	v.Users = users[c.Name]
	return v, nil
}

// List returns team teamID's volumes, sorted by name.
func (m *Manager) List(ctx context.Context, teamID string) ([]volume.Volume, error) {
	if !sandbox.ValidID(teamID) {
		return []volume.Volume{}, nil
	}
	return m.list(ctx, teamID)
}

// ListAll returns every team's volumes, sorted by team and then name.
func (m *Manager) ListAll(ctx context.Context) ([]volume.Volume, error) { return m.list(ctx, "") }

func (m *Manager) list(ctx context.Context, teamID string) ([]volume.Volume, error) {
	claims, err := m.claims(ctx, teamID)
	if err != nil {
		return nil, err
	}
	users, err := m.users(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]volume.Volume, 0, len(claims))
	for i := range claims {
		v, _ := toVolume(&claims[i])
		v.Users = maps.Clone(users[claims[i].Name])
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b volume.Volume) int {
		return cmp.Or(cmp.Compare(a.TeamID, b.TeamID), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Delete removes team teamID's volume name and its claim (whose bytes go
// as the storage class's reclaim policy says); another team's is not
// found. It is refused with ErrConflict "volume_in_use" while a sandbox
// Pod mounts it.
func (m *Manager) Delete(ctx context.Context, teamID, name string) error {
	c, err := m.get(ctx, teamID, name)
	if err != nil {
		return err
	}
	users, err := m.users(ctx)
	if err != nil {
		return err
	}
	if u := users[c.Name]; len(u) > 0 {
		return sandbox.Errorf(sandbox.ErrConflict, "volume_in_use", "volume %q is mounted by sandbox %s",
			name, strings.Join(slices.Sorted(maps.Keys(u)), ", "))
	}
	err = m.cfg.Client.CoreV1().PersistentVolumeClaims(m.cfg.Namespace).Delete(ctx, c.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return notFound(name) // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("volume: delete claim of %s: %w", name, k8sdriver.APIErr(err))
	}
	m.log.Info("volume deleted", "volume", name, "team", teamID, "claim", c.Name)
	return nil
}

// Acquire returns the claim a sandbox of team teamID mounts for mnt; the
// Pod that names it is the record of the use. Copy-on-write is refused,
// and a read-write user must be alone (ErrConflict "volume_busy"), as on
// the host. Another team's volume is not found.
func (m *Manager) Acquire(ctx context.Context, sandboxID, teamID string, mnt sandbox.VolumeMount) (volume.Dirs, error) {
	switch cmp.Or(mnt.Mode, sandbox.VolumeReadWrite) {
	case sandbox.VolumeReadWrite:
	case sandbox.VolumeCopyOnWrite:
		return volume.Dirs{}, sandbox.Errorf(sandbox.ErrUnsupported, "volume_mode_unsupported",
			"volume %q: a Pod cannot mount a volume copy-on-write; mount it %q", mnt.Volume, sandbox.VolumeReadWrite)
	default:
		return volume.Dirs{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_mode", "volume mode must be %q or %q, got %q",
			sandbox.VolumeReadWrite, sandbox.VolumeCopyOnWrite, mnt.Mode)
	}
	c, err := m.get(ctx, teamID, mnt.Volume)
	if err != nil {
		return volume.Dirs{}, err
	}
	users, err := m.users(ctx)
	if err != nil {
		return volume.Dirs{}, err
	}
	for id, mode := range users[c.Name] {
		if id != sandboxID {
			return volume.Dirs{}, sandbox.Errorf(sandbox.ErrConflict, "volume_busy",
				"volume %q is mounted %s by sandbox %s; a read-write mount needs the volume alone", mnt.Volume, mode, id)
		}
	}
	return volume.Dirs{Claim: c.Name}, nil
}

// SetUser has nothing to do: the sandbox's agent gives an empty claim's
// root to its user at start, the only one that can (see the package doc).
func (m *Manager) SetUser(context.Context, string, uint32, uint32) error { return nil }

// Release has nothing to do: a sandbox's use of a claim ends with its Pod.
func (m *Manager) Release(context.Context, string) error { return nil }

// Holders is empty: nothing is held beyond the Pods themselves.
func (m *Manager) Holders() []string { return nil }
