package vercel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
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

// DefaultCwd is the working directory of sandboxes made through this API,
// as on Vercel: commands without a cwd run there, relative file paths
// resolve there, and a git or tarball source lands there.
const DefaultCwd = "/vercel/sandbox"

// stateOf is what is kept of a paddock sandbox as a session of rec.
func stateOf(rec *Record, sb sandbox.Sandbox) *SessionState {
	return &SessionState{
		Status: sessionStatus(sb.State), StartedAt: ms(sb.StartedAt), StoppedAt: ms(sb.StoppedAt),
		ExpiresAt: ms(sb.ExpiresAt), VCPUs: sb.Resources.VCPUs, MemoryMB: sb.Resources.MemoryMB, Cwd: rec.cwd(sb),
	}
}

func sessionStatus(s sandbox.State) string {
	switch s {
	case sandbox.Pending, sandbox.Running, sandbox.Stopping, sandbox.Stopped, sandbox.Failed:
		return string(s)
	case sandbox.Paused:
		// Vercel sessions have no pause: nothing runs, as when stopped.
		return string(sandbox.Stopped)
	}
	return "failed"
}

// cwd is the working directory of rec's session sb: the record's
// (DefaultCwd), else, for a record made before it kept one, the image's,
// else the home of the user commands run as (the image's user as the
// sandbox resolved it).
func (r *Record) cwd(sb sandbox.Sandbox) string {
	switch {
	case r.Config.Cwd != "":
		return r.Config.Cwd
	case sb.WorkingDir != "":
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

func (l liveSession) state(rec *Record) SessionState {
	if l.found {
		return *stateOf(rec, l.sb)
	}
	if l.rec.Last != nil {
		st := *l.rec.Last
		if st.Status == "running" || st.Status == "pending" || st.Status == "stopping" {
			st.Status = "stopped" // its sandbox is gone
		}
		return st
	}
	cwd := rec.Config.Cwd
	if cwd == "" {
		cwd = agent.UserHome
	}
	return SessionState{Status: "stopped", Cwd: cwd}
}

// wireSessionOf describes a session.
func (h *Handler) wireSessionOf(ctx context.Context, rec *Record, l liveSession) wireSession {
	st := l.state(rec)
	st.Usage = h.sessionUsage(ctx, rec.Team, l)
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
	out.setUsage(st.Usage)
	return out
}

func (r *Record) region() string {
	if r.Config.Region != "" {
		return r.Config.Region
	}
	return Region
}

// routesOf gives each declared port of a live session a URL that opens it
// with no credentials to add: the proxy's host form (<port>-<id>.<domain>
// on the public base URL), signed until the session's timeout (at least
// minRouteTTL). The host form, never the path form: a page the sandbox
// serves gets an origin of its own, not the API's, where it could reach
// other tenants' paths with the browser's cookies (the Vercel SDK hands
// these URLs to browsers). subdomain is the host form's label.
func (h *Handler) routesOf(l liveSession) []wireRoute {
	out := []wireRoute{}
	if !l.found || h.signer == nil || h.baseURL == "" {
		return out
	}
	ttl := max(time.Until(l.sb.ExpiresAt), minRouteTTL)
	for _, p := range l.sb.Ports {
		rt, err := proxy.RouteFor(l.sb.ID, p.Port, h.baseURL)
		if err != nil {
			h.log.Warn("vercel compat: port route", "sandbox", l.sb.ID, "port", p.Port, "err", err)
			continue
		}
		tok := h.signer.Sign(l.sb.ID, p.Port, ttl)
		u := rt.URL + "?" + url.Values{proxy.TokenParam: {tok}}.Encode()
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
	var cpu int64
	var in, eg uint64
	known := false
	for _, s := range rec.Sessions {
		if s.Last != nil && s.Last.StoppedAt > 0 && s.Last.StartedAt > 0 {
			out.TotalDurationMs += s.Last.StoppedAt - s.Last.StartedAt
		}
		switch {
		case cur != nil && s.ID == cur.ID:
			if cur.ActiveCPUDurationMs != nil {
				cpu += *cur.ActiveCPUDurationMs
				in, eg = in+cur.NetworkTransfer.Ingress, eg+cur.NetworkTransfer.Egress
				known = true
			}
		case s.Last != nil && s.Last.Usage != nil:
			u := s.Last.Usage
			cpu, in, eg = cpu+u.ActiveCPUMs, in+u.IngressBytes, eg+u.EgressBytes
			known = true
		}
	}
	if known {
		out.TotalActiveCPUDurationMs, out.TotalIngressBytes, out.TotalEgressBytes = &cpu, &in, &eg
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
	ws := h.wireSessionOf(ctx, rec, l)
	return sandboxAndSession{Sandbox: h.wireSandboxOf(rec, &ws), Session: ws, Routes: h.routesOf(l), Resumed: resumed}, nil
}

// maxTries bounds how often one change is applied again after losing to
// other writers before the request answers 409 stale_version; between
// tries it waits a random time below 2ms, 4ms, ... up to maxBackoff.
const (
	maxTries   = 16
	maxBackoff = 100 * time.Millisecond
)

// backoff waits before try+1 of a change, in [0, min(2ms<<try, maxBackoff)),
// so that writers who met do not meet again.
func backoff(try int) {
	limit := min(2*time.Millisecond<<min(try, 16), maxBackoff)
	time.Sleep(time.Duration(rand.Int64N(int64(limit))))
}

// change applies fn to rec and saves it. When another writer (another
// request, another paddock replica on the same store) saved the record
// first, it reads the record again and applies fn to that, so that neither
// write is lost. fn only records what the caller already did (a session
// started, a snapshot taken): it may run several times and does nothing
// else. A record deleted meanwhile is errSandboxNotFound.
func (h *Handler) change(ctx context.Context, rec Record, fn func(*Record) error) (Record, error) {
	ctx = context.WithoutCancel(ctx) // what was done must be recorded
	for try := 1; ; try++ {
		if err := fn(&rec); err != nil {
			return rec, err
		}
		err := h.store.update(ctx, &rec)
		if err == nil {
			return rec, nil
		}
		if !isStale(err) || try == maxTries {
			return rec, err
		}
		backoff(try)
		if rec, err = h.store.get(ctx, rec.Scope, rec.Name); err != nil {
			return rec, err
		}
	}
}

// startSession creates the paddock sandbox of a new session from the
// record's config and returns it, for the caller to add to the record.
// fromSnapshot, when set, is what it starts from; src carries a first
// session's source with its credentials, which are never stored.
func (h *Handler) startSession(ctx context.Context, rec *Record, fromSnapshot string, src *sandbox.Source) (SessionRecord, error) {
	cfg := rec.Config
	params := sandbox.CreateRequest{
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
			params.Source.Dir = cfg.Cwd // "" is the sandbox's default
		case cfg.Source.Private:
			return SessionRecord{}, sandbox.Errorf(sandbox.ErrInvalid, "bad_request",
				"Invalid request: sandbox %s starts from a private git repository whose credentials paddock does not keep; make it persistent or recreate it", rec.Name)
		default:
			params.Source = &sandbox.Source{Type: cfg.Source.Type, URL: cfg.Source.URL, Revision: cfg.Source.Revision, Depth: cfg.Source.Depth, Dir: cfg.Cwd}
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
		return SessionRecord{}, fmt.Errorf("start a session of sandbox %s: %w", rec.Name, err)
	}
	s := SessionRecord{ID: sb.ID, CreatedAt: ms(sb.CreatedAt), SourceSnapshotID: params.Snapshot, Last: stateOf(rec, sb)}
	if err := h.makeCwd(cctx, rec, sb.ID); err != nil {
		h.dropSession(ctx, &s)
		return SessionRecord{}, err
	}
	h.log.Info("vercel compat: session started", "name", rec.Name, "sandbox", sb.ID, "snapshot", params.Snapshot)
	return s, nil
}

// makeCwd makes the record's working directory in session sid, owned by
// the sandbox's user (its missing parents too), as Vercel's is. It is
// there already in a session started from a snapshot or a source, and
// then left as it is.
func (h *Handler) makeCwd(ctx context.Context, rec *Record, sid string) error {
	if rec.Config.Cwd == "" {
		return nil
	}
	ac, err := h.sb.Agent(ctx, sid)
	if err == nil {
		err = ac.Mkdir(ctx, agent.MkdirRequest{Path: rec.Config.Cwd, Mode: 0o755, Sudo: true, ForUser: true})
	}
	if err != nil {
		return fmt.Errorf("make the working directory %s of session %s: %w", rec.Config.Cwd, sid, err)
	}
	return nil
}

// stopResult is what stopping a session did, to be recorded by apply.
type stopResult struct {
	sid         string
	requestedAt int64
	last        *SessionState   // the session as it stopped; nil if its sandbox was already gone
	snap        *SnapshotRecord // the snapshot taken, if any (its record is saved)
	snappedAt   int64
}

// apply records res in r, leaving what another writer recorded first: a
// session snapshotted twice keeps the first snapshot (see keepSnapshot).
func (res *stopResult) apply(r *Record) error {
	s := r.session(res.sid)
	if s == nil {
		return nil
	}
	if s.StopRequestedAt == 0 {
		s.StopRequestedAt = res.requestedAt
	}
	if res.last != nil {
		s.Last = res.last
	}
	if res.snap != nil && s.SnapshotID == "" {
		s.SnapshotID, s.SnapshottedAt = res.snap.ID, res.snappedAt
		if s == r.current() {
			r.CurrentSnapshotID = res.snap.ID
		}
	}
	return nil
}

// stop stops a session and, with snapshot, snapshots it (as persistent
// sandboxes do on stop, and as snapshot() does), saving the snapshot's
// record. The caller records the result (stopResult.apply), also when stop
// fails part-way, so that what did happen is not forgotten.
func (h *Handler) stop(ctx context.Context, rec *Record, s *SessionRecord, snapshot bool, method string) (stopResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lifecycleTimeout)
	defer cancel()
	h.setTransient(s.ID, "stopping")
	defer h.setTransient(s.ID, "")
	res := stopResult{sid: s.ID, requestedAt: ms(h.now())}
	if snapshot && s.SnapshotID == "" {
		if err := h.canSnapshot(ctx, s.ID); sandbox.CodeOf(err) == sandbox.CodeSnapshotRunningOnly {
			// The runtime snapshots running sandboxes only (a stopped
			// Pod is gone with its changes): the snapshot comes first,
			// then the stop.
			err := h.takeSnapshot(ctx, rec, s, method, &res)
			h.setTransient(s.ID, "stopping")
			if err != nil {
				if method == "manual" {
					return res, err // the session runs on
				}
				h.log.Warn("vercel compat: persistent session stops without a snapshot", "sandbox", s.ID, "err", err)
			}
			snapshot = false // taken, or given up: not again after the stop
		} else if err != nil {
			if method == "manual" {
				// snapshot() refused before the stop: the session runs on.
				return res, fmt.Errorf("snapshot session %s: %w", s.ID, err)
			}
			// A persistent sandbox on a runtime that cannot snapshot stops
			// all the same (it must not run on); it resumes from its last
			// snapshot, if it has one.
			h.log.Warn("vercel compat: persistent session stops without a snapshot", "sandbox", s.ID, "err", err)
			snapshot = false
		}
	}
	var before *SessionUsage
	if st, err := h.sb.Stats(ctx, s.ID); err == nil {
		before = usageOfStats(st)
	}
	sb, err := h.sb.Stop(ctx, s.ID)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return res, nil // already gone: nothing to stop or keep
	case err != nil:
		return res, fmt.Errorf("stop session %s: %w", s.ID, err)
	}
	res.last = stateOf(rec, sb)
	res.last.Usage = h.stoppedUsage(ctx, rec.Team, s.ID, before)
	if !snapshot || s.SnapshotID != "" {
		return res, nil
	}
	return res, h.takeSnapshot(ctx, rec, s, method, &res)
}

// takeSnapshot snapshots a session's sandbox and saves the snapshot's
// record into res.
func (h *Handler) takeSnapshot(ctx context.Context, rec *Record, s *SessionRecord, method string, res *stopResult) error {
	if h.snaps == nil {
		return errNoSnapshots
	}
	h.setTransient(s.ID, "snapshotting")
	snap, err := h.snaps.Snapshot(ctx, s.ID)
	if err != nil {
		return fmt.Errorf("snapshot session %s: %w", s.ID, err)
	}
	sr := SnapshotRecord{Scope: rec.Scope, ID: snap.ID, SandboxName: rec.Name, SourceSession: s.ID,
		ParentID: s.SourceSnapshotID, CreationMethod: method, CreatedAt: ms(snap.CreatedAt)}
	if err := h.store.putSnapshot(ctx, sr); err != nil {
		return err
	}
	res.snap, res.snappedAt = &sr, ms(h.now())
	return nil
}

// canSnapshot is nil if the session's sandbox can be snapshotted, or the
// reason it cannot; a sandbox already gone is stop's business.
func (h *Handler) canSnapshot(ctx context.Context, id string) error {
	if h.snaps == nil {
		return errNoSnapshots
	}
	if err := h.snaps.CanSnapshot(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return err
	}
	return nil
}

// record saves what a stop did, and keeps its snapshot only if the record
// took it.
func (h *Handler) record(ctx context.Context, rec Record, res stopResult) (Record, error) {
	saved, err := h.change(ctx, rec, res.apply)
	h.keepSnapshot(ctx, res, saved, err)
	return saved, err
}

// keepSnapshot deletes the snapshot a stop took when the record did not
// keep it: another writer snapshotted the same session first, or the
// sandbox was deleted meanwhile. Nothing else would ever name it.
func (h *Handler) keepSnapshot(ctx context.Context, res stopResult, saved Record, saveErr error) {
	if res.snap == nil {
		return
	}
	if saveErr == nil {
		if s := saved.session(res.sid); s == nil || s.SnapshotID == res.snap.ID {
			return
		}
	} else if !errors.Is(saveErr, sandbox.ErrNotFound) {
		return // not known to be unused: keep it, with its record
	}
	ctx = context.WithoutCancel(ctx)
	if err := h.snaps.DeleteSnapshot(ctx, res.snap.ID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		h.log.Warn("vercel compat: delete an unused snapshot", "snapshot", res.snap.ID, "err", err)
		return
	}
	if err := h.store.deleteSnapshot(ctx, res.snap.Team, res.snap.ID); err != nil {
		h.log.Warn("vercel compat: forget an unused snapshot", "snapshot", res.snap.ID, "err", err)
	}
}

// resume starts a new session unless the current one is alive: a
// persistent sandbox from its current snapshot (taking it first if its
// last session stopped on its own, by timeout), any other from its config.
// When another writer resumed the sandbox meanwhile, the session it
// started is the current one and this one is dropped: concurrent resumes,
// through any replica, end with one session.
func (h *Handler) resume(ctx context.Context, rec Record) (Record, bool, error) {
	cur := rec.current()
	var res stopResult
	if cur != nil {
		res.sid = cur.ID
		l, err := h.live(ctx, cur)
		if err != nil {
			return rec, false, err
		}
		if l.found {
			switch l.sb.State {
			case sandbox.Pending, sandbox.Running:
				return rec, false, nil
			}
			snap := rec.Persistent && cur.SnapshotID == "" && l.sb.State != sandbox.Failed
			if res, err = h.stop(ctx, &rec, cur, snap, "automatic"); err != nil {
				return h.failResume(ctx, rec, res, err)
			}
		}
	}
	from := ""
	if rec.Persistent {
		from = rec.CurrentSnapshotID
		if res.snap != nil {
			from = res.snap.ID
		}
	}
	if from != "" {
		if h.snaps == nil {
			return h.failResume(ctx, rec, res, errNoSnapshots)
		}
		if _, err := h.snaps.GetSnapshot(ctx, from); err != nil {
			if errors.Is(err, sandbox.ErrNotFound) {
				err = errNoSnapshotToResume
			}
			return h.failResume(ctx, rec, res, err)
		}
	}
	s, err := h.startSession(ctx, &rec, from, nil)
	if err != nil {
		return h.failResume(ctx, rec, res, err)
	}
	prev := ""
	if cur != nil {
		prev = cur.ID
	}
	var added bool
	saved, err := h.change(ctx, rec, func(r *Record) error {
		_ = res.apply(r)
		c := r.current()
		if added = (c == nil && prev == "") || (c != nil && c.ID == prev); added {
			r.addSession(s)
		}
		return nil
	})
	if err != nil || !added {
		h.keepSnapshot(ctx, res, saved, err)
		h.dropSession(ctx, &s)
		return saved, false, err
	}
	// Added: the new session starts from the snapshot just taken, which is
	// thus in use even if another writer's snapshot of the previous
	// session was recorded first.
	if prev != "" {
		h.dropSession(ctx, &SessionRecord{ID: prev})
	}
	return saved, true, nil
}

// failResume records what a failed resume did before it failed.
func (h *Handler) failResume(ctx context.Context, rec Record, res stopResult, stepErr error) (Record, bool, error) {
	if res.sid != "" {
		if saved, err := h.record(ctx, rec, res); err == nil {
			rec = saved
		}
	}
	return rec, false, stepErr
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
