package store

import (
	"context"
	"time"
)

// SnapshotRefs is the part of Store that is the snapshot directory: every
// team's snapshots, recorded by the replica that took each, so that a
// replica whose own image store lacks one pulls it from the registry it
// was pushed to, or names the replica that has it (internal/image's
// Store.ResolveSnapshot). The layers themselves stay in each replica's
// own image store (and the registry).
type SnapshotRefs interface {
	// PutSnapshotRef inserts or replaces the record of r.ID.
	PutSnapshotRef(ctx context.Context, r SnapshotRef) error
	// GetSnapshotRef returns a snapshot's record; ErrNotFound
	// "snapshot_ref_not_found" if there is none.
	GetSnapshotRef(ctx context.Context, id string) (SnapshotRef, error)
	// TouchSnapshotRef moves a snapshot's LastUsed to at if that is later;
	// an unknown snapshot is not an error (and is not created: it was
	// deleted through another replica).
	TouchSnapshotRef(ctx context.Context, id string, at time.Time) error
	// DeleteSnapshotRef deletes a snapshot's record and reports whether
	// there was one.
	DeleteSnapshotRef(ctx context.Context, id string) (bool, error)
	// ListSnapshotRefs returns a page of a team's records ("" = every
	// team's), oldest first: what any replica lists of a team's
	// snapshots, and what the background lease's holder expires and
	// meters once for all replicas.
	ListSnapshotRefs(ctx context.Context, team string, page Page) ([]SnapshotRef, string, error)
}

// SnapshotRef is one snapshot as every replica knows it: whose it is,
// where its content can be had again, and what a sandbox created from it
// starts with. Snapshot ids are random and global, so the id alone keys
// it; Team is checked by whoever reads it.
type SnapshotRef struct {
	ID   string `json:"id"`
	Team string `json:"team"`
	// Ref is the snapshot's image in the snapshot registry (repo@digest)
	// when it was pushed, Digest that image's manifest digest; both ""
	// for a snapshot kept on its replica's host only.
	Ref    string `json:"ref,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Replica names the replica that took it, which has it locally.
	Replica string `json:"replica"`
	// What the snapshot was taken of and stacks on (internal/image's
	// Snapshot): the source sandbox, its image and that image's digest,
	// whether it stacks on the driver's host image, and its runtime.
	Source      string `json:"source,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
	OnHost      bool   `json:"onHost,omitempty"`
	Runtime     string `json:"runtime,omitempty"`
	// The environment, working dir and user sandboxes created from it
	// start with.
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	Size       int64    `json:"size"` // bytes of the snapshot's own layer
	// CreatedAt orders a team's list; required.
	CreatedAt time.Time `json:"createdAt"`
	// LastUsed is the last time a sandbox started from it through any
	// replica: its expiry counts from there.
	LastUsed time.Time `json:"lastUsed"`
}
