package metering

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// DefaultThresholds are a budget's warning thresholds when it sets none.
var DefaultThresholds = []int{50, 80, 100}

// Event types of budget warnings.
const (
	// EventBudgetThreshold: the month's cost passed a threshold of the
	// team's budget (Data: percent, spend, limit, currency, month).
	EventBudgetThreshold = "budget.threshold"
	// EventBudgetCapped: a hard cap took effect; new work is refused and the
	// team's running sandboxes are being stopped.
	EventBudgetCapped = "budget.capped"
)

// Status is a budget with the month's spend.
type Status struct {
	Budget   store.Budget
	Spend    float64 // this UTC month's cost so far
	Percent  float64 // Spend / MonthlyLimit × 100 (100 for a zero limit)
	Capped   bool    // the hard cap holds: new work is refused
	Currency string
}

// Admit refuses new work (a create, an activation) of a team past its hard
// cap with ErrBudgetExceeded. It answers from what the last check saw (at
// most one Interval old, and re-checked at once when a budget is set).
func (m *Meter) Admit(teamID string) error {
	m.mu.Lock()
	why, over := m.over[teamID]
	m.mu.Unlock()
	if over {
		return sandbox.Errorf(sandbox.ErrBudgetExceeded, "budget_exceeded",
			"team %s has reached its monthly budget (%s): new sandboxes are refused until the month ends or the budget is raised",
			teamID, why)
	}
	return nil
}

// SetBudget sets a team's budget (its limit, thresholds and hard cap; the
// month's warnings already sent stay sent) and checks it at once.
func (m *Meter) SetBudget(ctx context.Context, b store.Budget) (Status, error) {
	if b.TeamID == "" {
		return Status{}, invalid("invalid_budget", "a budget needs a team")
	}
	if b.MonthlyLimit < 0 {
		return Status{}, invalid("invalid_budget", "monthlyLimit must not be negative")
	}
	for _, t := range b.Thresholds {
		if t <= 0 || t > 1000 {
			return Status{}, invalid("invalid_budget", "thresholds are percentages in (0, 1000], got %d", t)
		}
	}
	b.Thresholds = slices.Compact(slices.Sorted(slices.Values(b.Thresholds)))
	var saved store.Budget
	for attempt := 0; ; attempt++ {
		cur, err := m.cfg.Store.GetBudget(ctx, b.TeamID)
		switch {
		case errors.Is(err, sandbox.ErrNotFound):
			b.Version = 0
		case err != nil:
			return Status{}, err
		default:
			b.Version, b.Month, b.Notified = cur.Version, cur.Month, cur.Notified
			if cur.MonthlyLimit != b.MonthlyLimit {
				b.Notified = 0 // thresholds of a new limit warn again
			}
		}
		saved, err = m.cfg.Store.PutBudget(ctx, b)
		if errors.Is(err, sandbox.ErrConflict) && attempt < 3 {
			continue // a check or another admin wrote it meanwhile
		}
		if err != nil {
			return Status{}, err
		}
		break
	}
	return m.checkBudget(ctx, saved)
}

// Budget returns a team's budget and the month's spend; ErrNotFound
// "budget_not_found" if it has none.
func (m *Meter) Budget(ctx context.Context, teamID string) (Status, error) {
	b, err := m.cfg.Store.GetBudget(ctx, teamID)
	if err != nil {
		return Status{}, err
	}
	return m.status(ctx, b, m.now())
}

// DeleteBudget removes a team's budget, and with it its cap.
func (m *Meter) DeleteBudget(ctx context.Context, teamID string) error {
	if err := m.cfg.Store.DeleteBudget(ctx, teamID); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.over, teamID)
	m.mu.Unlock()
	return nil
}

// Spend is a team's cost in [since, until).
func (m *Meter) Spend(ctx context.Context, teamID string, since, until time.Time) (float64, error) {
	sums, err := m.aggregate(ctx, Query{TeamID: teamID, Since: since, Until: until, Granularity: Hour})
	if err != nil {
		return 0, err
	}
	var total float64
	for _, s := range sums {
		total += m.cfg.Prices.Cost(totalsOf(*s)).Total
	}
	return total, nil
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func (m *Meter) status(ctx context.Context, b store.Budget, now time.Time) (Status, error) {
	spend, err := m.Spend(ctx, b.TeamID, monthStart(now), now.Add(time.Millisecond))
	if err != nil {
		return Status{}, err
	}
	st := Status{Budget: b, Spend: spend, Percent: 100, Currency: m.cfg.Prices.currency()}
	if b.MonthlyLimit > 0 {
		st.Percent = spend / b.MonthlyLimit * 100
	}
	st.Capped = b.HardCap && st.Percent >= 100
	return st, nil
}

// checkBudgets checks every budget: warnings, and the hard caps Admit
// answers from.
func (m *Meter) checkBudgets(ctx context.Context) {
	budgets, err := m.cfg.Store.ListBudgets(ctx)
	if err != nil {
		m.log.Warn("list budgets", "err", err)
		return
	}
	has := map[string]bool{}
	for _, b := range budgets {
		has[b.TeamID] = true
		if _, err := m.checkBudget(ctx, b); err != nil {
			m.log.Warn("check budget", "team", b.TeamID, "err", err)
		}
	}
	m.mu.Lock()
	for team := range m.over {
		if !has[team] {
			delete(m.over, team)
		}
	}
	m.mu.Unlock()
}

// checkBudget warns of thresholds passed this month (each once, across
// replicas: the budget records the highest warned of, and only the writer
// that records it publishes), then applies or lifts the hard cap.
func (m *Meter) checkBudget(ctx context.Context, b store.Budget) (Status, error) {
	now := m.now()
	st, err := m.status(ctx, b, now)
	if err != nil {
		return Status{}, err
	}
	month := now.Format("2006-01")
	notified := b.Notified
	if b.Month != month {
		notified = 0
	}
	thresholds := b.Thresholds
	if len(thresholds) == 0 {
		thresholds = DefaultThresholds
	}
	if b.HardCap && !slices.Contains(thresholds, 100) {
		// The cap's own moment is recorded like a threshold, so that it is
		// announced once.
		thresholds = slices.Sorted(slices.Values(append(slices.Clone(thresholds), 100)))
	}
	var passed []int
	for _, t := range thresholds {
		if t > notified && st.Percent >= float64(t) {
			passed = append(passed, t)
		}
	}
	if len(passed) > 0 || b.Month != month {
		nb := b
		nb.Month, nb.Notified = month, notified
		if len(passed) > 0 {
			nb.Notified = passed[len(passed)-1]
		}
		saved, err := m.cfg.Store.PutBudget(ctx, nb)
		switch {
		case errors.Is(err, sandbox.ErrConflict):
			passed = nil // another writer got there; it warns
		case err != nil:
			return st, fmt.Errorf("record budget warnings: %w", err)
		default:
			st.Budget = saved
		}
	}
	for _, t := range passed {
		if b.HardCap && t == 100 {
			m.publish(ctx, store.Event{TeamID: b.TeamID, Type: EventBudgetCapped,
				Message: fmt.Sprintf("team %s reached its monthly budget: new work is refused and running sandboxes are stopped", b.TeamID),
				Data:    map[string]string{"spend": fmtMoney(st.Spend), "limit": fmtMoney(b.MonthlyLimit), "currency": st.Currency, "month": month}})
			if !slices.Contains(b.Thresholds, 100) && len(b.Thresholds) > 0 {
				continue // 100 was only the cap's
			}
		}
		m.publish(ctx, store.Event{TeamID: b.TeamID, Type: EventBudgetThreshold,
			Message: fmt.Sprintf("team %s has used %d%% of its monthly budget (%.2f of %.2f %s)",
				b.TeamID, t, st.Spend, b.MonthlyLimit, st.Currency),
			Data: map[string]string{"percent": strconv.Itoa(t), "spend": fmtMoney(st.Spend),
				"limit": fmtMoney(b.MonthlyLimit), "currency": st.Currency, "month": month}})
	}
	m.mu.Lock()
	_, wasOver := m.over[b.TeamID]
	if st.Capped {
		m.over[b.TeamID] = fmt.Sprintf("%.2f of %.2f %s", st.Spend, b.MonthlyLimit, st.Currency)
	} else {
		delete(m.over, b.TeamID)
	}
	m.mu.Unlock()
	if st.Capped {
		if !wasOver {
			m.log.Warn("budget hard cap reached", "team", b.TeamID, "spend", st.Spend, "limit", b.MonthlyLimit)
		}
		// Every check, not only the first: work that slipped in between
		// (another replica's create) stops too.
		if m.cfg.Enforcer != nil {
			if err := m.cfg.Enforcer.StopTeam(ctx, b.TeamID, "budget"); err != nil {
				m.log.Error("stop sandboxes of a team over budget", "team", b.TeamID, "err", err)
			}
		}
	}
	return st, nil
}

func fmtMoney(v float64) string { return strconv.FormatFloat(v, 'f', 6, 64) }

func (m *Meter) publish(ctx context.Context, e store.Event) {
	if m.cfg.Events == nil {
		return
	}
	if err := m.cfg.Events.Publish(ctx, e); err != nil {
		m.log.Warn("publish budget event", "team", e.TeamID, "type", e.Type, "err", err)
	}
}
