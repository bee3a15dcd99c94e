package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Metering answers /usage and the teams' budgets; *metering.Meter
// satisfies it.
type Metering interface {
	Query(ctx context.Context, q metering.Query) (metering.Page, error)
	Budget(ctx context.Context, teamID string) (metering.Status, error)
	SetBudget(ctx context.Context, b store.Budget) (metering.Status, error)
	DeleteBudget(ctx context.Context, teamID string) error
}

var _ Metering = (*metering.Meter)(nil)

var errNoMetering = sandbox.Errorf(sandbox.ErrUnsupported, "usage_unsupported", "this server keeps no usage records")

// listUsage answers GET /usage: the caller's team's usage per bucket
// (?granularity=hour|day, or minute of one sandbox) overlapping [since,
// until), optionally of one project or sandbox, a page at a time (?cursor, ?limit). A host admin
// sees every team's, or one team's with ?teamId=; anyone else naming
// another team gets 404, as for anything else of another team. Every query
// is scoped to the team before paging, so a cursor only ever names rows
// its holder could list.
func (s *Server) listUsage(w http.ResponseWriter, r *http.Request) error {
	if s.metering == nil {
		return errNoMetering
	}
	qs := r.URL.Query()
	p := callerOf(r)
	q := metering.Query{TeamID: p.TeamID, ProjectID: qs.Get("projectId"), SandboxID: qs.Get("sandboxId"),
		Granularity: qs.Get("granularity"), Cursor: qs.Get("cursor")}
	if team := qs.Get("teamId"); team != "" {
		if !p.CanAccessTeam(team) {
			return sandbox.Errorf(sandbox.ErrNotFound, "team_not_found", "team %q not found", team)
		}
		q.TeamID = team
	} else if p.HostAdmin {
		q.TeamID = ""
	} else if q.TeamID == "" {
		// An empty filter means every team: never for a principal of no
		// team, whatever authenticated it.
		writeJSON(w, http.StatusOK, api.UsageList{Usage: []api.Usage{}, Granularity: metering.Day})
		return nil
	}
	var err error
	if q.Since, err = timeQuery(r, "since"); err != nil {
		return err
	}
	if q.Until, err = timeQuery(r, "until"); err != nil {
		return err
	}
	if v := qs.Get("limit"); v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit < 1 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_query", "limit must be a positive integer")
		}
	}
	page, err := s.metering.Query(r.Context(), q)
	if err != nil {
		return fmt.Errorf("list usage: %w", err)
	}
	g := q.Granularity
	if g == "" {
		g = metering.Day
	}
	writeJSON(w, http.StatusOK, api.UsageList{Usage: toAPIList(page.Rows, toAPIUsage), Granularity: g,
		Currency: page.Currency, NextCursor: page.NextCursor})
	return nil
}

func toAPIUsage(row metering.Row) api.Usage {
	t, c := row.Totals, row.Cost
	return api.Usage{
		TeamID: row.TeamID, ProjectID: row.ProjectID, SandboxID: row.SandboxID,
		Start: utcOrZero(row.Start), End: utcOrZero(row.End),
		CPUSeconds: t.CPUSeconds, MemoryGBHours: t.MemoryGBHours, MemoryPeakBytes: t.MemoryPeakBytes,
		NetRxBytes: t.NetRxBytes, NetTxBytes: t.NetTxBytes, Creations: t.Creations, StorageGBHours: t.StorageGBHours,
		Cost: api.UsageCost{CPU: c.CPU, Memory: c.Memory, Network: c.Network, Storage: c.Storage,
			Creations: c.Creations, Total: c.Total},
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

// getBudget answers GET /teams/{id}/budget: the team's members and the
// host admin see it; 404 budget_not_found if the team has none.
func (s *Server) getBudget(w http.ResponseWriter, r *http.Request) error {
	if s.metering == nil {
		return errNoMetering
	}
	team := r.PathValue("id")
	if err := memberOf(callerOf(r), team); err != nil {
		return err
	}
	st, err := s.metering.Budget(r.Context(), team)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIBudget(st))
	return nil
}

// putBudget answers PUT /teams/{id}/budget: the host admin sets a team's
// budget, which applies at once (a hard cap already reached refuses new
// work from this request on).
func (s *Server) putBudget(w http.ResponseWriter, r *http.Request) error {
	if s.metering == nil {
		return errNoMetering
	}
	p := callerOf(r)
	team := r.PathValue("id")
	if err := memberOf(p, team); err != nil {
		return err
	}
	if !p.HostAdmin {
		return errHostAdminRequired
	}
	if s.accounts != nil {
		if _, err := s.accounts.GetTeam(r.Context(), team); err != nil {
			return err
		}
	}
	var req api.BudgetRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	st, err := s.metering.SetBudget(r.Context(), store.Budget{TeamID: team, MonthlyLimit: req.MonthlyLimit,
		Thresholds: req.Thresholds, HardCap: req.HardCap})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIBudget(st))
	return nil
}

// deleteBudget answers DELETE /teams/{id}/budget (host admin): no budget,
// no cap.
func (s *Server) deleteBudget(w http.ResponseWriter, r *http.Request) error {
	if s.metering == nil {
		return errNoMetering
	}
	p := callerOf(r)
	team := r.PathValue("id")
	if err := memberOf(p, team); err != nil {
		return err
	}
	if !p.HostAdmin {
		return errHostAdminRequired
	}
	if err := s.metering.DeleteBudget(r.Context(), team); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func toAPIBudget(st metering.Status) api.Budget {
	b := st.Budget
	return api.Budget{TeamID: b.TeamID, MonthlyLimit: b.MonthlyLimit, Thresholds: b.Thresholds, HardCap: b.HardCap,
		Currency: st.Currency, Spend: st.Spend, Percent: st.Percent, Capped: st.Capped, UpdatedAt: utcOrZero(b.UpdatedAt)}
}
