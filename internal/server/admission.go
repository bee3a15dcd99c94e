package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Admission is the admin side of admission: a team's limits and use.
// *admission.Controller implements it.
type Admission interface {
	Status(ctx context.Context, team string) (admission.TeamStatus, error)
	// SetLimits gives team its own limits; nil returns it to the default.
	SetLimits(ctx context.Context, team string, l *admission.TeamLimits) (admission.TeamStatus, error)
}

var _ Admission = (*admission.Controller)(nil)

var errNoAdmission = sandbox.Errorf(sandbox.ErrUnsupported, "admission_disabled", "this server has no admission limits")

// maxQueueTimeout bounds ?queueTimeoutMs; the server's own maximum wait
// bounds it further.
const maxQueueTimeout = time.Hour

// withQueueDeadline carries ?queueTimeoutMs (how long the caller will wait
// in the queue for a slot) to admission, below layers that do not speak
// of it.
func withQueueDeadline(r *http.Request) (context.Context, error) {
	v := r.URL.Query().Get("queueTimeoutMs")
	if v == "" {
		return r.Context(), nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 || ms > maxQueueTimeout.Milliseconds() {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_queue_timeout", "queueTimeoutMs must be an integer in [0, %d]", maxQueueTimeout.Milliseconds())
	}
	return admission.WithDeadline(r.Context(), time.Now().Add(time.Duration(ms)*time.Millisecond)), nil
}

func toAPILimits(l admission.Limits, preset string) api.TeamLimits {
	return api.TeamLimits{Preset: preset, Concurrent: l.Concurrent, VCPUs: l.VCPUs, MemoryMB: l.MemoryMB, CreatesPerMinute: l.CreatesPerMinute}
}

func toAPIAdmission(st admission.TeamStatus) api.TeamAdmission {
	return api.TeamAdmission{TeamID: st.TeamID, Limits: toAPILimits(st.Limits.Limits, st.Limits.Preset), Default: st.Default,
		Effective: toAPILimits(st.Effective, ""),
		Usage: api.TeamUsage{Concurrent: st.Concurrent, VCPUs: st.VCPUs, MemoryMB: st.MemoryMB,
			CreatesLastMinute: st.CreatesLastMinute, Queued: st.Queued}}
}

// getTeamLimits shows a team's limits and use to its members and the host admin.
func (s *Server) getTeamLimits(w http.ResponseWriter, r *http.Request) error {
	if s.admission == nil {
		return errNoAdmission
	}
	teamID := r.PathValue("id")
	if err := memberOf(callerOf(r), teamID); err != nil {
		return err
	}
	st, err := s.admission.Status(r.Context(), teamID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIAdmission(st))
	return nil
}

// setTeamLimits: only the host admin sets limits (a team admin must not
// raise its own).
func (s *Server) setTeamLimits(w http.ResponseWriter, r *http.Request) error {
	p, err := s.limitsAdmin(r)
	if err != nil {
		return err
	}
	var req api.TeamLimits
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	st, err := s.admission.SetLimits(r.Context(), p, &admission.TeamLimits{Preset: req.Preset, Limits: admission.Limits{
		Concurrent: req.Concurrent, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, CreatesPerMinute: req.CreatesPerMinute}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIAdmission(st))
	return nil
}

// resetTeamLimits returns a team to the server's default limits.
func (s *Server) resetTeamLimits(w http.ResponseWriter, r *http.Request) error {
	team, err := s.limitsAdmin(r)
	if err != nil {
		return err
	}
	st, err := s.admission.SetLimits(r.Context(), team, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIAdmission(st))
	return nil
}

// limitsAdmin is the prologue of a change of limits: admission runs, the
// caller is the host admin, the team exists. It returns the team's id.
func (s *Server) limitsAdmin(r *http.Request) (string, error) {
	if s.admission == nil {
		return "", errNoAdmission
	}
	p := callerOf(r)
	teamID := r.PathValue("id")
	// Another team's limits are not found, as any object of another team;
	// a member who is not the host admin is refused.
	if err := memberOf(p, teamID); err != nil {
		return "", err
	}
	if !p.HostAdmin {
		return "", errHostAdminRequired
	}
	if !sandbox.ValidID(teamID) {
		return "", sandbox.Errorf(sandbox.ErrNotFound, "team_not_found", "team %s not found", teamID)
	}
	if s.accounts != nil {
		if _, err := s.accounts.GetTeam(r.Context(), teamID); err != nil {
			return "", err
		}
	}
	return teamID, nil
}

// queueRefusal is the admission refusal a failed activation's last event
// records (a passed queue deadline), nil for any other end.
func queueRefusal(e store.Event) error {
	ms, ok := e.Data["retryAfterMs"]
	if e.Type != string(control.StateFailed) || !ok {
		return nil
	}
	n, _ := strconv.ParseInt(ms, 10, 64)
	code := e.Data["code"]
	if code == "" {
		code = "queue_timeout"
	}
	return admission.Refused(code, e.Message, time.Duration(n)*time.Millisecond)
}
