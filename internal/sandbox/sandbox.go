// Package sandbox holds paddock's domain types for one sandbox: its states
// and their transitions, its resources, and the error kinds every layer uses.
// It imports only the standard library so that the in-sandbox agent, the
// drivers and the control plane can all share it.
package sandbox

import (
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"time"
)

// State is where a sandbox is in its life.
type State string

// The states of a sandbox. Stopped and Failed are terminal. Paused keeps
// what the sandbox needs to run again (Sandbox.Pause) with nothing running.
const (
	Pending  State = "pending"
	Running  State = "running"
	Stopping State = "stopping"
	Stopped  State = "stopped"
	Failed   State = "failed"
	Paused   State = "paused"
)

// transitions lists the legal moves of the state machine. A pause goes
// running → stopping → paused (stopping holds Pause already, so a crash
// mid-pause ends paused, not lost); a resume goes paused → pending →
// running, or back to paused when it fails; a paused sandbox is stopped
// directly or deleted through stopping.
var transitions = map[State][]State{
	Pending:  {Running, Stopping, Failed, Paused},
	Running:  {Stopping, Failed},
	Stopping: {Stopped, Failed, Paused},
	Paused:   {Pending, Stopping, Stopped},
	Stopped:  {},
	Failed:   {},
}

// CanTransition reports whether a sandbox may move from s to to.
func (s State) CanTransition(to State) bool {
	for _, t := range transitions[s] {
		if t == to {
			return true
		}
	}
	return false
}

// Terminal reports whether no further transition is possible.
func (s State) Terminal() bool { return s == Stopped || s == Failed }

// Transition returns a *TransitionError when the move is illegal.
func (s State) Transition(to State) error {
	if !s.CanTransition(to) {
		return &TransitionError{From: s, To: to}
	}
	return nil
}

// TransitionError is returned for an illegal state change. It matches
// ErrConflict so the API answers 409.
type TransitionError struct{ From, To State }

func (e *TransitionError) Error() string {
	return fmt.Sprintf("sandbox cannot go from %s to %s", e.From, e.To)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *TransitionError) Unwrap() error { return ErrConflict }

// Resources are the limits of one sandbox.
type Resources struct {
	// VCPUs is the CPU share, enforced as a CFS quota (1.5 = one and a half cores).
	VCPUs float64 `json:"vcpus"`
	// MemoryMB is the memory limit (swap included where the host accounts it).
	MemoryMB int64 `json:"memoryMB"`
	// PIDs caps the number of tasks (processes and threads).
	PIDs int64 `json:"pids"`
	// DiskMB caps the sandbox's writable layer (what it changes in its
	// root filesystem), in MiB, files' metadata included; its inode count
	// caps the number of files. 0: no cap (the layer is a directory on the
	// host's filesystem).
	DiskMB int64 `json:"diskMB,omitempty"`
}

// MinDiskMB is the smallest disk cap: room for ext4's own metadata and
// what a sandbox's layer starts with.
const MinDiskMB = 64

// Validate checks r against the host's maximum.
func (r Resources) Validate(max Resources) error {
	switch {
	case r.DiskMB != 0 && (r.DiskMB < MinDiskMB || r.DiskMB > max.DiskMB):
		return Errorf(ErrInvalid, "invalid_resources", "diskMB must be in [%d, %d], got %d", MinDiskMB, max.DiskMB, r.DiskMB)
	case r.VCPUs <= 0 || r.VCPUs > max.VCPUs:
		return Errorf(ErrInvalid, "invalid_resources", "vcpus must be in (0, %g], got %g", max.VCPUs, r.VCPUs)
	case r.MemoryMB < 16 || r.MemoryMB > max.MemoryMB:
		return Errorf(ErrInvalid, "invalid_resources", "memoryMB must be in [16, %d], got %d", max.MemoryMB, r.MemoryMB)
	case r.PIDs < 16 || r.PIDs > max.PIDs:
		return Errorf(ErrInvalid, "invalid_resources", "pids must be in [16, %d], got %d", max.PIDs, r.PIDs)
	}
	return nil
}

// Sandbox is the control plane's record of one sandbox.
type Sandbox struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	Image string `json:"image"`
	// ImageDigest is the manifest digest of a Store image; empty for "host".
	ImageDigest string `json:"imageDigest,omitempty"`
	// ImageLayers are the layer directories the sandbox's overlay stacks,
	// so image GC keeps them while the sandbox exists.
	ImageLayers []string `json:"imageLayers,omitempty"`
	// Snapshot is the snapshot the sandbox was created from, if any.
	Snapshot string `json:"snapshot,omitempty"`
	// ImageRef is the registry image the sandbox runs, on a runtime whose
	// nodes pull images (Kubernetes): its image pinned by digest, the host
	// image's, or the pushed image of its snapshot. A snapshot of the
	// sandbox is pushed on top of it. On other runtimes it is set only
	// when the server has a snapshot registry, which their snapshots are
	// pushed to as well, for the other replicas; empty for a sandbox of
	// an image or snapshot in no registry.
	ImageRef string `json:"imageRef,omitempty"`
	// ImageUser is the image config's User as the image gives it; User is
	// what the sandbox's agent resolved it to.
	ImageUser string `json:"imageUser,omitempty"`
	// User is who commands run as without sudo, who owns uploaded files,
	// sources and a fresh volume's root: the image's User resolved inside
	// the sandbox, or DefaultUser (no User, or root). Zero until the
	// sandbox's agent has answered; see RunAs.
	User User `json:"user,omitzero"`
	// WorkingDir is the default cwd of commands (the image's WorkingDir);
	// empty means the user's home.
	WorkingDir string            `json:"workingDir,omitempty"`
	Resources  Resources         `json:"resources"`
	Env        map[string]string `json:"env,omitempty"`
	// Driver is the runtime that runs the sandbox (CreateRequest.Runtime
	// as the host resolved it): every later operation goes to it.
	Driver    string    `json:"driver"`
	CreatedAt time.Time `json:"createdAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	StoppedAt time.Time `json:"stoppedAt,omitzero"`
	// ExpiresAt is when the sandbox timeout stops it; extendable up to the host's maximum.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// LastActivityAt is the last proxied request or agent call (command,
	// file). Kept in memory and saved with the next state change, so it is
	// cheap to update on every request; idle timeouts build on it.
	LastActivityAt time.Time `json:"lastActivityAt,omitzero"`
	// Error says why a sandbox failed.
	Error string `json:"error,omitempty"`
	// LayerRemovedAt is when the writable layer of a stopped or failed
	// sandbox was removed after the host's retention period: the record
	// stays, but there is nothing left to snapshot.
	LayerRemovedAt time.Time `json:"layerRemovedAt,omitzero"`
	// Address is the sandbox's own address on its veth when it has a
	// network of its own; zero for loopback-only sandboxes.
	Address netip.Addr `json:"address,omitzero"`
	// Ports are the declared ports the proxy serves.
	Ports []Port `json:"ports,omitempty"`
	// NetworkPolicy is the egress policy in force; nil for loopback-only
	// sandboxes.
	NetworkPolicy *NetworkPolicy `json:"networkPolicy,omitempty"`
	// TeamID owns the sandbox; empty for sandboxes made before teams or by
	// the host's admin token.
	TeamID string `json:"teamId,omitempty"`
	// ProjectID is the project whose activation made the sandbox, if any
	// (for usage records).
	ProjectID string `json:"projectId,omitempty"`
	// Labels are the owner's key/value metadata (ValidateLabels).
	Labels map[string]string `json:"labels,omitempty"`
	// Source populated the working dir at create time, if any.
	Source *SourceInfo `json:"source,omitempty"`
	// Volumes are the named volumes mounted into the sandbox.
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// Pool names the warm pool an idle, never-claimed sandbox waits in
	// (internal/pool); it belongs to no team and no API shows it. A claim
	// clears it for good: a claimed sandbox never returns to a pool.
	Pool string `json:"pool,omitempty"`
	// Warm marks a sandbox its owner got by claiming it from a pool.
	Warm bool `json:"warm,omitempty"`
	// Pause is what a paused sandbox kept; nil unless it is paused (or
	// being paused or resumed).
	Pause *Pause `json:"pause,omitempty"`
}

// Pause is what a pause kept of a sandbox, so that resume runs it again
// under the same id, with its ports, metadata and policy.
type Pause struct {
	// Snapshot holds the sandbox's filesystem; resume boots from it.
	Snapshot string `json:"snapshot"`
	// Memory reports that processes and memory were kept too, a driver
	// power paddock does not have yet: false means resume starts the
	// sandbox afresh from its filesystem, with no process of the old run.
	Memory   bool      `json:"memory"`
	PausedAt time.Time `json:"pausedAt"`
	// Timeout is the run's timeout (extensions included), which resume
	// gives the sandbox again: a paused sandbox's clock does not run.
	Timeout time.Duration `json:"timeout"`
}

// The default sandbox user: commands run as it unless the image names
// another user (root included: root is reachable through sudo only).
const (
	DefaultUID  = 1000
	DefaultGID  = 1000
	DefaultHome = "/home/user"
)

// User is a sandbox's unprivileged user as its agent resolved it.
type User struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Home string `json:"home"`
}

// DefaultUser is the sandbox user of images that name none.
var DefaultUser = User{UID: DefaultUID, GID: DefaultGID, Home: DefaultHome}

// RunAs is the sandbox's user: User, or DefaultUser for a record made
// before its agent answered (or by a paddock that did not record it).
func (sb Sandbox) RunAs() User {
	if sb.User == (User{}) {
		return DefaultUser
	}
	return sb.User
}

// Port is a port of a sandbox served through the proxy.
type Port struct {
	Port int `json:"port"`
	// Public ports open without credentials.
	Public bool `json:"public,omitempty"`
}

// NetworkPolicy is a sandbox's egress policy. Its fields match
// internal/netns's Policy, which enforces it, so one converts to the other.
type NetworkPolicy struct {
	Mode         string         `json:"mode"`
	AllowDomains []string       `json:"allowDomains,omitempty"`
	AllowCIDRs   []netip.Prefix `json:"allowCIDRs,omitempty"`
	DenyCIDRs    []netip.Prefix `json:"denyCIDRs,omitempty"`
}

// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var idPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`) })

// ValidID reports whether id is a well-formed sandbox or command id. IDs
// become path components and cgroup names, so they are kept to a small alphabet.
func ValidID(id string) bool { return idPattern().MatchString(id) }

// Source kinds: what populates a sandbox's working directory at create time,
// on top of its image or snapshot.
const (
	SourceGit     = "git"
	SourceTarball = "tarball"
)

// Source is fetched on the host (credentials never enter the sandbox) and
// written into the sandbox before it is reported running.
type Source struct {
	Type string `json:"type"` // SourceGit or SourceTarball
	URL  string `json:"url"`
	// Dir is where the source lands inside the sandbox; default the
	// sandbox's working dir, else the user's home.
	Dir string `json:"dir,omitempty"`
	// Git: Revision is a branch, tag or commit (default the remote HEAD);
	// Depth 0 means 1 (a shallow clone), negative means full history.
	Revision string `json:"revision,omitempty"`
	Depth    int    `json:"depth,omitempty"`
	// Credentials for git over HTTP(S): Username+Password, or Token alone.
	// Never recorded, never logged.
	Username string `json:"-"`
	Password string `json:"-"`
	Token    string `json:"-"`
	// Tarball: leading path components dropped from every entry.
	StripComponents int `json:"stripComponents,omitempty"`
}

// SourceInfo is what a sandbox's record keeps of its source: no credentials.
type SourceInfo struct {
	Type string `json:"type"`
	URL  string `json:"url"` // with any userinfo removed
	Dir  string `json:"dir"`
	// Revision is what was asked; Commit what a git source resolved to.
	Revision string `json:"revision,omitempty"`
	Commit   string `json:"commit,omitempty"`
	// Digest is the sha256 of a tarball as fetched.
	Digest string `json:"digest,omitempty"`
}

// Volume mount modes.
const (
	// VolumeReadWrite mounts the volume itself: writes persist.
	VolumeReadWrite = "rw"
	// VolumeCopyOnWrite mounts the volume under a private overlay: the
	// sandbox sees and may change its content, changes are dropped at stop.
	VolumeCopyOnWrite = "cow"
)

// VolumeMount attaches a named persistent volume at a path in a sandbox.
type VolumeMount struct {
	Volume string `json:"volume"`
	Path   string `json:"path"`
	Mode   string `json:"mode"` // VolumeReadWrite (default) or VolumeCopyOnWrite
}
