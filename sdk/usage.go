package sdk

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// UsageQuery selects usage rows; zero fields match everything.
type UsageQuery struct {
	Since       time.Time // buckets ending after it
	Until       time.Time // buckets starting before it
	ProjectID   string
	SandboxID   string // one sandbox's rows (within the server's raw retention)
	TeamID      string // another team's: host admin only; "" = the caller's team (a host admin's: every team)
	Granularity string // "hour" or "day" (the server's default, day, if ""), or "minute" with SandboxID
	Cursor      string // NextCursor of the previous page
	Limit       int    // rows per page (the server's default if 0)
}

// ListUsage returns one page of usage rows with their cost, ordered by
// (start, team, project); UsageList.NextCursor continues it.
func (c *Client) ListUsage(ctx context.Context, q UsageQuery) (api.UsageList, error) {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	for k, s := range map[string]string{"projectId": q.ProjectID, "sandboxId": q.SandboxID, "teamId": q.TeamID,
		"granularity": q.Granularity, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out api.UsageList
	err := c.do(ctx, http.MethodGet, "/usage", v, nil, &out)
	return out, err
}

// AllUsage follows ListUsage's cursor to the last page and returns every row.
func (c *Client) AllUsage(ctx context.Context, q UsageQuery) (api.UsageList, error) {
	var all api.UsageList
	for {
		page, err := c.ListUsage(ctx, q)
		if err != nil {
			return all, err
		}
		all.Usage = append(all.Usage, page.Usage...)
		all.Granularity, all.Currency = page.Granularity, page.Currency
		if page.NextCursor == "" {
			if all.Usage == nil {
				all.Usage = []api.Usage{}
			}
			return all, nil
		}
		q.Cursor = page.NextCursor
	}
}

// GetBudget returns a team's monthly budget and this month's spend
// (ErrNotFound if it has none).
func (c *Client) GetBudget(ctx context.Context, teamID string) (api.Budget, error) {
	var out api.Budget
	err := c.do(ctx, http.MethodGet, "/teams/"+url.PathEscape(teamID)+"/budget", nil, nil, &out)
	return out, err
}

// SetBudget sets a team's monthly budget (host admin only).
func (c *Client) SetBudget(ctx context.Context, teamID string, req api.BudgetRequest) (api.Budget, error) {
	var out api.Budget
	err := c.do(ctx, http.MethodPut, "/teams/"+url.PathEscape(teamID)+"/budget", nil, req, &out)
	return out, err
}

// DeleteBudget removes a team's budget and its cap (host admin only).
func (c *Client) DeleteBudget(ctx context.Context, teamID string) error {
	return c.do(ctx, http.MethodDelete, "/teams/"+url.PathEscape(teamID)+"/budget", nil, nil, nil)
}
