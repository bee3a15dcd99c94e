package sandbox

import "time"

// HostImage names the image built from the host's own /usr
// (internal/hostimage), which every driver provides without a pull.
const HostImage = "host"

// CreateRequest asks for one sandbox. It is the one request type every
// layer passes down (the API, the Vercel layer, project activation); the
// node layer validates it against the host's limits and fills defaults.
type CreateRequest struct {
	Image     string        // "" is the host image; anything else must be in the image store, else ErrNotFound "image_not_found"
	Resources Resources     // zero fields take the host's defaults, then are checked against its maximum
	Timeout   time.Duration // 0 is the host's default; negative or past its maximum is ErrInvalid "invalid_timeout"
	Env       map[string]string
	// Ports are served through the proxy: 1..65535, no duplicates, at most
	// the host's limit. Needs sandbox networking.
	Ports []Port
	// NetworkPolicy is the egress policy; nil means the host's default.
	// Needs sandbox networking.
	NetworkPolicy *NetworkPolicy
	// Snapshot starts the sandbox from a snapshot's layers and environment
	// instead of an image; setting Image too is ErrInvalid.
	Snapshot string
	// Source populates the working dir before the sandbox is reported
	// running.
	Source *Source
	// Volumes are named volumes to mount.
	Volumes []VolumeMount
	// TeamID records the owning team.
	TeamID string
	// ProjectID records the project an activation made the sandbox for;
	// set by the control plane only, never from a request.
	ProjectID string
	// Labels are the caller's metadata (see ValidateLabels).
	Labels map[string]string
	// Runtime names the driver that runs the sandbox ("runc", "gvisor");
	// "" is the snapshot's when created from one, else the host's default.
	// One the host does not offer is ErrInvalid "unknown_runtime" or
	// "runtime_unavailable".
	Runtime string
}

// ListOptions page through a host's sandboxes.
type ListOptions struct {
	Cursor string // opaque, from a previous List; "" starts at the oldest
	Limit  int    // default 50, max 500 (larger values are clamped)
	State  State  // optional filter
	// TeamID keeps only that team's sandboxes; "" lists every team's. The
	// filter comes before paging, so a team's cursor only ever names one of
	// its own sandboxes.
	TeamID string
	// Labels keeps only sandboxes carrying every one of these labels.
	Labels map[string]string
	// AllReplicas lists the sandboxes of the other replicas sharing the
	// store too, for a client's list; without it only this host's, for
	// the work a replica does on its own (metrics, metering, budgets,
	// clean-ups).
	AllReplicas bool
}
