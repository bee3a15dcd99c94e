package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

var errNoHistory = sandbox.Errorf(sandbox.ErrUnsupported, "usage_unsupported", "this server keeps no usage records")

// listUsage answers GET /usage: the caller's team's usage records
// overlapping [since, until), optionally of one project. A host admin sees
// every team's, or one team's with ?teamId=; anyone else naming another
// team gets 404, as for anything else of another team.
func (s *Server) listUsage(w http.ResponseWriter, r *http.Request) error {
	if s.history == nil {
		return errNoHistory
	}
	q := r.URL.Query()
	p := callerOf(r)
	f := store.UsageFilter{TeamID: p.TeamID, ProjectID: q.Get("projectId")}
	if team := q.Get("teamId"); team != "" {
		if !p.CanAccessTeam(team) {
			return sandbox.Errorf(sandbox.ErrNotFound, "team_not_found", "team %q not found", team)
		}
		f.TeamID = team
	} else if p.HostAdmin {
		f.TeamID = ""
	} else if f.TeamID == "" {
		// An empty filter means every team: never for a principal of no
		// team, whatever authenticated it.
		writeJSON(w, http.StatusOK, api.UsageList{Usage: []api.Usage{}})
		return nil
	}
	var err error
	if f.Since, err = timeQuery(r, "since"); err != nil {
		return err
	}
	if f.Until, err = timeQuery(r, "until"); err != nil {
		return err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_query", "since must be before until")
	}
	us, err := s.history.ListUsage(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list usage: %w", err)
	}
	writeJSON(w, http.StatusOK, api.UsageList{Usage: toAPIList(us, toAPIUsage)})
	return nil
}

func toAPIUsage(u store.Usage) api.Usage {
	return api.Usage{
		SandboxID: u.SandboxID, TeamID: u.TeamID, ProjectID: u.ProjectID,
		Start: utcOrZero(u.Start), End: utcOrZero(u.End),
		CPUSeconds: u.CPUSeconds, MemoryMBHours: u.MemoryMBHours,
		NetRxBytes: u.NetRxBytes, NetTxBytes: u.NetTxBytes,
	}
}

// timeQuery parses an optional RFC 3339 time query parameter.
func timeQuery(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_query", "%s must be an RFC 3339 time, got %q", name, v)
	}
	return t, nil
}
