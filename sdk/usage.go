package sdk

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// UsageQuery selects usage records; zero fields match everything.
type UsageQuery struct {
	Since     time.Time // records ending after it
	Until     time.Time // records starting before it
	ProjectID string
	TeamID    string // host admin only; "" = the caller's team (a host admin's: every team)
}

// ListUsage returns the usage records of sandbox runs that have stopped,
// ordered by start.
func (c *Client) ListUsage(ctx context.Context, q UsageQuery) ([]api.Usage, error) {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.ProjectID != "" {
		v.Set("projectId", q.ProjectID)
	}
	if q.TeamID != "" {
		v.Set("teamId", q.TeamID)
	}
	var out api.UsageList
	err := c.do(ctx, http.MethodGet, "/usage", v, nil, &out)
	return out.Usage, err
}
