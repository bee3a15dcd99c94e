package server

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateSandboxRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	params, err := createParams(req)
	if err != nil {
		return err
	}
	if err := s.ownCreate(r, &params); err != nil {
		return err
	}
	ctx, err := withQueueDeadline(r)
	if err != nil {
		return err
	}
	sb, err := s.sb.Create(ctx, params)
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	writeJSON(w, http.StatusCreated, s.toAPISandbox(sb))
	return nil
}

// createParams validates a create (or fork) request body.
func createParams(req api.CreateSandboxRequest) (sandbox.CreateRequest, error) {
	res := req.Resources
	if res.VCPUs < 0 || math.IsNaN(res.VCPUs) || math.IsInf(res.VCPUs, 0) || res.MemoryMB < 0 || res.PIDs < 0 || res.DiskMB < 0 {
		return sandbox.CreateRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_resources", "resources must not be negative")
	}
	if req.TimeoutMs < 0 {
		return sandbox.CreateRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeoutMs must not be negative")
	}
	if req.TimeoutMs > math.MaxInt64/int64(time.Millisecond) {
		return sandbox.CreateRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeoutMs %d is too large", req.TimeoutMs)
	}
	if err := sandbox.ValidateEnv(req.Env); err != nil {
		return sandbox.CreateRequest{}, err
	}
	if err := sandbox.ValidateLabels(req.Labels); err != nil {
		return sandbox.CreateRequest{}, err
	}
	if req.Image != "" && req.Snapshot != "" {
		return sandbox.CreateRequest{}, sandbox.Errorf(sandbox.ErrInvalid, "image_and_snapshot", "give an image or a snapshot, not both")
	}
	var policy *sandbox.NetworkPolicy
	if req.NetworkPolicy != nil {
		p, err := fromAPIPolicy(*req.NetworkPolicy)
		if err != nil {
			return sandbox.CreateRequest{}, err
		}
		policy = &p
	}
	return sandbox.CreateRequest{
		Image:         req.Image,
		Resources:     sandbox.Resources{VCPUs: res.VCPUs, MemoryMB: res.MemoryMB, PIDs: res.PIDs, DiskMB: res.DiskMB},
		Timeout:       time.Duration(req.TimeoutMs) * time.Millisecond,
		Env:           req.Env,
		Ports:         fromAPIPorts(req.Ports),
		NetworkPolicy: policy,
		Snapshot:      req.Snapshot,
		Volumes:       fromAPIVolumeMounts(req.Volumes),
		Source:        fromAPISource(req.Source),
		Labels:        req.Labels,
		Runtime:       req.Runtime,
	}, nil
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := sandbox.ListOptions{Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_limit", "limit must be an integer in [1, %d], got %q", maxListLimit, v)
		}
		opts.Limit = n
	}
	if v := q.Get("state"); v != "" {
		st := sandbox.State(v)
		switch st {
		case sandbox.Pending, sandbox.Running, sandbox.Stopping, sandbox.Stopped, sandbox.Failed, sandbox.Paused:
		default:
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_state", "unknown state %q", v)
		}
		opts.State = st
	}
	labels, err := sandbox.ParseLabelSelectors(q["label"])
	if err != nil {
		return err
	}
	opts.Labels = labels
	sbs, next, err := s.listOwned(r.Context(), callerOf(r), opts)
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	page := api.SandboxList{Sandboxes: make([]api.Sandbox, 0, len(sbs)), NextCursor: next}
	for _, sb := range sbs {
		page.Sandboxes = append(page.Sandboxes, s.toAPISandbox(sb))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	sb, err := s.sb.Get(r.Context(), id)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

func (s *Server) stopSandbox(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		return err
	}
	sb, err := s.sb.Stop(r.Context(), id)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

// pauseSandbox keeps a running sandbox's filesystem and stops it (see
// node.Manager.Pause).
func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		return err
	}
	p, err := s.pauser()
	if err != nil {
		return err
	}
	sb, err := p.Pause(r.Context(), id)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

// resumeSandbox runs a paused sandbox again under its id.
func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.ResumeRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.TimeoutMs < 0 || req.TimeoutMs > math.MaxInt64/int64(time.Millisecond) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeoutMs must not be negative, got %d", req.TimeoutMs)
	}
	p, err := s.pauser()
	if err != nil {
		return err
	}
	// A resume is admitted like a create: it may wait in the queue.
	ctx, err := withQueueDeadline(r)
	if err != nil {
		return err
	}
	sb, err := p.Resume(ctx, id, time.Duration(req.TimeoutMs)*time.Millisecond)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

// pauser is the sandboxes' pause power, or a clear 501.
func (s *Server) pauser() (Pauser, error) {
	p, ok := s.sb.(Pauser)
	if !ok {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "pause_unsupported", "this server cannot pause sandboxes")
	}
	return p, nil
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	if err := s.sb.Delete(r.Context(), id); err != nil {
		return sandboxErr(id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) extendTimeout(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.ExtendTimeoutRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.DurationMs <= 0 || req.DurationMs > math.MaxInt64/int64(time.Millisecond) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_duration", "durationMs must be positive, got %d", req.DurationMs)
	}
	sb, err := s.sb.ExtendTimeout(r.Context(), id, time.Duration(req.DurationMs)*time.Millisecond)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

func (s *Server) sandboxStats(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	st, err := s.sb.Stats(r.Context(), id)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, api.Stats{
		CPUUsageMs:       st.CPUUsage.Milliseconds(),
		MemoryBytes:      st.MemoryBytes,
		MemoryPeakBytes:  st.MemoryPeak,
		MemoryLimitBytes: st.MemoryLimit,
		PIDs:             st.PIDs,
		OOMKills:         st.OOMKills,
		VCPUs:            st.CPUQuotaFrac,
		NetworkRxBytes:   st.NetworkRxBytes,
		NetworkTxBytes:   st.NetworkTxBytes,
		DiskBytes:        st.DiskBytes,
		DiskLimitBytes:   st.DiskLimitBytes,
		DiskInodes:       st.DiskInodes,
		DiskInodesLimit:  st.DiskInodesLimit,
	})
	return nil
}

// sandboxErr gives a bare not-found or not-running from the sandbox layer
// the sandbox-specific code clients match on.
func sandboxErr(id string, err error) error {
	if sandbox.CodeOf(err) == "" {
		switch {
		case errors.Is(err, sandbox.ErrNotFound):
			return &sandbox.Error{Kind: sandbox.ErrNotFound, Code: "sandbox_not_found", Message: fmt.Sprintf("sandbox %q not found", id)}
		case errors.Is(err, sandbox.ErrNotRunning):
			return &sandbox.Error{Kind: sandbox.ErrNotRunning, Code: "sandbox_not_running", Message: fmt.Sprintf("sandbox %q is not running", id)}
		}
	}
	return fmt.Errorf("sandbox %s: %w", id, err)
}

func (s *Server) toAPISandbox(sb sandbox.Sandbox) api.Sandbox {
	out := api.Sandbox{
		ID:             sb.ID,
		Status:         string(sb.State),
		Image:          sb.Image,
		TeamID:         sb.TeamID,
		ImageDigest:    sb.ImageDigest,
		SnapshotID:     sb.Snapshot,
		Warm:           sb.Warm,
		ImageUser:      sb.ImageUser,
		Runtime:        sb.Driver,
		WorkingDir:     sb.WorkingDir,
		Resources:      api.Resources{VCPUs: sb.Resources.VCPUs, MemoryMB: sb.Resources.MemoryMB, PIDs: sb.Resources.PIDs, DiskMB: sb.Resources.DiskMB},
		Env:            sb.Env,
		Labels:         sb.Labels,
		CreatedAt:      sb.CreatedAt.UTC(),
		StartedAt:      utcOrZero(sb.StartedAt),
		StoppedAt:      utcOrZero(sb.StoppedAt),
		ExpiresAt:      utcOrZero(sb.ExpiresAt),
		LastActivityAt: utcOrZero(sb.LastActivityAt),
		Error:          sb.Error,
		LayerRemovedAt: sb.LayerRemovedAt,
	}
	if u := sb.User; u != (sandbox.User{}) {
		out.User = &api.SandboxUser{UID: u.UID, GID: u.GID, Home: u.Home}
	}
	if sb.Address.IsValid() {
		out.Address = sb.Address.String()
	}
	out.Routes = s.routesOf(sb)
	if p := sb.NetworkPolicy; p != nil {
		out.NetworkPolicy = toAPIPolicy(*p)
	}
	out.Volumes = toAPIVolumeMounts(sb.Volumes)
	out.Source = toAPISource(sb.Source)
	if p := sb.Pause; p != nil {
		out.Paused = &api.PauseInfo{SnapshotID: p.Snapshot, Memory: p.Memory, PausedAt: p.PausedAt.UTC(), TimeoutMs: p.Timeout.Milliseconds()}
	}
	return out
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// listPorts reports the TCP ports listening inside the sandbox, as its
// agent sees them.
func (s *Server) listPorts(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	ports, err := ac.Ports(r.Context())
	if err != nil {
		return fmt.Errorf("list ports of sandbox %s: %w", id, err)
	}
	out := api.PortList{Ports: make([]api.Port, 0, len(ports))}
	for _, p := range ports {
		out.Ports = append(out.Ports, api.Port{Port: p.Port, Address: p.Address})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// fromAPISource converts a create request's source; node validates it.
func fromAPISource(src *api.Source) *sandbox.Source {
	if src == nil {
		return nil
	}
	return &sandbox.Source{Type: src.Type, URL: src.URL, Dir: src.Dir, Revision: src.Revision, Depth: src.Depth,
		Username: src.Username, Password: src.Password, Token: src.Token, StripComponents: src.StripComponents}
}

// toAPISource shows what a sandbox was populated from; it has no
// credentials to leak (sandbox.SourceInfo holds none).
func toAPISource(info *sandbox.SourceInfo) *api.SourceInfo {
	if info == nil {
		return nil
	}
	return &api.SourceInfo{Type: info.Type, URL: info.URL, Dir: info.Dir, Revision: info.Revision, Commit: info.Commit, Digest: info.Digest}
}

// setLabels replaces a sandbox's labels.
func (s *Server) setLabels(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.LabelsRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := sandbox.ValidateLabels(req.Labels); err != nil {
		return err
	}
	sb, err := s.sb.SetLabels(r.Context(), id, req.Labels)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}
