package sandbox

// PoolSpec is one warm pool as the host admin sets it (internal/pool keeps
// them): idle sandboxes built from Image (default the host image) or
// Snapshot, with Resources and NetworkPolicy defaulted as a create
// request's are, kept ready for create requests of the same key.
type PoolSpec struct {
	Name          string         `json:"name"`
	Image         string         `json:"image,omitempty"`
	Snapshot      string         `json:"snapshot,omitempty"`
	Resources     Resources      `json:"resources"`
	NetworkPolicy *NetworkPolicy `json:"networkPolicy,omitempty"`
	// Runtime runs the pool's sandboxes ("" the host's default): a create
	// asking for another runtime never claims one of them.
	Runtime string `json:"runtime,omitempty"`
	// Min idle sandboxes are kept whatever the demand; up to Max when
	// demand asks for them.
	Min int `json:"min"`
	Max int `json:"max"`
}

// MaxPoolSize bounds a pool's Max.
const MaxPoolSize = 1000

// Validate checks what can be checked without the host.
func (s PoolSpec) Validate() error {
	switch {
	case !ValidID(s.Name):
		return Errorf(ErrInvalid, "invalid_pool", "pool name %q must be 1-63 of [a-z0-9-], starting with a letter or digit", s.Name)
	case s.Image != "" && s.Snapshot != "":
		return Errorf(ErrInvalid, "image_and_snapshot", "give an image or a snapshot, not both")
	case s.Min < 0 || s.Max < s.Min || s.Max > MaxPoolSize:
		return Errorf(ErrInvalid, "invalid_pool", "pool size needs 0 <= min <= max <= %d, got min %d max %d", MaxPoolSize, s.Min, s.Max)
	}
	return nil
}

// Request is the create request of one of the pool's sandboxes: its key
// and nothing else, and no owner.
func (s PoolSpec) Request() CreateRequest {
	return CreateRequest{Image: s.Image, Snapshot: s.Snapshot, Resources: s.Resources, NetworkPolicy: s.NetworkPolicy, Runtime: s.Runtime}
}

// PoolStatus is a pool with its figures.
type PoolStatus struct {
	PoolSpec
	// Key is what a request must match to be served from the pool, as
	// text; empty while it cannot be resolved (Error says why).
	Key string
	// Target is the idle count the pool aims at now: recent demand
	// clamped to [Min, Max].
	Target   int
	Idle     int
	Creating int
	// Hits are requests served from the pool, Misses requests of its key
	// that found it empty, since this paddock started.
	Hits, Misses uint64
	// Error is the last refill's failure, until one succeeds.
	Error string
}
