package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Projects is what the server needs from the project control plane. It
// mirrors internal/control's Service, which satisfies it directly; every
// call names the caller, whose team must own what it touches (another
// team's project is ErrNotFound, as if it did not exist).
type Projects interface {
	CreateProject(ctx context.Context, p auth.Principal, req control.ProjectRequest) (control.ProjectView, error)
	GetProject(ctx context.Context, p auth.Principal, id string) (control.ProjectView, error)
	ListProjects(ctx context.Context, p auth.Principal, page store.Page) ([]control.ProjectView, string, error)
	UpdateProject(ctx context.Context, p auth.Principal, id string, req control.ProjectRequest) (control.ProjectView, error)
	DeleteProject(ctx context.Context, p auth.Principal, id string) error
	// Activate returns at once with the live activation or a new one;
	// progress goes on in the background.
	Activate(ctx context.Context, p auth.Principal, projectID string) (store.Activation, error)
	// Watch replays an activation's events after afterSeq, then follows
	// them; the channel closes after ready or failed, or when ctx ends.
	Watch(ctx context.Context, p auth.Principal, activationID string, afterSeq int64) (<-chan store.Event, error)
	Deactivate(ctx context.Context, p auth.Principal, projectID, reason string) (store.Activation, error)
	Heartbeat(ctx context.Context, p auth.Principal, projectID string) error
	GetActivation(ctx context.Context, p auth.Principal, id string) (store.Activation, error)
	ListActivations(ctx context.Context, p auth.Principal, projectID string, page store.Page) ([]store.Activation, string, error)
}

var _ Projects = (*control.Service)(nil)

// Bounds of project requests.
const (
	// maxProjectPage bounds ?limit on the project and activation lists
	// (the store's own maximum).
	maxProjectPage = 500
	// sseHeartbeat keeps idle progress streams open through proxies that
	// cut silent connections.
	sseHeartbeat = 15 * time.Second
	// reasonAPI is the end reason of a deactivation asked through the API
	// without one.
	reasonAPI = "explicit"
)

var (
	errNoProjects = sandbox.Errorf(sandbox.ErrUnsupported, "projects_disabled", "this server does not manage projects")
	errNoAppProxy = sandbox.Errorf(sandbox.ErrUnsupported, "app_proxy_disabled", "this server does not proxy project apps")
)

// principal returns the caller the auth middleware put in the context.
func principal(r *http.Request) (auth.Principal, error) {
	p, ok := auth.FromContext(r.Context())
	if !ok {
		return auth.Principal{}, errUnauthenticated
	}
	return p, nil
}

// projectCall is the prologue of every project handler: projects are
// enabled, the caller is known, and the {id} path value (if the route has
// one) is returned as is: the control plane decides whether it exists.
func (s *Server) projectCall(r *http.Request) (auth.Principal, string, error) {
	if s.projects == nil {
		return auth.Principal{}, "", errNoProjects
	}
	p, err := principal(r)
	if err != nil {
		return auth.Principal{}, "", err
	}
	return p, r.PathValue("id"), nil
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) error {
	p, _, err := s.projectCall(r)
	if err != nil {
		return err
	}
	creq, err := decodeProjectRequest(w, r)
	if err != nil {
		return err
	}
	v, err := s.projects.CreateProject(r.Context(), p, creq)
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	writeJSON(w, http.StatusCreated, s.toAPIProject(r, v))
	return nil
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) error {
	p, _, err := s.projectCall(r)
	if err != nil {
		return err
	}
	page, err := pageQuery(r)
	if err != nil {
		return err
	}
	labels, err := sandbox.ParseLabelSelectors(r.URL.Query()["label"])
	if err != nil {
		return err
	}
	vs, next, err := s.projects.ListProjects(r.Context(), p, page)
	if err != nil {
		return fmt.Errorf("list projects: %w", err)
	}
	if labels != nil {
		// Filtered within the page: a page may come back short (even
		// empty) with a cursor to the next.
		vs = slices.DeleteFunc(vs, func(v control.ProjectView) bool { return !sandbox.MatchLabels(v.Spec.Labels, labels) })
	}
	toAPI := func(v control.ProjectView) api.Project { return s.toAPIProject(r, v) }
	writeJSON(w, http.StatusOK, api.ProjectList{Projects: toAPIList(vs, toAPI), NextCursor: next})
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	v, err := s.projects.GetProject(r.Context(), p, id)
	if err != nil {
		return fmt.Errorf("get project %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPIProject(r, v))
	return nil
}

func (s *Server) updateProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	// Another team's project is not found, whatever the body says: the
	// owner is checked before the request is.
	if _, err := s.projects.GetProject(r.Context(), p, id); err != nil {
		return err
	}
	creq, err := decodeProjectRequest(w, r)
	if err != nil {
		return err
	}
	v, err := s.projects.UpdateProject(r.Context(), p, id, creq)
	if err != nil {
		return fmt.Errorf("update project %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPIProject(r, v))
	return nil
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	// Deleting deactivates first, which saves state: that must finish even
	// if the client hangs up.
	if err := s.projects.DeleteProject(context.WithoutCancel(r.Context()), p, id); err != nil {
		return fmt.Errorf("delete project %s: %w", id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// activateProject starts (or joins) an activation. Three answers:
//   - default: 202 with the activation as it is now;
//   - Accept: text/event-stream: its progress as server-sent events, ending
//     at ready or failed (Last-Event-ID resumes after that event);
//   - ?wait=true: 200 with the activation once ready or failed.
func (s *Server) activateProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	wait, err := boolQuery(r, "wait", false)
	if err != nil {
		return err
	}
	stream := acceptsEventStream(r)
	after, err := lastEventID(r)
	if err != nil {
		return err
	}
	ctx, err := withQueueDeadline(r)
	if err != nil {
		return err
	}
	// The activation belongs to the control plane, not to this request: a
	// client that hangs up does not stop it.
	a, err := s.projects.Activate(context.WithoutCancel(ctx), p, id)
	if err != nil {
		return fmt.Errorf("activate project %s: %w", id, err)
	}
	switch {
	case stream:
		return s.streamActivation(w, r, p, a, after)
	case wait:
		return s.waitActivation(w, r, p, a)
	}
	writeJSON(w, http.StatusAccepted, s.toAPIActivation(r, a))
	return nil
}

// waitActivation answers a's state once its progress ends.
func (s *Server) waitActivation(w http.ResponseWriter, r *http.Request, p auth.Principal, a store.Activation) error {
	ctx, cancel := s.longPoll(r)
	defer cancel()
	events, err := s.projects.Watch(ctx, p, a.ID, 0)
	if err != nil {
		return s.shutdownErr(r, fmt.Errorf("watch activation %s: %w", a.ID, err))
	}
	// A long wait must outlive the server's write timeout, if it has one.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	var last store.Event
	for e := range events {
		last = e
	}
	if err := ctx.Err(); err != nil {
		return s.shutdownErr(r, err)
	}
	if err := queueRefusal(last); err != nil {
		return err // 429 with its Retry-After, as a create refused by admission
	}
	a, err = s.projects.GetActivation(r.Context(), p, a.ID)
	if err != nil {
		return fmt.Errorf("get activation: %w", err)
	}
	writeJSON(w, http.StatusOK, s.toAPIActivation(r, a))
	return nil
}

func (s *Server) deactivateProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	var req api.DeactivateRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	reason := req.Reason
	if reason == "" {
		reason = reasonAPI
	}
	if len(reason) > 200 || strings.ContainsAny(reason, "\x00\n\r") {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_reason", "reason must be one line of at most 200 bytes")
	}
	// Saving state must finish even if the client hangs up.
	a, err := s.projects.Deactivate(context.WithoutCancel(r.Context()), p, id, reason)
	if err != nil {
		return fmt.Errorf("deactivate project %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPIActivation(r, a))
	return nil
}

func (s *Server) heartbeatProject(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	if err := s.projects.Heartbeat(r.Context(), p, id); err != nil {
		return fmt.Errorf("heartbeat of project %s: %w", id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listActivations(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	page, err := pageQuery(r)
	if err != nil {
		return err
	}
	as, next, err := s.projects.ListActivations(r.Context(), p, id, page)
	if err != nil {
		return fmt.Errorf("list activations of project %s: %w", id, err)
	}
	toAPI := func(a store.Activation) api.Activation { return s.toAPIActivation(r, a) }
	writeJSON(w, http.StatusOK, api.ActivationList{Activations: toAPIList(as, toAPI), NextCursor: next})
	return nil
}

func (s *Server) getActivation(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	a, err := s.projects.GetActivation(r.Context(), p, id)
	if err != nil {
		return fmt.Errorf("get activation %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPIActivation(r, a))
	return nil
}

// activationEvents streams an activation's progress as server-sent events,
// resuming after Last-Event-ID.
func (s *Server) activationEvents(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	after, err := lastEventID(r)
	if err != nil {
		return err
	}
	a, err := s.projects.GetActivation(r.Context(), p, id)
	if err != nil {
		return fmt.Errorf("get activation %s: %w", id, err)
	}
	return s.streamActivation(w, r, p, a, after)
}

// appURL signs a host-form URL (app-<id>.<domain>) that opens the
// project's app for a while, for browsers that cannot send a bearer token.
func (s *Server) appURL(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.projectCall(r)
	if err != nil {
		return err
	}
	var req api.AppURLRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	ttl, err := signedURLTTL(req.TTLSeconds)
	if err != nil {
		return err
	}
	if s.signer == nil || s.baseURL == "" {
		return errNoAppProxy
	}
	if _, err := s.projects.GetProject(r.Context(), p, id); err != nil {
		return fmt.Errorf("get project %s: %w", id, err)
	}
	base, err := app.RouteFor(id, s.baseURL)
	if err != nil {
		return fmt.Errorf("app route of project %s: %w", id, err)
	}
	expires := time.Now().Add(ttl).Truncate(time.Second).UTC()
	tok := app.Sign(s.signer, id, ttl)
	writeJSON(w, http.StatusOK, api.SignedURL{
		URL:       base + "?" + url.Values{proxy.TokenParam: {tok}}.Encode(),
		ExpiresAt: expires,
	})
	return nil
}

// serveApp is the path form of the app proxy, /api/v1/projects/{id}/app/...
// for every method; the caller was authenticated like any API call.
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request) {
	if s.apps == nil {
		s.writeError(w, r, errNoAppProxy)
		return
	}
	s.apps.ServeHTTP(w, r)
}

// streamActivation writes a's events after afterSeq as server-sent events
// (`event: <type>`, `id: <seq>`, `data: <json>`) until the control plane
// closes the stream at ready or failed. Comments keep an idle stream alive.
func (s *Server) streamActivation(w http.ResponseWriter, r *http.Request, p auth.Principal, a store.Activation, afterSeq int64) error {
	ctx, cancel := s.longPoll(r)
	defer cancel()
	events, err := s.projects.Watch(ctx, p, a.ID, afterSeq)
	if err != nil {
		return s.shutdownErr(r, fmt.Errorf("watch activation %s: %w", a.ID, err))
	}
	rc := http.NewResponseController(w)
	// Progress lasts as long as the app takes to get healthy.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", api.ContentTypeEventStream)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Paddock-Activation", a.ID)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return nil
			}
			if err := writeSSE(w, toAPIEvent(e)); err != nil {
				return nil // the client is gone
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}

// writeSSE writes one event. JSON has no raw newlines, so data is one line.
func writeSSE(w http.ResponseWriter, e api.ActivationEvent) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", sseField(e.Type), e.Seq, data)
	return err
}

// sseField keeps a field on its line: the type comes from the control
// plane, but a newline in it would forge fields.
func sseField(v string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, v)
}

// acceptsEventStream reports whether the client asked for server-sent events.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), api.ContentTypeEventStream) {
				return true
			}
		}
	}
	return false
}

// lastEventID is the Last-Event-ID header as a sequence number (0 if absent).
func lastEventID(r *http.Request) (int64, error) {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_last_event_id", "Last-Event-ID must be a non-negative integer, got %q", v)
	}
	return n, nil
}

// pageQuery parses ?cursor= and ?limit=.
func pageQuery(r *http.Request) (store.Page, error) {
	q := r.URL.Query()
	page := store.Page{Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxProjectPage {
			return page, sandbox.Errorf(sandbox.ErrInvalid, "invalid_limit", "limit must be an integer in [1, %d], got %q", maxProjectPage, v)
		}
		page.Limit = n
	}
	return page, nil
}

// decodeProjectRequest reads the body of a create or an update, which take
// the same whole request (an update replaces the spec, it does not patch it).
func decodeProjectRequest(w http.ResponseWriter, r *http.Request) (control.ProjectRequest, error) {
	var req api.ProjectRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return control.ProjectRequest{}, err
	}
	return fromAPIProjectRequest(req)
}

// fromAPIProjectRequest converts the wire request; the control plane
// validates the rest (names, paths, ports, resources).
func fromAPIProjectRequest(req api.ProjectRequest) (control.ProjectRequest, error) {
	if req.IdleTimeoutMs < 0 || req.MaxLifetimeMs < 0 || req.HealthTimeoutMs < 0 {
		return control.ProjectRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_project", "idleTimeoutMs, maxLifetimeMs and healthTimeoutMs must not be negative")
	}
	const maxMs = int64(365 * 24 * time.Hour / time.Millisecond)
	if req.IdleTimeoutMs > maxMs || req.MaxLifetimeMs > maxMs || req.HealthTimeoutMs > maxMs {
		return control.ProjectRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_project", "idleTimeoutMs, maxLifetimeMs and healthTimeoutMs must be at most a year")
	}
	if err := sandbox.ValidateEnv(req.Env); err != nil {
		return control.ProjectRequest{}, err
	}
	if err := sandbox.ValidateEnv(req.Secrets); err != nil {
		return control.ProjectRequest{}, err
	}
	out := control.ProjectRequest{
		Name:            req.Name,
		Source:          control.Source{Image: req.Source.Image},
		Install:         req.Install,
		Start:           req.Start,
		AppPort:         req.AppPort,
		HealthPath:      req.HealthPath,
		Env:             req.Env,
		Secrets:         req.Secrets,
		Resources:       sandbox.Resources{VCPUs: req.Resources.VCPUs, MemoryMB: req.Resources.MemoryMB, PIDs: req.Resources.PIDs, DiskMB: req.Resources.DiskMB},
		IdleTimeout:     time.Duration(req.IdleTimeoutMs) * time.Millisecond,
		MaxLifetime:     time.Duration(req.MaxLifetimeMs) * time.Millisecond,
		HealthTimeout:   time.Duration(req.HealthTimeoutMs) * time.Millisecond,
		PersistentPaths: req.PersistentPaths,
		AppSecretHeader: req.AppSecretHeader,
		AppSecretEnv:    req.AppSecretEnv,
		Labels:          req.Labels,
		Runtime:         req.Runtime,
	}
	if g := req.Source.Git; g != nil {
		out.Source.Git = &sandbox.Source{
			Type: sandbox.SourceGit, URL: g.URL, Dir: g.Dir, Revision: g.Revision, Depth: g.Depth,
			Username: g.Username, Password: g.Password, Token: g.Token,
		}
	}
	return out, nil
}

func (s *Server) toAPIProject(r *http.Request, v control.ProjectView) api.Project {
	sp := v.Spec
	out := api.Project{
		ID:     v.ID,
		TeamID: v.TeamID,
		Name:   v.Name,
		Spec: api.ProjectSpec{
			Source:          api.ProjectSource{Image: sp.Source.Image},
			Install:         sp.Install,
			Start:           sp.Start,
			AppPort:         sp.AppPort,
			HealthPath:      sp.HealthPath,
			Env:             sp.Env,
			SecretNames:     slices.Sorted(slices.Values(sp.SecretNames)),
			Resources:       api.Resources{VCPUs: sp.Resources.VCPUs, MemoryMB: sp.Resources.MemoryMB, PIDs: sp.Resources.PIDs, DiskMB: sp.Resources.DiskMB},
			IdleTimeoutMs:   sp.IdleTimeout.Milliseconds(),
			MaxLifetimeMs:   sp.MaxLifetime.Milliseconds(),
			HealthTimeoutMs: sp.HealthTimeout.Milliseconds(),
			PersistentPaths: sp.PersistentPaths,
			AppSecretHeader: sp.AppSecretHeader,
			AppSecretEnv:    sp.AppSecretEnv,
			Labels:          sp.Labels,
			Runtime:         sp.Runtime,
		},
		AppURL:    s.appBase(r, v.ID),
		CreatedAt: v.CreatedAt,
		UpdatedAt: v.UpdatedAt,
		Version:   v.Version,
	}
	if g := sp.Source.Git; g != nil {
		// Credentials never go back out, not even to the owner.
		out.Spec.Source.Git = &api.GitSource{URL: redactURL(g.URL), Revision: g.Revision, Depth: g.Depth, Dir: g.Dir}
	}
	if v.Active != nil {
		a := s.toAPIActivation(r, *v.Active)
		out.Active = &a
	}
	return out
}

func (s *Server) toAPIActivation(r *http.Request, a store.Activation) api.Activation {
	return api.Activation{
		ID:             a.ID,
		ProjectID:      a.ProjectID,
		SandboxID:      a.SandboxID,
		ImageDigest:    a.ImageDigest,
		State:          a.State,
		Error:          a.Error,
		LogTail:        a.LogTail,
		EndReason:      a.EndReason,
		AppURL:         s.appBase(r, a.ProjectID),
		CreatedAt:      a.CreatedAt,
		ReadyAt:        a.ReadyAt,
		EndedAt:        a.EndedAt,
		LastActivityAt: a.LastActivityAt,
	}
}

func toAPIEvent(e store.Event) api.ActivationEvent {
	return api.ActivationEvent{
		Seq: e.Seq, Time: e.Time, ProjectID: e.ProjectID, ActivationID: e.ActivationID,
		SandboxID: e.SandboxID, Type: e.Type, Message: e.Message, Data: e.Data,
	}
}

// appBase is the path-form URL of a project's app: on the configured public
// base, else on the host the client used to reach the API.
func (s *Server) appBase(r *http.Request, projectID string) string {
	base := s.baseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return strings.TrimRight(base, "/") + app.PathPrefix(projectID) + "/"
}

// idLogKey is the log attribute of a path's {id}: "project" under
// /projects, "activation" under /activations, "team", "token", "snapshot",
// else "sandbox" (the stable keys every log line uses).
func idLogKey(path string) string {
	rest, _ := strings.CutPrefix(path, api.Prefix+"/")
	kind, _, _ := strings.Cut(rest, "/")
	switch kind {
	case "projects", "activations", "teams", "tokens", "snapshots", "webhooks":
		return strings.TrimSuffix(kind, "s")
	}
	return "sandbox"
}

// redactURL drops userinfo from a URL; an unparsable one is withheld.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User = nil
	return u.String()
}
