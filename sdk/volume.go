package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/paddock-dev/paddock/api"
)

// CreateVolume makes an empty named volume capped at sizeBytes (0: the
// server's default). Sandboxes mount it through
// api.CreateSandboxRequest.Volumes.
func (c *Client) CreateVolume(ctx context.Context, name string, sizeBytes int64) (api.Volume, error) {
	var out api.Volume
	err := c.do(ctx, http.MethodPost, "/volumes", nil, api.CreateVolumeRequest{Name: name, SizeBytes: sizeBytes}, &out)
	return out, err
}

// ListVolumes returns the caller's team's volumes, sorted by name (a host
// admin's: every team's, by team then name).
func (c *Client) ListVolumes(ctx context.Context) ([]api.Volume, error) {
	var out api.VolumeList
	err := c.do(ctx, http.MethodGet, "/volumes", nil, nil, &out)
	return out.Volumes, err
}

// GetVolume returns the caller's team's volume of the name; another team's
// is not found (names are per team).
func (c *Client) GetVolume(ctx context.Context, name string) (api.Volume, error) {
	var out api.Volume
	err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// DeleteVolume removes a volume and its content; the server refuses one a
// sandbox mounts ("volume_in_use").
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(name), nil, nil, nil)
}
