// Package pool keeps warm pools: per pool, a target number of idle sandboxes
// created ahead of time, so that a create request whose key matches
// (node.WarmKey: image or snapshot, resources, network policy) claims one
// instead of waiting for a cold start. The claimer's own env, ports,
// timeout, source and owner are applied by the claim (node.Manager.Claim);
// a claimed sandbox never returns to a pool, and the pool makes a fresh
// one in the background.
//
// The host admin sets pools (name, key, min and max) through the API or
// serve's --pool flags; the Manager keeps them in a JSON file and sizes
// each pool between its min and max by recent demand: as many idle
// sandboxes as the busiest minute of the last Window asked for. Refills run
// in goroutines the Manager owns, at most Concurrency at once over all
// pools, with backoff after failures; Close cancels and waits for them.
// Idle pool sandboxes outlive a restart: the next Start adopts those whose
// pool still exists with the same key and discards the rest.
package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sandboxes is what pools need from the host's sandboxes;
// *node.Manager implements it.
type Sandboxes interface {
	Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	WarmKey(req sandbox.CreateRequest) (node.WarmKey, error)
	CreatePooled(ctx context.Context, pool string, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	Claim(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	DiscardPooled(ctx context.Context, id string) error
	Pooled() []sandbox.Sandbox
	// Load is the number of pending and running sandboxes and the host's
	// maximum: refills leave the last slot to requests.
	Load() (active, max int)
}

var _ Sandboxes = (*node.Manager)(nil)

// Defaults of Config fields left zero, and bounds.
const (
	DefaultConcurrency = 2
	DefaultWindow      = 5 * time.Minute
	// DefaultClaimGrace is how long refills hold back after a claim. The
	// claimer's first commands come right after its create returns, and a
	// refill started at once competes with them for the CPU: its cold
	// start (runc init, the agent's Go start) is tens of milliseconds of
	// CPU, on a 2-core host about 3 ms (25%) more for claim → first
	// command finished (BenchmarkWarmClaim, same-run alternation).
	DefaultClaimGrace = 100 * time.Millisecond
	// tick is how often the loop looks again without being woken: demand
	// leaves the window and failed refills are retried.
	tick = 5 * time.Second
	// minBackoff and maxBackoff bound the wait after failed refills.
	minBackoff = time.Second
	maxBackoff = time.Minute
	// opTimeout bounds one background create or discard.
	opTimeout = 2 * time.Minute
)

// Spec is one pool as the host admin sets it; Status one with its figures.
type (
	Spec   = sandbox.PoolSpec
	Status = sandbox.PoolStatus
)

// Config configures a Manager.
type Config struct {
	Sandboxes Sandboxes // required
	// File keeps the pools set through the API across restarts; "" keeps
	// them in memory only.
	File string
	// Pools are set at Start over the file's pools of the same name (serve's
	// --pool flags).
	Pools []Spec
	// Concurrency bounds the refills in flight over all pools.
	Concurrency int
	// Window is how far back demand counts.
	Window time.Duration
	// ClaimGrace delays the refills a claim calls for
	// (DefaultClaimGrace if 0, none if negative). A stream of claims
	// postpones refills by at most this much each round, never for good.
	ClaimGrace time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
}

// Manager keeps the host's pools. It is safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	sb  Sandboxes

	wake chan struct{} // buffered (1): the loop looks again

	mu       sync.Mutex // guards the fields below
	pools    map[string]*pool
	byKey    map[node.WarmKey]*pool
	inflight int // refills running
	// graceUntil is when refills may start after the last claim (real
	// time: the loop's timer waits for it, whatever Config.Now says).
	graceUntil time.Time
	started    bool
	closed     bool
	ctx        context.Context // cancelled by Close; background work derives from it
	cancel     context.CancelFunc

	wg sync.WaitGroup // the loop, refills and discards

	saveMu sync.Mutex // serialises save: the file gets the newest pools last
}

// pool is one pool's state; Manager.mu guards it.
type pool struct {
	spec   Spec
	key    node.WarmKey
	keyErr error // the key could not be resolved (an image not on the host)
	idle   []string
	// creating counts refills in flight.
	creating     int
	hits, misses uint64
	// demand counts requests of the key per minute, newest last.
	demand   []bucket
	failures int
	retryAt  time.Time
	lastErr  string
}

type bucket struct {
	minute time.Time
	n      int
}

// New checks cfg; Start loads the pools and adopts their sandboxes.
func New(cfg Config) (*Manager, error) {
	if cfg.Sandboxes == nil {
		return nil, errors.New("pool: Sandboxes is required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.ClaimGrace == 0 {
		cfg.ClaimGrace = DefaultClaimGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, s := range cfg.Pools {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "pool"), sb: cfg.Sandboxes,
		wake: make(chan struct{}, 1), pools: map[string]*pool{}, byKey: map[node.WarmKey]*pool{},
		ctx: ctx, cancel: cancel}, nil
}

// Start loads the pools (the file's, then Config.Pools over them), adopts
// the idle sandboxes a previous paddock left whose pool still exists with
// the same key, discards every other one, and starts refilling. Call it
// after node's Start (which re-adopted or failed them) and once.
func (m *Manager) Start(ctx context.Context) error {
	specs, err := m.load()
	if err != nil {
		return err
	}
	for _, s := range m.cfg.Pools {
		i := slices.IndexFunc(specs, func(o Spec) bool { return o.Name == s.Name })
		if i >= 0 {
			specs[i] = s
		} else {
			specs = append(specs, s)
		}
	}
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return errors.New("pool: Start called twice or after Close")
	}
	m.started = true
	for _, s := range specs {
		p := &pool{spec: s}
		m.resolve(p)
		m.pools[s.Name] = p
	}
	m.reindex()
	m.mu.Unlock()
	if len(m.cfg.Pools) > 0 {
		if err := m.save(); err != nil {
			return err
		}
	}

	var discard []string
	m.mu.Lock()
	for _, sb := range m.sb.Pooled() {
		p := m.pools[sb.Pool]
		if p != nil && p.keyErr == nil && sb.State == sandbox.Running && node.KeyOf(sb) == p.key && len(p.idle) < p.spec.Max {
			p.idle = append(p.idle, sb.ID)
			continue
		}
		discard = append(discard, sb.ID)
	}
	m.mu.Unlock()
	for _, id := range discard {
		m.log.Info("discarding pool sandbox left by the last run", "sandbox", id)
		if err := m.sb.DiscardPooled(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			m.log.Error("discard pool sandbox", "sandbox", id, "err", err)
		}
	}
	m.wg.Add(1)
	go m.loop()
	return nil
}

// Close stops refilling and waits for creates and discards in flight.
// Idle sandboxes keep running; the next Start adopts them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

// resolve computes p's key from its spec. The caller holds m.mu (the key
// comes from node's memory and the image index; no sandbox is touched).
func (m *Manager) resolve(p *pool) {
	p.key, p.keyErr = m.sb.WarmKey(p.spec.Request())
}

// reindex rebuilds byKey; the caller holds m.mu. With two pools of one key
// (an image re-pulled to what another pool's ref names), the first by name
// serves it.
func (m *Manager) reindex() {
	clear(m.byKey)
	names := make([]string, 0, len(m.pools))
	for n := range m.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := m.pools[n]
		if _, dup := m.byKey[p.key]; p.keyErr == nil && !dup {
			m.byKey[p.key] = p
		}
	}
}

// Create serves a create request: from the pool of its key when one has an
// idle sandbox, else cold. A cold create refused for the host's capacity
// discards one idle sandbox and tries again: requests come before pools.
func (m *Manager) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	if sb, ok, err := m.claim(ctx, req); ok {
		return sb, err
	}
	sb, err := m.sb.Create(ctx, req)
	if sandbox.CodeOf(err) == "capacity" && m.evict(ctx) {
		sb, err = m.sb.Create(ctx, req)
	}
	return sb, err
}

// claim tries the pool of req's key; ok false means create cold.
func (m *Manager) claim(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, bool, error) {
	m.mu.Lock()
	none := len(m.byKey) == 0
	m.mu.Unlock()
	if none {
		return sandbox.Sandbox{}, false, nil
	}
	key, err := m.sb.WarmKey(req)
	if err != nil {
		return sandbox.Sandbox{}, false, nil // the cold create says what is wrong, if anything
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.byKey[key]
	if p == nil || m.closed {
		return sandbox.Sandbox{}, false, nil
	}
	p.count(m.cfg.Now())
	for len(p.idle) > 0 {
		id := p.idle[0]
		p.idle = p.idle[1:]
		m.mu.Unlock()
		sb, err := m.sb.Claim(ctx, id, req)
		m.mu.Lock()
		if errors.Is(err, node.ErrNotClaimed) {
			m.log.Warn("pool sandbox not claimable, discarding it", "pool", p.spec.Name, "sandbox", id, "err", err)
			m.discardLocked(id)
			continue
		}
		if sb.ID != "" && m.cfg.ClaimGrace > 0 {
			m.graceUntil = time.Now().Add(m.cfg.ClaimGrace)
		}
		m.poke()
		if sb.ID == "" { // refused before the sandbox was touched: it is still the pool's
			p.idle = append([]string{id}, p.idle...)
			return sb, true, err
		}
		p.hits++
		return sb, true, err
	}
	p.misses++
	m.poke()
	return sandbox.Sandbox{}, false, nil
}

// evict discards one idle sandbox, from the pool with the most, to make
// room for a request; false when there was none.
func (m *Manager) evict(ctx context.Context) bool {
	m.mu.Lock()
	var most *pool
	for _, p := range m.pools {
		if len(p.idle) > 0 && (most == nil || len(p.idle) > len(most.idle)) {
			most = p
		}
	}
	if most == nil {
		m.mu.Unlock()
		return false
	}
	id := most.idle[0]
	most.idle = most.idle[1:]
	m.mu.Unlock()
	m.log.Info("discarding a pool sandbox for a request at the host's capacity", "pool", most.spec.Name, "sandbox", id)
	if err := m.sb.DiscardPooled(ctx, id); err != nil {
		m.log.Error("discard pool sandbox", "sandbox", id, "err", err)
		return false
	}
	return true
}

// count records one request of p's key at now; the caller holds m.mu.
func (p *pool) count(now time.Time) {
	minute := now.Truncate(time.Minute)
	if n := len(p.demand); n > 0 && p.demand[n-1].minute.Equal(minute) {
		p.demand[n-1].n++
		return
	}
	p.demand = append(p.demand, bucket{minute: minute, n: 1})
}

// target is the idle count p aims at: the busiest minute of the window,
// within [Min, Max]. It drops the buckets that left the window.
func (p *pool) target(now time.Time, window time.Duration) int {
	from := now.Add(-window).Truncate(time.Minute)
	p.demand = slices.DeleteFunc(p.demand, func(b bucket) bool { return b.minute.Before(from) })
	peak := 0
	for _, b := range p.demand {
		peak = max(peak, b.n)
	}
	return min(max(peak, p.spec.Min), p.spec.Max)
}

// poke wakes the loop without blocking.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// loop refills and trims the pools until Close.
func (m *Manager) loop() {
	defer m.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if !m.waitGrace() {
			return
		}
		m.refill()
		select {
		case <-m.ctx.Done():
			return
		case <-m.wake:
		case <-t.C:
		}
	}
}

// waitGrace waits until the grace after the last claim is over, for at
// most one grace (a later claim does not extend this wait); false if
// Close came first.
func (m *Manager) waitGrace() bool {
	m.mu.Lock()
	d := time.Until(m.graceUntil)
	m.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(min(d, m.cfg.ClaimGrace))
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refill starts the creates each pool lacks (within the concurrency bound
// and the host's capacity, less one slot) and discards what it has beyond
// its target.
func (m *Manager) refill() {
	now := m.cfg.Now()
	active, limit := m.sb.Load()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	names := make([]string, 0, len(m.pools))
	for n := range m.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	rekey := false
	for _, n := range names {
		p := m.pools[n]
		// The image behind a ref may have been re-pulled or removed.
		old, oldErr := p.key, p.keyErr
		m.resolve(p)
		if p.key != old || (p.keyErr == nil) != (oldErr == nil) {
			rekey = true
			for _, id := range p.idle {
				m.discardLocked(id)
			}
			p.idle = nil
		}
	}
	if rekey {
		m.reindex()
	}
	for _, n := range names {
		p := m.pools[n]
		target := p.target(now, m.cfg.Window)
		for len(p.idle) > target {
			m.discardLocked(p.idle[0])
			p.idle = p.idle[1:]
		}
		if p.keyErr != nil {
			p.lastErr = p.keyErr.Error()
			continue
		}
		for len(p.idle)+p.creating < target && m.inflight < m.cfg.Concurrency && active+1 < limit && !now.Before(p.retryAt) {
			p.creating++
			m.inflight++
			active++
			m.wg.Add(1)
			go m.createOne(p, p.spec, p.key)
		}
	}
}

// createOne makes one idle sandbox for p (spec and key as refill saw
// them) and adds it, unless the pool changed meanwhile.
func (m *Manager) createOne(p *pool, spec Spec, key node.WarmKey) {
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(m.ctx, opTimeout)
	defer cancel()
	sb, err := m.sb.CreatePooled(ctx, spec.Name, spec.Request())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inflight--
	p.creating--
	defer m.poke()
	if err != nil {
		p.failures++
		p.retryAt = m.cfg.Now().Add(min(maxBackoff, minBackoff<<min(p.failures-1, 6)))
		p.lastErr = err.Error()
		if m.ctx.Err() == nil {
			m.log.Warn("refill pool", "pool", spec.Name, "failures", p.failures, "err", err)
		}
		return
	}
	p.failures, p.lastErr = 0, ""
	if m.closed {
		return // adopted by the next start
	}
	if m.pools[spec.Name] != p || p.key != key || node.KeyOf(sb) != key {
		m.discardLocked(sb.ID)
		return
	}
	p.idle = append(p.idle, sb.ID)
}

// discardLocked deletes an idle sandbox in the background; the caller
// holds m.mu and has taken id out of every pool.
func (m *Manager) discardLocked(id string) {
	if m.closed {
		return // adopted or discarded by the next start
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), opTimeout)
		defer cancel()
		if err := m.sb.DiscardPooled(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			m.log.Error("discard pool sandbox", "sandbox", id, "err", err)
		}
	}()
}

// Set creates or changes a pool. Its key must resolve (the image is on the
// host, the snapshot exists) and differ from every other pool's. A pool
// whose key changes discards its idle sandboxes.
func (m *Manager) Set(ctx context.Context, s Spec) (Status, error) {
	if err := s.Validate(); err != nil {
		return Status{}, err
	}
	key, err := m.sb.WarmKey(s.Request())
	if err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	if m.closed || !m.started {
		m.mu.Unlock()
		return Status{}, sandbox.Errorf(sandbox.ErrUnavailable, "pools_closed", "pools are not running")
	}
	if o := m.byKey[key]; o != nil && o.spec.Name != s.Name {
		m.mu.Unlock()
		return Status{}, sandbox.Errorf(sandbox.ErrConflict, "pool_key_taken", "pool %q already keeps sandboxes of this key (%s)", o.spec.Name, key)
	}
	p := m.pools[s.Name]
	if p == nil {
		p = &pool{}
		m.pools[s.Name] = p
	}
	if p.key != key || p.keyErr != nil {
		for _, id := range p.idle {
			m.discardLocked(id)
		}
		p.idle = nil
	}
	p.spec, p.key, p.keyErr, p.failures, p.retryAt, p.lastErr = s, key, nil, 0, time.Time{}, ""
	m.reindex()
	m.mu.Unlock()
	m.poke()
	if err := m.save(); err != nil {
		return Status{}, err
	}
	return m.Get(s.Name)
}

// Remove deletes a pool and its idle sandboxes; creates in flight are
// discarded as they finish.
func (m *Manager) Remove(ctx context.Context, name string) error {
	m.mu.Lock()
	p := m.pools[name]
	if p == nil {
		m.mu.Unlock()
		return notFound(name)
	}
	delete(m.pools, name)
	m.reindex()
	idle := p.idle
	p.idle = nil
	m.mu.Unlock()
	var errs []error
	for _, id := range idle {
		if err := m.sb.DiscardPooled(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if err := m.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Get returns one pool's status.
func (m *Manager) Get(name string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[name]
	if p == nil {
		return Status{}, notFound(name)
	}
	return m.status(p), nil
}

// List returns every pool's status, by name.
func (m *Manager) List() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.pools))
	for _, p := range m.pools {
		out = append(out, m.status(p))
	}
	slices.SortFunc(out, func(a, b Status) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// status is p as the API shows it; the caller holds m.mu.
func (m *Manager) status(p *pool) Status {
	st := Status{PoolSpec: p.spec, Target: p.target(m.cfg.Now(), m.cfg.Window), Idle: len(p.idle), Creating: p.creating,
		Hits: p.hits, Misses: p.misses, Error: p.lastErr}
	if p.keyErr == nil {
		st.Key = p.key.String()
	} else {
		st.Error = p.keyErr.Error()
	}
	return st
}

func notFound(name string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "pool_not_found", "pool %q not found", name)
}

// poolFile is the file's shape.
type poolFile struct {
	Pools []Spec `json:"pools"`
}

// load reads the file's pools; a missing file is none.
func (m *Manager) load() ([]Spec, error) {
	if m.cfg.File == "" {
		return nil, nil
	}
	data, err := os.ReadFile(m.cfg.File)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pool: read %s: %w", m.cfg.File, err)
	}
	var f poolFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("pool: parse %s: %w", m.cfg.File, err)
	}
	for _, s := range f.Pools {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("pool: %s: %w", m.cfg.File, err)
		}
	}
	return f.Pools, nil
}

// save writes every pool's spec to the file, whole or not at all.
func (m *Manager) save() error {
	if m.cfg.File == "" {
		return nil
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	f := poolFile{Pools: make([]Spec, 0, len(m.pools))}
	for _, p := range m.pools {
		f.Pools = append(f.Pools, p.spec)
	}
	m.mu.Unlock()
	slices.SortFunc(f.Pools, func(a, b Spec) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("pool: encode: %w", err)
	}
	if err := atomicfile.WriteFile(m.cfg.File, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("pool: write %s: %w", m.cfg.File, err)
	}
	return nil
}
