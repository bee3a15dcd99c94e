// Package admission decides when a sandbox may be made: within its team's
// limits (concurrent sandboxes, vCPUs, memory, creations per minute) and
// the host's capacity. A request over a limit waits in a fair queue —
// first in, first out within a team, round-robin across the teams that
// wait for this host — bounded in length and in wait, and learns its
// place as it changes; a full queue or a passed deadline is ErrExhausted
// with a Retry-After.
//
// Replicas sharing one store share each team's limits, holds and queue:
// they live in one store.Admission record per team, changed only by
// compare-and-set on its version (see doc.go), so two replicas never both
// take a team's last slot, and the queue's order (arrival time, then id)
// is the same for all of them. The host's capacity is this host's own and
// stays in memory. A hold is released when its sandbox ends (Released,
// fed by the sandbox records), a hold not yet bound to a sandbox expires,
// a waiting entry expires unless its replica renews it, and a sweep drops
// holds whose sandbox is gone, so a replica that dies blocks nobody for
// long.
package admission

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Store is what admission keeps in the control plane's store;
// store.Store satisfies it.
type Store interface {
	CreateAdmission(ctx context.Context, a store.Admission) error
	GetAdmission(ctx context.Context, teamID string) (store.Admission, error)
	UpdateAdmission(ctx context.Context, a store.Admission) (store.Admission, error)
	ListAdmissions(ctx context.Context) ([]store.Admission, error)
	// GetSandbox tells the sweep whether a hold's sandbox still lives.
	GetSandbox(ctx context.Context, id string) (store.SandboxRecord, error)
}

var _ Store = store.Store(nil)

// Defaults of Config fields left zero.
const (
	defaultMaxQueue   = 100
	defaultMaxWait    = 60 * time.Second
	defaultPoll       = 500 * time.Millisecond
	defaultRetryAfter = 10 * time.Second
	defaultHoldTTL    = 15 * time.Minute
	defaultWaitLease  = 30 * time.Second
	defaultSweep      = time.Minute
	// opTimeout bounds the store calls of background work.
	opTimeout = 30 * time.Second
)

// Config configures a Controller.
type Config struct {
	Store Store
	// Replica names this process among those sharing Store; default random.
	Replica string
	// Host reports this host's sandboxes (pending and running) and its
	// maximum; nil: no host limit.
	Host func() (active, max int)
	// Defaults are the limits of a team no admin gave limits; zero: none.
	Defaults TeamLimits
	// DefaultVCPUs and DefaultMemoryMB count a request that names none
	// (node's defaults); default 1 and 1024.
	DefaultVCPUs    float64
	DefaultMemoryMB int64
	MaxQueue        int           // waiting requests per team, across replicas; default 100
	MaxWait         time.Duration // the longest a request waits; default 60s
	// Poll is how often waiters look at the store for what other replicas
	// released and for the rate window's end; default 500ms.
	Poll time.Duration
	// RetryAfter is the wait a refused request is told to take when
	// nothing better is known; default 10s.
	RetryAfter time.Duration
	HoldTTL    time.Duration // an admitted request's hold until bound to a sandbox; default 15m
	WaitLease  time.Duration // a waiting entry's lease, renewed by its replica; default 30s
	SweepEvery time.Duration // how often holds of vanished sandboxes are dropped; default 1m
	// ObserveWait, if set, hears how long each request waited for its
	// slot as the wait ends: admitted (0 for one admitted at once) or not
	// (refused at its deadline, cancelled, shut down). The metrics' queue
	// wait histogram; called in the waiter's path, so it must be quick.
	ObserveWait func(waited time.Duration, admitted bool)
	// Now and After are the clock; default time.Now and time.After.
	Now    func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Replica == "" {
		c.Replica = "r-" + randomHex(6)
	}
	if c.DefaultVCPUs <= 0 {
		c.DefaultVCPUs = 1
	}
	if c.DefaultMemoryMB <= 0 {
		c.DefaultMemoryMB = 1024
	}
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = defaultMaxQueue
	}
	set(&c.MaxWait, defaultMaxWait)
	set(&c.Poll, defaultPoll)
	set(&c.RetryAfter, defaultRetryAfter)
	set(&c.HoldTTL, defaultHoldTTL)
	set(&c.WaitLease, defaultWaitLease)
	set(&c.SweepEvery, defaultSweep)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a config a Controller cannot run with.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("admission: Config.Store is required")
	}
	return c.Defaults.Validate()
}

// Controller admits this replica's requests. Start runs its pump; Close
// stops it and fails whoever still waits.
type Controller struct {
	cfg Config
	log *slog.Logger

	kick chan struct{} // wakes the pump; buffered (1)

	relMu    sync.Mutex // guards released
	released []release  // sandboxes that ended, for the pump

	mu sync.Mutex // guards the fields below; held across store calls, so this replica decides one thing at a time
	// queues are the local waiters by team, each in arrival order.
	queues map[string][]*Waiter
	// order is the teams with waiters, the next to be served first: a
	// team served goes to the back (round-robin).
	order []string
	// inflight counts tickets admitted here whose sandbox is not yet made
	// (Bind or Release pending): the host's count does not show them yet.
	inflight int
	// bound maps the sandboxes this replica's tickets were bound to, to
	// their team, for Released calls that know only the id.
	bound     map[string]string
	lastSweep time.Time
	seq       uint64 // the last waiter's number
	// lastSince is the last arrival time this replica queued: arrivals
	// never go back, even if the clock does.
	lastSince time.Time
	closed    bool
	idPrefix  string // random, so ids never repeat across restarts

	cancel context.CancelFunc
	done   chan struct{}
}

type release struct{ team, sandbox string }

// New returns a Controller; Start begins its background work.
func New(cfg Config) (*Controller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "admission", "replica", cfg.Replica),
		kick: make(chan struct{}, 1), queues: map[string][]*Waiter{}, bound: map[string]string{}, idPrefix: randomHex(4)}, nil
}

func (c *Controller) now() time.Time { return store.Time(c.cfg.Now()) }

// Start drops what this replica's previous run left in the store (its
// waiting entries and the holds it admitted but never bound: a crash cut
// them short), then runs the pump until Close. Call it before Enqueue.
func (c *Controller) Start(ctx context.Context) error {
	if err := c.purgeOwn(ctx); err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock()
	if c.cancel != nil || c.closed {
		c.mu.Unlock()
		cancel()
		return nil
	}
	c.cancel, c.done = cancel, make(chan struct{})
	c.mu.Unlock()
	go func() {
		defer close(c.done)
		c.pump(pctx)
	}()
	return nil
}

// purgeOwn removes the waiting entries and unbound holds named after this
// replica: a replica's name is unique among those sharing the store, so
// they are its previous run's.
func (c *Controller) purgeOwn(ctx context.Context) error {
	recs, err := c.cfg.Store.ListAdmissions(ctx)
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	me := c.cfg.Replica
	mine := func(d *doc) bool {
		return slices.ContainsFunc(d.Waiting, func(q queued) bool { return q.Replica == me }) ||
			slices.ContainsFunc(d.Held, func(h hold) bool { return h.Replica == me && h.Sandbox == "" })
	}
	for _, rec := range recs {
		d, err := c.read(ctx, rec.TeamID)
		if err != nil {
			return err
		}
		if !mine(d) {
			continue
		}
		if _, err := c.change(ctx, rec.TeamID, func(d *doc, _ time.Time) error {
			d.Waiting = slices.DeleteFunc(d.Waiting, func(q queued) bool { return q.Replica == me })
			d.Held = slices.DeleteFunc(d.Held, func(h hold) bool { return h.Replica == me && h.Sandbox == "" })
			return nil
		}); err != nil {
			return err
		}
		c.log.Info("dropped what the last run left in the queue", "team", rec.TeamID)
	}
	return nil
}

// Close stops the pump and fails the requests still waiting here.
func (c *Controller) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cancel, done := c.cancel, c.done
	var waiting []*Waiter
	for _, q := range c.queues {
		waiting = append(waiting, q...)
	}
	c.queues, c.order = map[string][]*Waiter{}, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	ctx, cancelOp := context.WithTimeout(context.Background(), opTimeout)
	defer cancelOp()
	for _, w := range waiting {
		c.dequeue(ctx, w)
		w.finish(nil, errClosed)
	}
	return nil
}

var errClosed = sandbox.Errorf(sandbox.ErrUnavailable, "shutting_down", "paddock is shutting down")

// Request asks for one sandbox's slot.
type Request struct {
	Team     string
	VCPUs    float64 // 0: Config.DefaultVCPUs
	MemoryMB int64   // 0: Config.DefaultMemoryMB
	// Deadline bounds the wait (with Config.MaxWait); zero: MaxWait alone.
	// The caller's context bounds Wait as well.
	Deadline time.Time
}

type deadlineKey struct{}

// WithDeadline carries the caller's queue deadline (an API request's
// queueTimeoutMs) down to whoever makes the Request, through layers
// whose signatures know nothing of admission.
func WithDeadline(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, deadlineKey{}, t)
}

// Deadline is the queue deadline WithDeadline put in ctx, zero if none.
func Deadline(ctx context.Context) time.Time {
	t, _ := ctx.Value(deadlineKey{}).(time.Time)
	return t
}

type resources struct {
	VCPUs    float64
	MemoryMB int64
}

// Waiter is a request admitted or in the queue. Wait for its ticket.
type Waiter struct {
	c        *Controller
	id, team string
	res      resources
	deadline time.Time
	queued   time.Time // when it entered the queue; zero if admitted at once (set before it is shared)

	moved chan struct{} // buffered (1): the position changed or the wait ended
	mu    sync.Mutex    // guards the fields below
	pos   int           // 1-based place in the team's queue; 0 once admitted
	done  bool
	t     *Ticket
	err   error
}

// Position is the waiter's place in its team's queue (1 is next), 0 when
// it is not waiting.
func (w *Waiter) Position() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pos
}

func (w *Waiter) setPos(pos int) {
	w.mu.Lock()
	changed := !w.done && w.pos != pos
	if changed {
		w.pos = pos
	}
	w.mu.Unlock()
	if changed {
		w.signal()
	}
}

func (w *Waiter) signal() {
	select {
	case w.moved <- struct{}{}:
	default:
	}
}

// finish ends the wait with a ticket or an error; the first end wins.
func (w *Waiter) finish(t *Ticket, err error) bool {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return false
	}
	w.done, w.t, w.err, w.pos = true, t, err, 0
	w.mu.Unlock()
	w.signal()
	if f := w.c.cfg.ObserveWait; f != nil {
		var waited time.Duration
		if !w.queued.IsZero() {
			waited = max(0, w.c.cfg.Now().Sub(w.queued))
		}
		f(waited, t != nil)
	}
	return true
}

// Ticket is an admitted request's slot: Bind it to the sandbox made with
// it, or Release it when none was made.
type Ticket struct {
	c        *Controller
	id, team string
	mu       sync.Mutex // guards settled
	settled  bool
}

// Acquire waits for a slot; see Enqueue and Wait.
func (c *Controller) Acquire(ctx context.Context, req Request) (*Ticket, error) {
	w, err := c.Enqueue(ctx, req)
	if err != nil {
		return nil, err
	}
	return w.Wait(ctx, nil)
}

// Enqueue admits req at once if it fits and nobody waits before it, or
// puts it in its team's queue; it refuses a request the queue has no room
// for (ErrExhausted "queue_full") and one that could never fit
// (ErrInvalid "over_team_limit").
func (c *Controller) Enqueue(ctx context.Context, req Request) (*Waiter, error) {
	if req.Team == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_team", "admission: a request names its team")
	}
	res := resources{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB}
	if res.VCPUs <= 0 {
		res.VCPUs = c.cfg.DefaultVCPUs
	}
	if res.MemoryMB <= 0 {
		res.MemoryMB = c.cfg.DefaultMemoryMB
	}
	deadline := c.cfg.Now().Add(c.cfg.MaxWait)
	if !req.Deadline.IsZero() && req.Deadline.Before(deadline) {
		deadline = req.Deadline
	}
	w := &Waiter{c: c, team: req.Team, res: res, deadline: deadline, moved: make(chan struct{}, 1)}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	// Ids sort in this replica's arrival order, so that two requests
	// queued within one millisecond keep theirs (the queue sorts by
	// arrival time, then id).
	c.seq++
	w.id = fmt.Sprintf("adm-%s-%012d", c.idPrefix, c.seq)
	// At once only when nobody here waits: a request must not pass one
	// that waits for the host, nor one of its own team.
	if len(c.order) == 0 && !c.hostFull() {
		admitted := false
		_, err := c.change(ctx, req.Team, func(d *doc, now time.Time) error {
			admitted = false // a retry after a lost race decides afresh
			l := c.limits(d)
			if err := never(l, res); err != nil {
				return err
			}
			if len(d.Waiting) > 0 {
				return errNoChange // others wait before it, on other replicas
			}
			if ok, _, _ := d.fit(l, res, now); !ok {
				return errNoChange
			}
			c.hold(d, w, now)
			admitted = true
			return nil
		})
		if err != nil {
			return nil, err
		}
		if admitted {
			c.inflight++
			w.finish(&Ticket{c: c, id: w.id, team: w.team}, nil)
			return w, nil
		}
	}
	var retry time.Duration
	w.queued = c.cfg.Now()
	d, err := c.change(ctx, req.Team, func(d *doc, now time.Time) error {
		retry = 0
		l := c.limits(d)
		if err := never(l, res); err != nil {
			return err
		}
		if len(d.Waiting) >= c.cfg.MaxQueue {
			_, _, retry = d.fit(l, res, now)
			return errQueueFull
		}
		since := now
		if since.Before(c.lastSince) {
			since = c.lastSince
		}
		d.Waiting = append(d.Waiting, queued{ID: w.id, Replica: c.cfg.Replica, Since: since,
			Expires: now.Add(c.cfg.WaitLease), VCPUs: res.VCPUs, MemoryMB: res.MemoryMB})
		c.lastSince = since
		d.sortWaiting()
		return nil
	})
	if errors.Is(err, errQueueFull) {
		return nil, c.refuse("queue_full", fmt.Sprintf("the team's queue is full (%d waiting)", c.cfg.MaxQueue), retry)
	}
	if err != nil {
		return nil, err
	}
	w.pos = d.position(w.id)
	if len(c.queues[req.Team]) == 0 {
		c.order = append(c.order, req.Team)
	}
	c.queues[req.Team] = append(c.queues[req.Team], w)
	// It may fit now (it was only behind the host, or behind waiters of
	// other teams): one pass decides at once.
	c.passLocked(ctx)
	c.kickPump() // the pump polls while anyone waits
	return w, nil
}

var errQueueFull = errors.New("queue full")

// limits are the limits d stands for: the admin's, or the default.
func (c *Controller) limits(d *doc) Limits {
	if d.Set {
		return d.Limits.Effective()
	}
	return c.cfg.Defaults.Effective()
}

// hold records w's slot in d, and its time for the rate limit: only as
// many times as the limit needs, so that a team without one writes none.
func (c *Controller) hold(d *doc, w *Waiter, now time.Time) {
	d.Held = append(d.Held, hold{ID: w.id, Replica: c.cfg.Replica, VCPUs: w.res.VCPUs, MemoryMB: w.res.MemoryMB,
		Expires: now.Add(c.cfg.HoldTTL)})
	d.Recent = append(d.Recent, now)
	if n := c.limits(d).CreatesPerMinute; len(d.Recent) > n {
		d.Recent = slices.Delete(d.Recent, 0, len(d.Recent)-n)
	}
}

// hostFull reports this host at its maximum, counting what is admitted
// but not yet made. Called with c.mu held.
func (c *Controller) hostFull() bool {
	if c.cfg.Host == nil {
		return false
	}
	active, limit := c.cfg.Host()
	return active+c.inflight >= limit
}

// Wait blocks until w is admitted, its deadline passes (ErrExhausted
// "queue_timeout" with a Retry-After), ctx ends, or the Controller
// closes. onPosition, if not nil, hears each new place in the queue, in
// this goroutine.
func (w *Waiter) Wait(ctx context.Context, onPosition func(int)) (*Ticket, error) {
	c := w.c
	last := -1
	for {
		w.mu.Lock()
		done, t, err, pos := w.done, w.t, w.err, w.pos
		w.mu.Unlock()
		if done {
			return t, err
		}
		if pos != last && onPosition != nil {
			onPosition(pos)
		}
		last = pos
		left := w.deadline.Sub(c.cfg.Now())
		if left <= 0 {
			return w.giveUp(ctx, c.refuse("queue_timeout", fmt.Sprintf("no capacity (the team's limits or the host's) within the deadline; place %d in the queue", pos), 0))
		}
		select {
		case <-w.moved:
		case <-c.cfg.After(left):
		case <-ctx.Done():
			err := ctx.Err()
			if errors.Is(err, context.DeadlineExceeded) {
				err = c.refuse("queue_timeout", fmt.Sprintf("no capacity (the team's limits or the host's) within the deadline; place %d in the queue", pos), 0)
			}
			return w.giveUp(ctx, err)
		}
	}
}

// giveUp leaves the queue with err, unless w was admitted meanwhile: then
// the ticket is the answer.
func (w *Waiter) giveUp(ctx context.Context, err error) (*Ticket, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !w.finish(nil, err) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.t, w.err
	}
	c.unqueue(w)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	c.dequeue(ctx, w)
	c.kickPump() // those behind it move up
	return nil, err
}

// unqueue drops w from the local queues. Called with c.mu held.
func (c *Controller) unqueue(w *Waiter) {
	q := slices.DeleteFunc(c.queues[w.team], func(x *Waiter) bool { return x == w })
	if len(q) == 0 {
		delete(c.queues, w.team)
		c.order = slices.DeleteFunc(c.order, func(t string) bool { return t == w.team })
		return
	}
	c.queues[w.team] = q
}

// dequeue drops w's entry from its team's queue in the store.
func (c *Controller) dequeue(ctx context.Context, w *Waiter) {
	if _, err := c.change(ctx, w.team, func(d *doc, _ time.Time) error {
		n := len(d.Waiting)
		d.Waiting = slices.DeleteFunc(d.Waiting, func(q queued) bool { return q.ID == w.id })
		if len(d.Waiting) == n {
			return errNoChange
		}
		return nil
	}); err != nil {
		c.log.Warn("leave the queue", "team", w.team, "err", err) // its lease ends it
	}
}

// Error is a refusal: ErrExhausted with a code, and how long to wait.
type Error struct {
	err   error
	retry time.Duration
}

func (e *Error) Error() string { return e.err.Error() }
func (e *Error) Unwrap() error { return e.err }

// RetryAfter is how long the caller should wait before trying again; the
// HTTP surfaces send it as Retry-After.
func (e *Error) RetryAfter() time.Duration { return e.retry }

func (c *Controller) refuse(code, msg string, retry time.Duration) error {
	if retry <= 0 {
		retry = c.cfg.RetryAfter
	}
	return Refused(code, msg, retry)
}

// Refused is a refusal with code: for a layer that learns of one after
// the fact (an activation that failed in the queue).
func Refused(code, msg string, retry time.Duration) error {
	return &Error{err: sandbox.Errorf(sandbox.ErrExhausted, code, "%s", msg), retry: retry}
}

// Cancel takes w out of the queue, or gives its slot back if it was
// admitted: the caller will not use it.
func (w *Waiter) Cancel(ctx context.Context) {
	t, _ := w.giveUp(ctx, errCanceled)
	if t != nil {
		t.Release(ctx)
	}
}

var errCanceled = sandbox.Errorf(sandbox.ErrConflict, "admission_canceled", "the request left the queue")

// Bind ties the ticket's slot to the sandbox made with it: the slot is
// the sandbox's until Released names it. The hold takes the sandbox's
// own vCPUs and memory where it has them (a fork's come from its source).
func (t *Ticket) Bind(ctx context.Context, sb sandbox.Sandbox) error {
	sandboxID := sb.ID
	if !t.settle() {
		return nil
	}
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	c.bound[sandboxID] = t.team
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	_, err := c.change(ctx, t.team, func(d *doc, now time.Time) error {
		i := slices.IndexFunc(d.Held, func(h hold) bool { return h.ID == t.id })
		if i < 0 {
			return errNoChange // expired meanwhile: the sandbox runs unaccounted until it ends
		}
		d.Held[i].Sandbox, d.Held[i].Expires, d.Held[i].Bound = sandboxID, time.Time{}, now
		if sb.Resources.VCPUs > 0 {
			d.Held[i].VCPUs = sb.Resources.VCPUs
		}
		if sb.Resources.MemoryMB > 0 {
			d.Held[i].MemoryMB = sb.Resources.MemoryMB
		}
		return nil
	})
	if err != nil {
		c.log.Warn("bind a hold to its sandbox", "team", t.team, "sandbox", sandboxID, "err", err) // it expires
	}
	c.kickPump() // the host's count now has it: inflight went down
	return err
}

// Release gives the slot back: no sandbox was made with it.
func (t *Ticket) Release(ctx context.Context) {
	if !t.settle() {
		return
	}
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	c.releaseHoldLocked(ctx, t)
}

// releaseHoldLocked drops t's hold. Called with c.mu held.
func (c *Controller) releaseHoldLocked(ctx context.Context, t *Ticket) {
	c.inflight--
	if _, err := c.change(ctx, t.team, func(d *doc, _ time.Time) error {
		n := len(d.Held)
		d.Held = slices.DeleteFunc(d.Held, func(h hold) bool { return h.ID == t.id })
		if len(d.Held) == n {
			return errNoChange
		}
		return nil
	}); err != nil {
		c.log.Warn("release a hold", "team", t.team, "err", err) // it expires
	}
	c.kickPump()
}

func (t *Ticket) settle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.settled {
		return false
	}
	t.settled = true
	return true
}

// Released tells admission that a sandbox ended (stopped, failed or
// deleted): its slot goes back to its team. team may be "" when only the
// id is known. It does not block: the pump does the work.
func (c *Controller) Released(team, sandboxID string) {
	c.relMu.Lock()
	c.released = append(c.released, release{team, sandboxID})
	c.relMu.Unlock()
	c.kickPump()
}

func (c *Controller) kickPump() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// pump admits waiters as slots free up: when kicked (a release, a
// waiter leaving) and every Poll while anyone waits here (other replicas'
// releases, the rate window).
func (c *Controller) pump(ctx context.Context) {
	for {
		c.mu.Lock()
		c.releaseLocked(ctx)
		c.passLocked(ctx)
		c.sweepLocked(ctx)
		waiting := len(c.order) > 0
		c.mu.Unlock()
		var tick <-chan time.Time
		if waiting {
			tick = c.cfg.After(c.cfg.Poll)
		} else {
			tick = c.cfg.After(c.cfg.SweepEvery)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-tick:
		}
	}
}

// releaseLocked drops the holds of the sandboxes that ended.
func (c *Controller) releaseLocked(ctx context.Context) {
	c.relMu.Lock()
	rels := c.released
	c.released = nil
	c.relMu.Unlock()
	for _, r := range rels {
		team := r.team
		if bt, ok := c.bound[r.sandbox]; ok {
			team = bt
			delete(c.bound, r.sandbox)
		}
		if team == "" {
			continue // not ours, or bound before a restart: the sweep finds it
		}
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := c.change(octx, team, func(d *doc, _ time.Time) error {
			n := len(d.Held)
			d.Held = slices.DeleteFunc(d.Held, func(h hold) bool { return h.Sandbox == r.sandbox })
			if len(d.Held) == n {
				return errNoChange
			}
			return nil
		})
		cancel()
		if err != nil {
			c.log.Warn("release a sandbox's hold", "team", team, "sandbox", r.sandbox, "err", err) // the sweep retries
		}
	}
}

// passLocked admits what fits, round-robin across teams, first in first
// out within each, then tells every waiter here its place. Called with
// c.mu held.
func (c *Controller) passLocked(ctx context.Context) {
	for progress := true; progress && len(c.order) > 0; {
		progress = false
		for _, team := range slices.Clone(c.order) {
			if c.hostFull() {
				break
			}
			q := c.queues[team]
			if len(q) == 0 {
				continue
			}
			w := q[0]
			if !c.tryAdmit(ctx, w) {
				continue
			}
			progress = true
			// Served: to the back of the round, behind the teams that wait.
			c.unqueue(w)
			if len(c.queues[team]) > 0 {
				c.order = append(slices.DeleteFunc(c.order, func(t string) bool { return t == team }), team)
			}
		}
	}
	c.renewLocked(ctx)
}

// tryAdmit moves w from its team's queue to a hold if w is first in the
// queue (every replica's) and fits. Called with c.mu held.
func (c *Controller) tryAdmit(ctx context.Context, w *Waiter) bool {
	admitted := false
	_, err := c.change(ctx, w.team, func(d *doc, now time.Time) error {
		admitted = false // a retry after a lost race decides afresh
		if len(d.Waiting) == 0 || d.Waiting[0].ID != w.id {
			return errNoChange
		}
		if ok, _, _ := d.fit(c.limits(d), w.res, now); !ok {
			return errNoChange
		}
		d.Waiting = d.Waiting[1:]
		c.hold(d, w, now)
		admitted = true
		return nil
	})
	if err != nil {
		c.log.Warn("admit", "team", w.team, "err", err)
		return false
	}
	if !admitted {
		return false
	}
	c.inflight++
	t := &Ticket{c: c, id: w.id, team: w.team}
	if !w.finish(t, nil) {
		// Cannot happen: a waiter gives up under c.mu, and Close empties
		// the queues first. Were it to, the slot goes back.
		t.settle()
		c.releaseHoldLocked(ctx, t)
	}
	return true
}

// renewLocked tells each waiter here its place and renews the leases of
// its entries. Called with c.mu held.
func (c *Controller) renewLocked(ctx context.Context) {
	for _, team := range slices.Clone(c.order) {
		ws := c.queues[team]
		mine := map[string]*Waiter{}
		for _, w := range ws {
			mine[w.id] = w
		}
		d, err := c.change(ctx, team, func(d *doc, now time.Time) error {
			renew := false
			for i := range d.Waiting {
				q := &d.Waiting[i]
				if mine[q.ID] != nil && q.Expires.Sub(now) < c.cfg.WaitLease/2 {
					q.Expires, renew = now.Add(c.cfg.WaitLease), true
				}
			}
			// An entry pruned while this replica could not renew it
			// (a stalled store) goes back at the end.
			for _, w := range ws {
				if d.position(w.id) == 0 {
					d.Waiting = append(d.Waiting, queued{ID: w.id, Replica: c.cfg.Replica, Since: now,
						Expires: now.Add(c.cfg.WaitLease), VCPUs: w.res.VCPUs, MemoryMB: w.res.MemoryMB})
					renew = true
				}
			}
			if !renew {
				return errNoChange
			}
			return nil
		})
		if err != nil {
			c.log.Warn("renew the queue", "team", team, "err", err)
			continue
		}
		for _, w := range ws {
			w.setPos(d.position(w.id))
		}
	}
}

// sweepLocked drops, every SweepEvery, the holds whose sandbox has ended
// or is gone: a release lost to a crash or to a race with Bind.
func (c *Controller) sweepLocked(ctx context.Context) {
	now := c.cfg.Now()
	if now.Sub(c.lastSweep) < c.cfg.SweepEvery {
		return
	}
	c.lastSweep = now
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	recs, err := c.cfg.Store.ListAdmissions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("sweep holds", "err", err)
		}
		return
	}
	for _, rec := range recs {
		d, err := c.read(ctx, rec.TeamID)
		if err != nil {
			continue
		}
		gone := map[string]bool{}
		for _, h := range d.Held {
			// A young hold's record may not be visible everywhere yet
			// (a secondary's lag): only holds bound a sweep ago count.
			if h.Sandbox == "" || now.Sub(h.Bound) < c.cfg.SweepEvery {
				continue
			}
			r, err := c.cfg.Store.GetSandbox(ctx, h.Sandbox)
			switch {
			case errors.Is(err, sandbox.ErrNotFound):
				gone[h.Sandbox] = true
			case err == nil && r.Sandbox.State != sandbox.Pending && r.Sandbox.State != sandbox.Running:
				gone[h.Sandbox] = true
			}
		}
		if len(gone) == 0 {
			continue
		}
		if _, err := c.change(ctx, rec.TeamID, func(d *doc, _ time.Time) error {
			d.Held = slices.DeleteFunc(d.Held, func(h hold) bool { return gone[h.Sandbox] })
			return nil
		}); err != nil {
			c.log.Warn("sweep holds", "team", rec.TeamID, "err", err)
			continue
		}
		c.log.Info("dropped holds of ended sandboxes", "team", rec.TeamID, "count", len(gone))
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
