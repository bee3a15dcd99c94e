package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Events is the lifecycle event feed (internal/events' Bus).
type Events interface {
	Watch(ctx context.Context, f events.Filter) (<-chan store.Event, error)
}

// Webhooks keeps teams' webhooks (internal/events' Webhooks).
type Webhooks interface {
	Add(ctx context.Context, teamID, url, secret string, types []string) (store.Webhook, string, error)
	List(ctx context.Context, teamID string) ([]store.Webhook, error)
	Get(ctx context.Context, teamID, id string) (store.Webhook, error)
	Delete(ctx context.Context, teamID, id string) error
	Deliveries(ctx context.Context, teamID, id, state string, afterSeq int64, limit int) ([]store.Delivery, error)
}

// Bounds of an event stream: one lasts at most maxEventStream (the client
// reconnects with Last-Event-ID and loses nothing), and a write that a
// client does not take within eventWriteTimeout ends it.
const (
	maxEventStream    = time.Hour
	eventWriteTimeout = 30 * time.Second
)

var errNoEvents = sandbox.Errorf(sandbox.ErrUnsupported, "events_unsupported", "this server keeps no event feed")

// eventFeed streams lifecycle events as server-sent events: the caller's
// team's only (a host admin's: every team's, or ?team=). Filters: ?type=
// (repeatable, "sandbox.*" for a prefix), ?sandbox=, ?project=. Without
// Last-Event-ID (or ?after=) it starts with the next event.
func (s *Server) eventFeed(w http.ResponseWriter, r *http.Request) error {
	if s.events == nil {
		return errNoEvents
	}
	p := callerOf(r)
	q := r.URL.Query()
	f := events.Filter{TeamID: p.TeamID, ProjectID: q.Get("project"), SandboxID: q.Get("sandbox"), Types: q["type"], Tail: true}
	if p.HostAdmin {
		f.TeamID = q.Get("team")
	} else if p.TeamID == "" {
		return sandbox.Errorf(sandbox.ErrForbidden, "no_team", "this credential belongs to no team")
	}
	if err := events.ValidTypes(f.Types); err != nil {
		return err
	}
	after, err := lastEventID(r)
	if err != nil {
		return err
	}
	if v := q.Get("after"); v != "" && after == 0 {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_after", "after must be a non-negative integer, got %q", v)
		}
		if after == 0 {
			f.Tail = false // after=0: from the first event kept
		}
	}
	f.AfterSeq = after
	ctx, cancel := s.longPoll(r)
	defer cancel()
	ctx, cancelLife := context.WithTimeout(ctx, maxEventStream)
	defer cancelLife()
	feed, err := s.events.Watch(ctx, f)
	if err != nil {
		return s.shutdownErr(r, fmt.Errorf("watch events: %w", err))
	}
	rc := http.NewResponseController(w)
	// The deadlines below are the connection's: clear them for whatever
	// request comes next on it.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	h := w.Header()
	h.Set("Content-Type", api.ContentTypeEventStream)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case e, ok := <-feed:
			if !ok {
				return nil // the client went, the stream's time is up, or shutdown
			}
			err = writeEvent(w, rc, events.ToAPI(e))
		case <-tick.C:
			_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return nil // the client is gone or does not read
		}
	}
}

func writeEvent(w http.ResponseWriter, rc *http.ResponseController, e api.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	_, err = fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", sseField(e.Type), e.Seq, data)
	return err
}

var errNoWebhooks = sandbox.Errorf(sandbox.ErrUnsupported, "webhooks_unsupported", "this server delivers no webhooks")

// webhookTeam is the team whose webhooks the caller manages: its own.
// Adding and removing one takes a team admin: a webhook sends every event
// of the team out of paddock.
func webhookTeam(r *http.Request, manage bool) (string, error) {
	p := callerOf(r)
	switch {
	case p.TeamID == "":
		return "", sandbox.Errorf(sandbox.ErrForbidden, "no_team", "this credential belongs to no team")
	case manage && !p.CanAdminTeam(p.TeamID):
		return "", sandbox.Errorf(sandbox.ErrForbidden, "forbidden", "managing webhooks takes a team admin")
	}
	return p.TeamID, nil
}

// readTeam is the team filter of a read: "" (all) for the host admin.
func readTeam(r *http.Request) (string, error) {
	if callerOf(r).HostAdmin {
		return "", nil
	}
	return webhookTeam(r, false)
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	team, err := webhookTeam(r, true)
	if err != nil {
		return err
	}
	var req api.WebhookRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	hook, secret, err := s.webhooks.Add(r.Context(), team, req.URL, req.Secret, req.Types)
	if err != nil {
		return fmt.Errorf("add webhook: %w", err)
	}
	out := toAPIWebhook(hook)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	team, err := readTeam(r)
	if err != nil {
		return err
	}
	hooks, err := s.webhooks.List(r.Context(), team)
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	writeJSON(w, http.StatusOK, api.WebhookList{Webhooks: toAPIList(hooks, toAPIWebhook)})
	return nil
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	team, err := readTeam(r)
	if err != nil {
		return err
	}
	hook, err := s.webhooks.Get(r.Context(), team, r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("get webhook: %w", err)
	}
	writeJSON(w, http.StatusOK, toAPIWebhook(hook))
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	team, err := webhookTeam(r, true)
	if err != nil {
		return err
	}
	if callerOf(r).HostAdmin {
		team = ""
	}
	if err := s.webhooks.Delete(r.Context(), team, r.PathValue("id")); err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	if s.webhooks == nil {
		return errNoWebhooks
	}
	team, err := readTeam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_after", "after must be a non-negative integer, got %q", v)
		}
	}
	limit := store.DefaultEventLimit
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > store.MaxEventLimit {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_limit", "limit must be an integer in [1, %d], got %q", store.MaxEventLimit, v)
		}
	}
	state := q.Get("state")
	switch state {
	case "", store.DeliveryPending, store.DeliveryDelivered, store.DeliveryFailed, store.DeliveryDropped:
	default:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_state", "unknown delivery state %q", state)
	}
	ds, err := s.webhooks.Deliveries(r.Context(), team, r.PathValue("id"), state, after, limit)
	if err != nil {
		return fmt.Errorf("list deliveries: %w", err)
	}
	out := api.DeliveryList{Deliveries: toAPIList(ds, toAPIDelivery)}
	if len(ds) == limit {
		out.NextAfter = ds[len(ds)-1].EventSeq
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func toAPIWebhook(h store.Webhook) api.Webhook {
	return api.Webhook{ID: h.ID, TeamID: h.TeamID, URL: h.URL, Types: h.Types, CreatedAt: h.CreatedAt}
}

func toAPIDelivery(d store.Delivery) api.Delivery {
	return api.Delivery{ID: d.ID, WebhookID: d.WebhookID, EventSeq: d.EventSeq, EventType: d.EventType, State: d.State,
		Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt, LastAttemptAt: d.LastAttemptAt, LastStatus: d.LastStatus,
		LastError: d.LastError, CreatedAt: d.CreatedAt}
}
