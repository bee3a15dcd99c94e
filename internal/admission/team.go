package admission

import (
	"context"
	"time"
)

// TeamStatus is a team's limits and what it uses now, as the admin API
// shows them.
type TeamStatus struct {
	TeamID string
	// Limits are as a host admin set them; Default: none were set, and
	// Effective are the server's default.
	Limits    TeamLimits
	Default   bool
	Effective Limits
	// What the team holds and how many wait, across replicas;
	// CreatesLastMinute is counted up to its rate limit only.
	Concurrent        int
	VCPUs             float64
	MemoryMB          int64
	CreatesLastMinute int
	Queued            int
}

func (c *Controller) status(team string, d *doc) TeamStatus {
	st := TeamStatus{TeamID: team, Limits: d.Limits, Default: !d.Set, Effective: c.limits(d),
		Concurrent: len(d.Held), CreatesLastMinute: len(d.Recent), Queued: len(d.Waiting)}
	for _, h := range d.Held {
		st.VCPUs += h.VCPUs
		st.MemoryMB += h.MemoryMB
	}
	return st
}

// Status returns team's limits and use.
func (c *Controller) Status(ctx context.Context, team string) (TeamStatus, error) {
	d, err := c.read(ctx, team)
	if err != nil {
		return TeamStatus{}, err
	}
	return c.status(team, d), nil
}

// List returns the status of every team with an admission record.
func (c *Controller) List(ctx context.Context) ([]TeamStatus, error) {
	recs, err := c.cfg.Store.ListAdmissions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]TeamStatus, 0, len(recs))
	for _, r := range recs {
		st, err := c.Status(ctx, r.TeamID)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// SetLimits gives team limits of its own; nil returns it to the server's
// default. Lowering a limit stops nothing that runs: new requests wait
// until the team is under it again.
func (c *Controller) SetLimits(ctx context.Context, team string, l *TeamLimits) (TeamStatus, error) {
	if l != nil {
		if err := l.Validate(); err != nil {
			return TeamStatus{}, err
		}
	}
	d, err := c.change(ctx, team, func(d *doc, _ time.Time) error {
		if l == nil {
			d.Limits, d.Set = TeamLimits{}, false
		} else {
			d.Limits, d.Set = *l, true
		}
		return nil
	})
	if err != nil {
		return TeamStatus{}, err
	}
	c.kickPump() // a raised limit admits at once
	return c.status(team, d), nil
}

// Waiting is how many requests wait on this replica (for tests and
// metrics).
func (c *Controller) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, q := range c.queues {
		n += len(q)
	}
	return n
}
