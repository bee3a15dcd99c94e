package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/paddock-dev/paddock/api"
)

// Snapshot keeps the sandbox's filesystem as a snapshot that new
// sandboxes can be created from (api.CreateSandboxRequest.Snapshot).
func (s *Sandbox) Snapshot(ctx context.Context) (api.Snapshot, error) {
	var out api.Snapshot
	err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/snapshot", nil, nil, &out)
	return out, err
}

// Fork snapshots the sandbox and creates a new one from the snapshot.
// overrides (may be nil) sets the new sandbox's create fields; image and
// snapshot must be empty, and resources and network policy left out are
// the source's.
func (s *Sandbox) Fork(ctx context.Context, overrides *api.CreateSandboxRequest) (*Sandbox, error) {
	var in any
	if overrides != nil {
		in = overrides
	}
	out := &Sandbox{c: s.c}
	if err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/fork", nil, in, &out.Sandbox); err != nil {
		return nil, err
	}
	return out, nil
}

// ListSnapshots returns the team's snapshots (a host admin's: every team's),
// whichever replica took them, oldest first.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	var out api.SnapshotList
	err := c.do(ctx, http.MethodGet, "/snapshots", nil, nil, &out)
	return out.Snapshots, err
}

// GetSnapshot returns one snapshot.
func (c *Client) GetSnapshot(ctx context.Context, id string) (api.Snapshot, error) {
	var out api.Snapshot
	err := c.do(ctx, http.MethodGet, "/snapshots/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// DeleteSnapshot deletes a snapshot. The server refuses one a running
// sandbox was created from ("snapshot_in_use").
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/snapshots/"+url.PathEscape(id), nil, nil, nil)
}
