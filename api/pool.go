package api

// PoolSpec is the body of PUT /pools/{name}: a warm pool of idle
// sandboxes kept ready for create requests of the same key (image or
// snapshot, resources, network policy). Host admin only.
type PoolSpec struct {
	// Image (default the host image) or Snapshot the sandboxes start from.
	Image    string `json:"image,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
	// Resources and NetworkPolicy default as a create request's do; a
	// request is served from the pool when its own, defaulted, are equal.
	Resources     Resources      `json:"resources"`
	NetworkPolicy *NetworkPolicy `json:"networkPolicy,omitempty"`
	// Runtime runs the pool's sandboxes (default the server's): a create
	// is served from the pool only when it asks for the same runtime.
	Runtime string `json:"runtime,omitempty"`
	// Min idle sandboxes are kept whatever the demand, up to Max when the
	// busiest minute of the last five asked for more.
	Min int `json:"min"`
	Max int `json:"max"`
}

// Pool is a warm pool with its figures.
type Pool struct {
	Name string `json:"name"`
	PoolSpec
	// Key is what a create request must match, as text; empty while the
	// pool's image or snapshot cannot be resolved (Error says why).
	Key string `json:"key,omitempty"`
	// Target is the idle count the pool aims at now.
	Target   int `json:"target"`
	Idle     int `json:"idle"`
	Creating int `json:"creating"`
	// Hits are creates served from the pool, Misses creates of its key
	// that found it empty, since paddock started.
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// Error is the last refill's failure, until one succeeds.
	Error string `json:"error,omitempty"`
}

// PoolList is the answer of GET /pools.
type PoolList struct {
	Pools []Pool `json:"pools"`
}
