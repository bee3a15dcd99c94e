package vercel

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// lifecycleTimeout bounds starting, stopping or snapshotting one session.
// Those run detached from the request: a client hanging up must not leave
// a paddock sandbox that no record knows, or a record that names a
// snapshot never taken.
const lifecycleTimeout = 10 * time.Minute

// memoryPerVCPU is Vercel's fixed ratio (2048 MB per vCPU).
const memoryPerVCPU = 2048

// minRouteTTL is the shortest life of a signed route URL.
const minRouteTTL = time.Minute

// stateOf is what is kept of a paddock sandbox as a session.
func stateOf(sb sandbox.Sandbox) *SessionState {
	return &SessionState{
		Status: sessionStatus(sb.State), StartedAt: ms(sb.StartedAt), StoppedAt: ms(sb.StoppedAt),
		ExpiresAt: ms(sb.ExpiresAt), VCPUs: sb.Resources.VCPUs, MemoryMB: sb.Resources.MemoryMB, Cwd: cwdOf(sb),
	}
}

func sessionStatus(s sandbox.State) string {
	switch s {
	case sandbox.Pending, sandbox.Running, sandbox.Stopping, sandbox.Stopped, sandbox.Failed:
		return string(s)
	}
	return "failed"
}

// cwdOf is a session's default working directory: the image's, else the
// home of the user commands run as (the image's user as the sandbox
// resolved it).
func cwdOf(sb sandbox.Sandbox) string {
	if sb.WorkingDir != "" {
		return sb.WorkingDir
	}
	return sb.RunAs().Home
}

// liveSession is a session record with its paddock sandbox, if that still exists.
type liveSession struct {
	rec   *SessionRecord
	sb    sandbox.Sandbox
	found bool
}

func (h *Handler) live(ctx context.Context, s *SessionRecord) (liveSession, error) {
	sb, err := h.sb.Get(ctx, s.ID)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return liveSession{rec: s}, nil
	case err != nil:
		return liveSession{}, fmt.Errorf("session %s: %w", s.ID, err)
	}
	return liveSession{rec: s, sb: sb, found: true}, nil
}

func (l liveSession) state() SessionState {
	if l.found {
		return *stateOf(l.sb)
	}
	if l.rec.Last != nil {
		st := *l.rec.Last
		if st.Status == "running" || st.Status == "pending" || st.Status == "stopping" {
			st.Status = "stopped" // its sandbox is gone
		}
		return st
	}
	return SessionState{Status: "stopped", Cwd: agent.UserHome}
}

// wireSessionOf describes a session.
func (h *Handler) wireSessionOf(rec *Record, l liveSession) wireSession {
	st := l.state()
	s := l.rec
	out := wireSession{
		ID: s.ID, Memory: st.MemoryMB, VCPUs: st.VCPUs, Region: rec.region(), Status: st.Status,
		RequestedAt: s.CreatedAt, StartedAt: st.StartedAt, RequestedStopAt: s.StopRequestedAt, StoppedAt: st.StoppedAt,
		SourceSnapshotID: s.SourceSnapshotID, SnapshottedAt: s.SnapshottedAt, CreatedAt: s.CreatedAt, Cwd: st.Cwd,
	}
	if rec.Config.Runtime != "" {
		rt := rec.Config.Runtime
		out.Runtime = &rt
	}
	start := st.StartedAt
	if start == 0 {
		start = s.CreatedAt
	}
	if st.ExpiresAt > start {
		out.Timeout = st.ExpiresAt - start
	}
	if st.StoppedAt > 0 && st.StartedAt > 0 {
		out.Duration = st.StoppedAt - st.StartedAt
	}
	out.UpdatedAt = max(s.CreatedAt, st.StartedAt, st.StoppedAt, s.StopRequestedAt, s.SnapshottedAt)
	if t := h.transientOf(s.ID); t != "" && l.found && st.Status != "failed" {
		out.Status = t
	}
	if l.found {
		out.NetworkPolicy = wirePolicyOf(l.sb.NetworkPolicy)
	}
	return out
}

func (r *Record) region() string {
	if r.Config.Region != "" {
		return r.Config.Region
	}
	return Region
}

// routesOf gives each declared port of a live session a URL that opens it
// from anywhere the API is reachable, with no credentials to add: the
// proxy's path form on the public base URL, signed until the session's
// timeout (at least minRouteTTL). subdomain is the host-form label
// (<port>-<id>), served under paddock's --domain with the owner's token.
func (h *Handler) routesOf(l liveSession) []wireRoute {
	out := []wireRoute{}
	if !l.found || h.signer == nil || h.baseURL == "" {
		return out
	}
	ttl := max(time.Until(l.sb.ExpiresAt), minRouteTTL)
	base := strings.TrimSuffix(h.baseURL, "/")
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	for _, p := range l.sb.Ports {
		rt, err := proxy.RouteFor(l.sb.ID, p.Port, h.baseURL)
		if err != nil {
			h.log.Warn("vercel compat: port route", "sandbox", l.sb.ID, "port", p.Port, "err", err)
			continue
		}
		tok := h.signer.Sign(l.sb.ID, p.Port, ttl)
		u := base + proxy.PathPrefix(l.sb.ID, p.Port) + "/?" + url.Values{proxy.TokenParam: {tok}}.Encode()
		out = append(out, wireRoute{URL: u, Subdomain: rt.Subdomain, Port: p.Port})
	}
	return out
}

// wireSandboxOf describes a v2 sandbox and its current session.
func (h *Handler) wireSandboxOf(rec *Record, cur *wireSession) wireSandbox {
	out := wireSandbox{
		Name: rec.Name, Persistent: rec.Persistent, Region: rec.region(), FailoverRegions: rec.Config.Failover,
		VCPUs: rec.Config.VCPUs, Runtime: rec.Config.Runtime, Image: rec.Config.Image, Timeout: rec.Config.TimeoutMs,
		NetworkPolicy: wirePolicyOfConfig(rec.Config.NetworkPolicy), CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt,
		CurrentSnapshotID: rec.CurrentSnapshotID, Tags: rec.Config.Tags, Status: "stopped",
	}
	if rec.Config.VCPUs > 0 {
		out.Memory = int64(rec.Config.VCPUs * memoryPerVCPU)
	}
	if cur != nil {
		out.CurrentSessionID = cur.ID
		out.Status = cur.Status
		out.StatusUpdatedAt = cur.UpdatedAt
		out.Cwd = cur.Cwd
		if out.VCPUs == 0 {
			out.VCPUs, out.Memory = cur.VCPUs, cur.Memory
		}
		if out.NetworkPolicy == nil {
			out.NetworkPolicy = cur.NetworkPolicy
		}
		if cur.Status == "running" && cur.Timeout > 0 {
			start := cur.StartedAt
			if start == 0 {
				start = cur.CreatedAt
			}
			out.ExpiresAt = start + cur.Timeout
		}
		out.UpdatedAt = max(out.UpdatedAt, cur.UpdatedAt)
	}
	for _, s := range rec.Sessions {
		if s.Last != nil && s.Last.StoppedAt > 0 && s.Last.StartedAt > 0 {
			out.TotalDurationMs += s.Last.StoppedAt - s.Last.StartedAt
		}
	}
	return out
}

// describe answers create, get and fork: the sandbox, its current session
// and that session's routes.
func (h *Handler) describe(ctx context.Context, rec *Record, resumed bool) (sandboxAndSession, error) {
	cur := rec.current()
	if cur == nil {
		return sandboxAndSession{}, fmt.Errorf("sandbox %s has no session", rec.Name)
	}
	l, err := h.live(ctx, cur)
	if err != nil {
		return sandboxAndSession{}, err
	}
	ws := h.wireSessionOf(rec, l)
	return sandboxAndSession{Sandbox: h.wireSandboxOf(rec, &ws), Session: ws, Routes: h.routesOf(l), Resumed: resumed}, nil
}

// startSession creates the paddock sandbox of a new session from the
// record's config and appends it. fromSnapshot, when set, is what it starts
// from; src carries a first session's source with its credentials, which
// are never stored. The caller holds the record's lock and saves it.
func (h *Handler) startSession(ctx context.Context, rec *Record, fromSnapshot string, src *sandbox.Source) error {
	cfg := rec.Config
	params := server.CreateParams{
		Image:         cfg.Image,
		Timeout:       time.Duration(cfg.TimeoutMs) * time.Millisecond,
		Env:           cfg.Env,
		NetworkPolicy: toSandboxPolicy(cfg.NetworkPolicy),
		Snapshot:      fromSnapshot,
		TeamID:        rec.Team, // the resolved paddock team: /api/v1 and the port proxy check it
	}
	if cfg.VCPUs > 0 {
		params.Resources = sandbox.Resources{VCPUs: cfg.VCPUs, MemoryMB: int64(cfg.VCPUs * memoryPerVCPU)}
	}
	for _, p := range cfg.Ports {
		params.Ports = append(params.Ports, sandbox.Port{Port: p})
	}
	if fromSnapshot == "" && cfg.Source != nil {
		switch {
		case cfg.Source.Type == "snapshot":
			params.Snapshot = cfg.Source.SnapshotID
		case src != nil:
			params.Source = src
		case cfg.Source.Private:
			return sandbox.Errorf(sandbox.ErrInvalid, "bad_request",
				"Invalid request: sandbox %s starts from a private git repository whose credentials paddock does not keep; make it persistent or recreate it", rec.Name)
		default:
			params.Source = &sandbox.Source{Type: cfg.Source.Type, URL: cfg.Source.URL, Revision: cfg.Source.Revision, Depth: cfg.Source.Depth}
		}
	}
	if params.Snapshot != "" {
		// Images and snapshots are exclusive in paddock: a snapshot carries its image.
		params.Image = ""
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lifecycleTimeout)
	defer cancel()
	sb, err := h.sb.Create(cctx, params)
	if err != nil {
		return fmt.Errorf("start a session of sandbox %s: %w", rec.Name, err)
	}
	now := ms(h.now())
	rec.Sessions = append(rec.Sessions, SessionRecord{ID: sb.ID, CreatedAt: ms(sb.CreatedAt), SourceSnapshotID: params.Snapshot, Last: stateOf(sb)})
	rec.UpdatedAt = now
	h.log.Info("vercel compat: session started", "name", rec.Name, "sandbox", sb.ID, "snapshot", params.Snapshot)
	return nil
}

// stopLocked stops a session and, with snapshot, snapshots it (as
// persistent sandboxes do on stop, and as snapshot() does), making that the
// snapshot the sandbox resumes from. The caller holds the record's lock
// and saves the record.
func (h *Handler) stopLocked(ctx context.Context, rec *Record, s *SessionRecord, snapshot bool, method string) (*SnapshotRecord, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lifecycleTimeout)
	defer cancel()
	h.setTransient(s.ID, "stopping")
	defer h.setTransient(s.ID, "")
	if s.StopRequestedAt == 0 {
		s.StopRequestedAt = ms(h.now())
	}
	sb, err := h.sb.Stop(ctx, s.ID)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return nil, nil // already gone: nothing to stop or keep
	case err != nil:
		return nil, fmt.Errorf("stop session %s: %w", s.ID, err)
	}
	s.Last = stateOf(sb)
	rec.UpdatedAt = ms(h.now())
	if !snapshot || s.SnapshotID != "" {
		return nil, nil
	}
	if h.snaps == nil {
		return nil, errNoSnapshots
	}
	h.setTransient(s.ID, "snapshotting")
	snap, err := h.snaps.Snapshot(ctx, s.ID)
	if err != nil {
		return nil, fmt.Errorf("snapshot session %s: %w", s.ID, err)
	}
	sr := SnapshotRecord{Scope: rec.Scope, ID: snap.ID, SandboxName: rec.Name, SourceSession: s.ID,
		ParentID: s.SourceSnapshotID, CreationMethod: method, CreatedAt: ms(snap.CreatedAt)}
	if err := h.store.PutSnapshot(ctx, sr); err != nil {
		return nil, err
	}
	s.SnapshotID, s.SnapshottedAt = snap.ID, ms(h.now())
	rec.CurrentSnapshotID = snap.ID
	return &sr, nil
}

// resumeLocked starts a new session unless the current one is alive: a
// persistent sandbox from its current snapshot (taking it first if its
// last session stopped on its own, by timeout), any other from its config.
// The caller holds the record's lock and saves the record.
func (h *Handler) resumeLocked(ctx context.Context, rec *Record) (bool, error) {
	cur := rec.current()
	if cur != nil {
		l, err := h.live(ctx, cur)
		if err != nil {
			return false, err
		}
		if l.found {
			switch l.sb.State {
			case sandbox.Pending, sandbox.Running:
				return false, nil
			}
			if rec.Persistent && cur.SnapshotID == "" && l.sb.State != sandbox.Failed {
				if _, err := h.stopLocked(ctx, rec, cur, true, "automatic"); err != nil {
					return false, err
				}
			} else if _, err := h.stopLocked(ctx, rec, cur, false, ""); err != nil {
				return false, err
			}
		}
	}
	from := ""
	if rec.Persistent && rec.CurrentSnapshotID != "" {
		if h.snaps == nil {
			return false, errNoSnapshots
		}
		if _, err := h.snaps.GetSnapshot(rec.CurrentSnapshotID); err != nil {
			if errors.Is(err, sandbox.ErrNotFound) {
				return false, errNoSnapshotToResume
			}
			return false, err
		}
		from = rec.CurrentSnapshotID
	}
	if err := h.startSession(ctx, rec, from, nil); err != nil {
		return false, err
	}
	if cur != nil {
		h.dropSession(ctx, cur)
	}
	return true, nil
}

// dropSession deletes an ended session's paddock sandbox (its snapshot, if
// any, is a layer of its own); the record keeps describing it.
func (h *Handler) dropSession(ctx context.Context, s *SessionRecord) {
	if err := h.sb.Delete(context.WithoutCancel(ctx), s.ID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		h.log.Warn("vercel compat: delete ended session", "sandbox", s.ID, "err", err)
	}
}

// wireSnapshotOf describes a snapshot; rec may be the zero record for a
// snapshot paddock took outside this API.
func wireSnapshotOf(snap *image.Snapshot, rec SnapshotRecord, v1 bool) wireSnapshot {
	out := wireSnapshot{
		ID: snap.ID, Region: Region, Status: "created", SizeBytes: snap.Size, ExpiresAt: ms(snap.ExpiresAt),
		CreatedAt: ms(snap.CreatedAt), UpdatedAt: ms(snap.CreatedAt), LastUsedAt: ms(snap.LastUsed),
		CreationMethod: rec.CreationMethod, ParentID: rec.ParentID,
	}
	src := rec.SourceSession
	if src == "" {
		src = snap.Source
	}
	if v1 {
		out.SourceSandboxID = src
		out.CreationMethod, out.ParentID, out.LastUsedAt = "", "", 0
	} else {
		out.SourceSessionID = src
	}
	out.UpdatedAt = max(out.UpdatedAt, out.LastUsedAt)
	return out
}
