package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	"github.com/paddock-dev/paddock/api"
)

// EventOptions filter the lifecycle event feed. Zero values mean all.
type EventOptions struct {
	// After resumes after that event Seq (the Last-Event-ID of a
	// reconnect); 0 starts with the next event, unless FromStart.
	After     int64
	FromStart bool
	Types     []string // event types, or prefixes as "sandbox.*"
	SandboxID string
	ProjectID string
	TeamID    string // host admin only
}

// Events follows the caller's team's lifecycle events (GET /events) until
// ctx ends, the server ends the stream (after an hour: resume with After
// set to the last Seq seen), or an error, which it yields.
func (c *Client) Events(ctx context.Context, opts EventOptions) iter.Seq2[api.Event, error] {
	return func(yield func(api.Event, error) bool) {
		q := url.Values{}
		for _, t := range opts.Types {
			q.Add("type", t)
		}
		for k, v := range map[string]string{"sandbox": opts.SandboxID, "project": opts.ProjectID, "team": opts.TeamID} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if opts.FromStart && opts.After == 0 {
			q.Set("after", "0")
		}
		req, err := c.request(ctx, http.MethodGet, "/events", q, nil, "")
		if err != nil {
			yield(api.Event{}, err)
			return
		}
		req.Header.Set("Accept", api.ContentTypeEventStream)
		if opts.After > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatInt(opts.After, 10))
		}
		resp, err := c.send(req)
		if err != nil {
			yield(api.Event{}, err)
			return
		}
		defer resp.Body.Close()
		for ev, err := range ReadSSE(resp.Body) {
			if err != nil {
				if ctx.Err() == nil {
					yield(api.Event{}, err)
				}
				return
			}
			var e api.Event
			if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
				yield(api.Event{}, fmt.Errorf("paddock: decode event: %w", err))
				return
			}
			if !yield(e, nil) {
				return
			}
		}
	}
}

// AddWebhook adds a webhook to the caller's team; the answer carries the
// signing secret, which is never shown again.
func (c *Client) AddWebhook(ctx context.Context, req api.WebhookRequest) (api.Webhook, error) {
	var out api.Webhook
	err := c.do(ctx, http.MethodPost, "/webhooks", nil, req, &out)
	return out, err
}

// ListWebhooks returns the caller's team's webhooks.
func (c *Client) ListWebhooks(ctx context.Context) ([]api.Webhook, error) {
	var out api.WebhookList
	err := c.do(ctx, http.MethodGet, "/webhooks", nil, nil, &out)
	return out.Webhooks, err
}

// DeleteWebhook removes a webhook and its pending deliveries.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/webhooks/"+url.PathEscape(id), nil, nil, nil)
}

// WebhookDeliveries returns a webhook's deliveries after seq after, by
// event Seq; state filters ("pending", "delivered", "failed", "dropped";
// "" all).
func (c *Client) WebhookDeliveries(ctx context.Context, id, state string, after int64, limit int) (api.DeliveryList, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.DeliveryList
	err := c.do(ctx, http.MethodGet, "/webhooks/"+url.PathEscape(id)+"/deliveries", q, nil, &out)
	return out, err
}

// SetLabels replaces the sandbox's labels.
func (s *Sandbox) SetLabels(ctx context.Context, labels map[string]string) error {
	if labels == nil {
		labels = map[string]string{}
	}
	return s.c.do(ctx, http.MethodPut, sandboxPath(s.ID)+"/labels", nil, api.LabelsRequest{Labels: labels}, &s.Sandbox)
}

// labelQuery adds ?label=k=v for each label.
func labelQuery(q url.Values, labels map[string]string) {
	for k, v := range labels {
		q.Add("label", k+"="+v)
	}
}
