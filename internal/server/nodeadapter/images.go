package nodeadapter

import (
	"context"
	"fmt"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// Images serves the server's image endpoints from a store, asking the node
// which images and layers its sandboxes use.
type Images struct {
	*image.Store
	Node *node.Manager
}

var _ server.Images = Images{}

// Remove refuses an image a pending or running sandbox was created from,
// then forgets the ref and collects what no image and no remaining
// sandbox needs (a stopped sandbox keeps its layers until it is deleted).
func (i Images) Remove(ctx context.Context, scope, ref string) error {
	img, err := i.Store.Get(scope, ref)
	if err != nil {
		return err
	}
	if img.Team != scope {
		// Only the published ref of that name exists: not the scope's own.
		return sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "image %q is not in the store", ref)
	}
	if i.Node.ImageInUse(img.Digest) {
		return sandbox.Errorf(sandbox.ErrConflict, "image_in_use", "image %s is used by a running sandbox", img.Ref)
	}
	if err := i.Store.Remove(scope, ref); err != nil {
		return err
	}
	// The ref is gone either way; a failed sweep is retried by the next one.
	if err := i.Store.GC(ctx, i.Node.LayerInUse); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Ref, err)
	}
	return nil
}

// Snapshots serves the server's snapshot endpoints from the node and the
// store that keeps the snapshots.
type Snapshots struct {
	Store *image.Store
	Node  *node.Manager
}

var _ server.Snapshots = Snapshots{}

// Snapshot snapshots a sandbox.
func (s Snapshots) Snapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	return s.Node.Snapshot(ctx, id)
}

// Fork converts the server's parameters; the structs have the same fields.
func (s Snapshots) Fork(ctx context.Context, id string, req server.CreateParams) (sandbox.Sandbox, error) {
	return s.Node.Fork(ctx, id, node.CreateRequest(req))
}

// ListSnapshots lists the store's snapshots.
func (s Snapshots) ListSnapshots() []*image.Snapshot { return s.Store.Snapshots() }

// GetSnapshot returns one snapshot.
func (s Snapshots) GetSnapshot(id string) (*image.Snapshot, error) { return s.Store.GetSnapshot(id) }

// DeleteSnapshot refuses a snapshot a pending or running sandbox was
// created from; otherwise it forgets it and collects its layer unless a
// stopped sandbox still stacks it (then the layer goes with that sandbox).
func (s Snapshots) DeleteSnapshot(ctx context.Context, id string) error {
	if _, err := s.Store.GetSnapshot(id); err != nil {
		return err
	}
	if s.Node.SnapshotInUse(id) {
		return sandbox.Errorf(sandbox.ErrConflict, "snapshot_in_use", "snapshot %s is used by a running sandbox", id)
	}
	if err := s.Store.RemoveSnapshot(id); err != nil {
		return err
	}
	if err := s.Store.GC(ctx, s.Node.LayerInUse); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return nil
}
