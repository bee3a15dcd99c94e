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
func (i Images) Remove(ctx context.Context, ref string) error {
	img, err := i.Store.Get(ref)
	if err != nil {
		return err
	}
	if i.Node.ImageInUse(img.Digest) {
		return sandbox.Errorf(sandbox.ErrConflict, "image_in_use", "image %s is used by a running sandbox", img.Ref)
	}
	if err := i.Store.Remove(ref); err != nil {
		return err
	}
	// The ref is gone either way; a failed sweep is retried by the next one.
	if err := i.Store.GC(ctx, i.Node.LayerInUse); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Ref, err)
	}
	return nil
}
