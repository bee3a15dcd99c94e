package store

import (
	"context"
	"time"
)

// Replicas is the part of Store that is the replica directory: where each
// replica sharing the store can be reached by the others, so that any
// replica serves any sandbox by forwarding to the one that runs it
// (internal/daemon's peers). Liveness is not kept here: it is the
// replica's own lease (lease.ReplicaLease), renewed while it runs.
type Replicas interface {
	// PutReplica inserts or replaces the record of r.Name.
	PutReplica(ctx context.Context, r Replica) error
	// GetReplica returns a replica's record; ErrNotFound
	// "replica_not_found" if it never advertised itself.
	GetReplica(ctx context.Context, name string) (Replica, error)
	// ListReplicas returns every replica's record, by Name.
	ListReplicas(ctx context.Context) ([]Replica, error)
}

// Replica is where one replica (a `paddock serve` sharing the store,
// named by its node name) serves its API, proxies and compat layers.
type Replica struct {
	Name string `json:"name"`
	// URL is the base URL other replicas forward requests to, such as
	// http://10.1.2.3:8080 (its --advertise-url).
	URL       string    `json:"url"`
	UpdatedAt time.Time `json:"updatedAt"`
}
