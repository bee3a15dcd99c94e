package sdk

import (
	"context"
	"net/http"

	"github.com/paddock-dev/paddock/api"
)

// Runtimes lists the isolation runtimes the server knows ("runc",
// "gvisor"): which run sandboxes there (else why not), which is the
// default, and what each can do. CreateSandboxRequest.Runtime and
// ProjectRequest.Runtime pick one.
func (c *Client) Runtimes(ctx context.Context) ([]api.Runtime, error) {
	var out api.RuntimeList
	err := c.do(ctx, http.MethodGet, "/runtimes", nil, nil, &out)
	return out.Runtimes, err
}
