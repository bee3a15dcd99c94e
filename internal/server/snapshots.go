package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Snapshots is what the server needs to take, keep and fork from sandbox
// snapshots. Delete is refused with ErrConflict "snapshot_in_use" while a
// pending or running sandbox was created from the snapshot;
// internal/daemon implements it over node and the image store.
type Snapshots interface {
	Snapshot(ctx context.Context, id string) (*image.Snapshot, error)
	// CanSnapshot returns the error Snapshot of id would fail with before
	// it copies anything (a runtime that cannot snapshot), or nil.
	CanSnapshot(ctx context.Context, id string) error
	Fork(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	// ListSnapshots returns a team's snapshots ("" every team's), oldest
	// first, whichever replica took them: every replica lists the same.
	ListSnapshots(ctx context.Context, team string) ([]*image.Snapshot, error)
	// GetSnapshot knows the snapshots every replica took.
	GetSnapshot(ctx context.Context, id string) (*image.Snapshot, error)
	DeleteSnapshot(ctx context.Context, id string) error
}

var errNoSnapshots = sandbox.Errorf(sandbox.ErrUnsupported, "snapshots_disabled", "this server cannot take snapshots")

func toAPISnapshot(s *image.Snapshot) api.Snapshot {
	return api.Snapshot{ID: s.ID, SourceSandboxID: s.Source, Image: s.Image, SizeBytes: s.Size, RegistryImage: s.Ref, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt}
}

func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request) error {
	if s.snaps == nil {
		return errNoSnapshots
	}
	snap, err := s.snaps.Snapshot(r.Context(), r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("snapshot sandbox: %w", err)
	}
	writeJSON(w, http.StatusCreated, toAPISnapshot(snap))
	return nil
}

// forkSandbox takes an optional body: the create request's fields that
// override the source's (no image, no snapshot).
func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) error {
	if s.snaps == nil {
		return errNoSnapshots
	}
	var req api.CreateSandboxRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.Image != "" || req.Snapshot != "" {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_fork", "a fork starts from its source: image and snapshot must be empty")
	}
	params, err := createParams(req)
	if err != nil {
		return err
	}
	params.TeamID = callerOf(r).TeamID
	ctx, err := withQueueDeadline(r)
	if err != nil {
		return err
	}
	sb, err := s.snaps.Fork(ctx, r.PathValue("id"), params)
	if err != nil {
		return fmt.Errorf("fork sandbox: %w", err)
	}
	writeJSON(w, http.StatusCreated, s.toAPISandbox(sb))
	return nil
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	if s.snaps == nil {
		return errNoSnapshots
	}
	snaps, err := s.ownedSnapshots(r.Context(), callerOf(r))
	if err != nil {
		return err
	}
	out := api.SnapshotList{Snapshots: make([]api.Snapshot, 0, len(snaps))}
	for _, snap := range snaps {
		out.Snapshots = append(out.Snapshots, toAPISnapshot(snap))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request) error {
	if s.snaps == nil {
		return errNoSnapshots
	}
	snap, err := s.ownedSnapshot(r.Context(), callerOf(r), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPISnapshot(snap))
	return nil
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	if s.snaps == nil {
		return errNoSnapshots
	}
	if _, err := s.ownedSnapshot(r.Context(), callerOf(r), r.PathValue("id")); err != nil {
		return err
	}
	if err := s.snaps.DeleteSnapshot(context.WithoutCancel(r.Context()), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
