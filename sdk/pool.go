package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/paddock-dev/paddock/api"
)

// ListPools returns the host's warm pools with their figures (host admin
// only).
func (c *Client) ListPools(ctx context.Context) ([]api.Pool, error) {
	var out api.PoolList
	err := c.do(ctx, http.MethodGet, "/pools", nil, nil, &out)
	return out.Pools, err
}

// GetPool returns one warm pool.
func (c *Client) GetPool(ctx context.Context, name string) (api.Pool, error) {
	var out api.Pool
	err := c.do(ctx, http.MethodGet, "/pools/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// SetPool creates or changes a warm pool (host admin only).
func (c *Client) SetPool(ctx context.Context, name string, spec api.PoolSpec) (api.Pool, error) {
	var out api.Pool
	err := c.do(ctx, http.MethodPut, "/pools/"+url.PathEscape(name), nil, spec, &out)
	return out, err
}

// DeletePool removes a warm pool and its idle sandboxes.
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/pools/"+url.PathEscape(name), nil, nil, nil)
}
