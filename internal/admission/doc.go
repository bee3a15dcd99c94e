package admission

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// doc is one team's admission record (store.Admission's Data): what every
// replica reads and changes with a compare-and-set on the record's
// version, so that they agree on what the team holds and who waits first.
type doc struct {
	// Limits as a host admin set them; Set false: the server's default.
	Limits TeamLimits `json:"limits,omitzero"`
	Set    bool       `json:"set,omitempty"`
	// Held are the slots of the team's pending and running sandboxes, and
	// of admitted requests whose sandbox is being made.
	Held []hold `json:"held,omitempty"`
	// Waiting are the queued requests of every replica, in arrival order.
	Waiting []queued `json:"waiting,omitempty"`
	// Recent are the admission times of the last minute, oldest first.
	Recent []time.Time `json:"recent,omitempty"`
}

// hold is one admitted request's slot.
type hold struct {
	ID       string  `json:"id"`
	Replica  string  `json:"replica"`
	Sandbox  string  `json:"sandbox,omitempty"` // once bound
	VCPUs    float64 `json:"vcpus"`
	MemoryMB int64   `json:"memoryMb"`
	// Expires bounds a hold not yet bound to a sandbox (its creator may
	// have died); zero once bound: the sandbox's end releases it.
	Expires time.Time `json:"expires,omitzero"`
	// Bound is when it was bound: the sweep leaves young holds alone.
	Bound time.Time `json:"bound,omitzero"`
}

// queued is one waiting request. Its replica renews Expires while it
// waits, so a replica that dies leaves no entry blocking the queue.
type queued struct {
	ID       string    `json:"id"`
	Replica  string    `json:"replica"`
	Since    time.Time `json:"since"`
	Expires  time.Time `json:"expires"`
	VCPUs    float64   `json:"vcpus"`
	MemoryMB int64     `json:"memoryMb"`
}

// prune drops what has expired; it reports whether anything went.
func (d *doc) prune(now time.Time) bool {
	n := len(d.Held) + len(d.Waiting) + len(d.Recent)
	d.Held = slices.DeleteFunc(d.Held, func(h hold) bool { return !h.Expires.IsZero() && !now.Before(h.Expires) })
	d.Waiting = slices.DeleteFunc(d.Waiting, func(q queued) bool { return !now.Before(q.Expires) })
	d.Recent = slices.DeleteFunc(d.Recent, func(t time.Time) bool { return !now.Before(t.Add(rateWindow)) })
	return len(d.Held)+len(d.Waiting)+len(d.Recent) != n
}

// sortWaiting puts the queue in the order every replica agrees on.
func (d *doc) sortWaiting() {
	slices.SortStableFunc(d.Waiting, func(a, b queued) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
}

// position is the 1-based place of id in the queue, 0 if absent.
func (d *doc) position(id string) int {
	return slices.IndexFunc(d.Waiting, func(q queued) bool { return q.ID == id }) + 1
}

// maxTries bounds the compare-and-set retries of one change: each lost
// race means another writer made progress.
const maxTries = 50

// errNoChange is what a change function returns to write nothing.
var errNoChange = errors.New("no change")

// change reads team's record, lets fn change the document (after expired
// entries are pruned and the queue sorted), and writes it back if fn
// returns nil, retrying from a fresh read when another writer got there
// first. It returns the document as written (or as read, for
// errNoChange, which it does not return).
func (c *Controller) change(ctx context.Context, team string, fn func(d *doc, now time.Time) error) (*doc, error) {
	for range maxTries {
		rec, err := c.cfg.Store.GetAdmission(ctx, team)
		created := false
		if errors.Is(err, sandbox.ErrNotFound) {
			rec, created, err = store.Admission{TeamID: team}, true, nil
		}
		if err != nil {
			return nil, fmt.Errorf("admission of team %s: %w", team, err)
		}
		d := &doc{}
		if len(rec.Data) > 0 {
			if err := json.Unmarshal(rec.Data, d); err != nil {
				return nil, fmt.Errorf("admission of team %s: decode: %w", team, err)
			}
		}
		now := c.now()
		pruned := d.prune(now)
		d.sortWaiting()
		err = fn(d, now)
		switch {
		case errors.Is(err, errNoChange) && !pruned:
			return d, nil
		case errors.Is(err, errNoChange):
			// Write the pruning anyway: it is garbage every reader skips.
		case err != nil:
			return d, err
		}
		data, merr := json.Marshal(d)
		if merr != nil {
			return nil, fmt.Errorf("admission of team %s: encode: %w", team, merr)
		}
		rec.Data = data
		if created {
			err = c.cfg.Store.CreateAdmission(ctx, rec)
		} else {
			_, err = c.cfg.Store.UpdateAdmission(ctx, rec)
		}
		if errors.Is(err, sandbox.ErrConflict) {
			continue // another replica (or a concurrent create) moved it
		}
		if err != nil {
			return nil, fmt.Errorf("admission of team %s: %w", team, err)
		}
		return d, nil
	}
	return nil, sandbox.Errorf(sandbox.ErrUnavailable, "admission_contended", "the team's admission record is too contended; try again")
}

// read returns team's document as it is, pruned and sorted but not written.
func (c *Controller) read(ctx context.Context, team string) (*doc, error) {
	rec, err := c.cfg.Store.GetAdmission(ctx, team)
	if errors.Is(err, sandbox.ErrNotFound) {
		return &doc{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admission of team %s: %w", team, err)
	}
	d := &doc{}
	if err := json.Unmarshal(rec.Data, d); err != nil {
		return nil, fmt.Errorf("admission of team %s: decode: %w", team, err)
	}
	d.prune(c.now())
	d.sortWaiting()
	return d, nil
}
