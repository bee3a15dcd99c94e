// Package node manages the sandboxes of one host: it creates them through a
// runtime.Driver, walks each through the sandbox state machine, enforces
// their timeouts, keeps their records on disk, and on restart reconciles
// those records with what the driver still runs (re-adopting live
// sandboxes, failing lost ones, destroying orphans). With a Config.Network
// it also owns each sandbox's network: set up before the driver creates the
// sandbox, torn down after the driver stopped it.
//
// Locking: Manager.mu guards only the id→entry map and its indexes and is
// never held across driver calls, so creating many sandboxes at once does
// not serialise. Each entry has an op lock that serialises the lifecycle
// operations of that one sandbox (held across driver calls) and a data lock
// that guards its record (held briefly, so Get and List never wait for a
// driver). Lock order: entry.op, then entry.mu, then Manager.mu.
package node

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Manager owns the sandboxes of this host. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	store Records
	rt    runtimeSet // the drivers by runtime (runtimes.go)
	// startLog writes History.Started off Exec's path (started.go); nil
	// without a History.
	startLog *startedLog

	// wake tells the timeout loop that a deadline changed. Buffered (1) so a
	// sender never blocks; one pending wake covers any number of changes.
	wake chan struct{}

	mu sync.Mutex // guards the fields below
	// entries holds every sandbox this node knows, including stopped and
	// failed ones until they are deleted.
	entries map[string]*entry
	// active holds the ids of pending and running sandboxes: the capacity count.
	active map[string]struct{}
	// deadlines holds ExpiresAt of running sandboxes, and collect when
	// the layers of stopped and failed ones go (Config.StoppedRetention),
	// for the timeout loop.
	deadlines map[string]time.Time
	collect   map[string]time.Time
	started   bool
	closed    bool
	cancel    context.CancelFunc // stops the timeout loop; set by Start

	wg sync.WaitGroup // the timeout and liveness loops: added by Start, waited by Close

	adopting sync.Mutex // serialises Adopt (adopt.go)
}

// entry is one sandbox's in-memory state.
type entry struct {
	// op serialises lifecycle operations (create, stop, delete, extend,
	// reconcile) on this sandbox and is held across driver calls.
	op sync.Mutex

	mu sync.Mutex // guards the fields below; never held across blocking calls
	// sb is the record. Writers hold op and mu; readers hold either.
	sb sandbox.Sandbox
	// client talks to the agent while the sandbox runs; nil otherwise.
	client *agent.Client
	// gone is set when the sandbox has been deleted, for operations that
	// found the entry before it left the map.
	gone bool
}

// snapshot returns a deep copy of the record and the agent client.
func (e *entry) snapshot() (sandbox.Sandbox, *agent.Client, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return clone(e.sb), e.client, e.gone
}

// clone copies sb so that callers never share its map with the manager.
func clone(sb sandbox.Sandbox) sandbox.Sandbox {
	sb.Env = maps.Clone(sb.Env)
	sb.Labels = maps.Clone(sb.Labels)
	sb.Ports = slices.Clone(sb.Ports)
	sb.ImageLayers = slices.Clone(sb.ImageLayers)
	if sb.NetworkPolicy != nil {
		p := clonePolicy(*sb.NetworkPolicy)
		sb.NetworkPolicy = &p
	}
	if sb.Pause != nil {
		p := *sb.Pause
		sb.Pause = &p
	}
	return sb
}

// New loads the node's records from cfg.DataDir. It does not touch the
// driver: Start reconciles the records with what actually runs.
func New(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store := cfg.Records
	dir := filepath.Join(cfg.DataDir, "node", "sandboxes")
	if store == nil {
		fs, err := newFileStore(dir)
		if err != nil {
			return nil, err
		}
		store = fs
	} else {
		// The upgrade to records in a database: take over the files.
		ctx, cancel := context.WithTimeout(context.Background(), recordsLoadTimeout)
		n, err := importFileRecords(ctx, dir, store)
		cancel()
		if err != nil {
			return nil, err
		}
		if n > 0 {
			cfg.Logger.Info("imported sandbox records from files", "count", n, "from", dir)
		}
	}
	return newManager(cfg, store)
}

// newManager builds a manager over any Records; cfg is already defaulted
// and valid.
func newManager(cfg Config, store Records) (*Manager, error) {
	rt, err := newRuntimeSet(&cfg)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "node"),
		store:     store,
		rt:        rt,
		wake:      make(chan struct{}, 1),
		entries:   make(map[string]*entry),
		active:    make(map[string]struct{}),
		deadlines: make(map[string]time.Time),
		collect:   make(map[string]time.Time),
	}
	if cfg.History != nil {
		m.startLog = newStartedLog(cfg.History, m.log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordsLoadTimeout)
	defer cancel()
	records, err := store.LoadAll(ctx)
	if err != nil {
		return nil, err
	}
	for _, sb := range records {
		m.entries[sb.ID] = &entry{sb: sb}
		m.index(sb)
	}
	return m, nil
}

// Start reconciles the records with the driver, then runs timeout
// enforcement until Close. Call it once, before serving requests.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return sandbox.Errorf(sandbox.ErrConflict, "node_started", "node: Start called twice or after Close")
	}
	m.started = true
	m.mu.Unlock()

	if err := m.reconcile(ctx); err != nil {
		return err
	}

	// The loop lives until Close, not until the caller's ctx ends; it keeps
	// ctx's values (for logging) but not its cancellation.
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		cancel()
		return nil
	}
	m.cancel = cancel
	m.wg.Add(2)
	m.mu.Unlock()
	go m.timeoutLoop(loopCtx)
	go m.livenessLoop(loopCtx)
	return nil
}

// Ready reports whether the manager serves: Start has reconciled this
// host's sandboxes with the driver and Close has not been called.
func (m *Manager) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return sandbox.Errorf(sandbox.ErrUnavailable, "node_closed", "the sandbox manager is shut down")
	case m.cancel == nil:
		return sandbox.Errorf(sandbox.ErrUnavailable, "node_starting", "the sandbox manager is still reconciling this host's sandboxes")
	}
	return nil
}

// Close stops background work and waits for it. Sandboxes keep running;
// a later Manager on the same DataDir re-adopts them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	if m.startLog != nil {
		m.startLog.close()
	}

	m.mu.Lock()
	ents := slices.Collect(maps.Values(m.entries))
	m.mu.Unlock()
	for _, e := range ents {
		if _, c, _ := e.snapshot(); c != nil {
			c.Close()
		}
	}
	return nil
}

// Create builds and starts a sandbox and returns once it runs. If the driver
// fails, the sandbox is recorded as failed and the returned error says why;
// the failed record is returned with it.
func (m *Manager) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	return m.create(ctx, req, "")
}

// create is Create of an owned sandbox (pool "") or of an idle one for the
// warm pool named pool (see warm.go), which has no deadline until claimed.
func (m *Manager) create(ctx context.Context, req sandbox.CreateRequest, pool string) (sandbox.Sandbox, error) {
	start := time.Now()
	req, err := normalize(&m.cfg, req, m.requestNetworked(req))
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	var (
		img    *image.Image
		snap   *image.Snapshot
		rootfs *runtime.Rootfs
	)
	if req.Snapshot != "" {
		snap, rootfs, err = m.resolveSnapshot(ctx, req.Snapshot)
	} else {
		img, rootfs, err = m.resolveImage(ctx, req.TeamID, req.Image)
	}
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if req.Runtime == "" && snap != nil {
		// A snapshot keeps its runtime.
		req.Runtime = snap.Runtime
	}
	rtName, drv, err := m.rt.resolve(req.Runtime)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if err := checkCapabilities(rtName, drv.Capabilities(), req); err != nil {
		return sandbox.Sandbox{}, err
	}
	id, err := newID()
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	now := m.now()
	e := &entry{sb: sandbox.Sandbox{
		ID:        id,
		State:     sandbox.Pending,
		Image:     req.Image,
		Resources: req.Resources,
		Env:       maps.Clone(req.Env),
		Driver:    rtName,
		CreatedAt: now,
		// Provisional, so that a sandbox re-adopted after a crash mid-create
		// still has a deadline; reset from StartedAt once it runs.
		ExpiresAt:     now.Add(req.Timeout),
		Ports:         req.Ports,
		NetworkPolicy: req.NetworkPolicy,
		TeamID:        req.TeamID,
		ProjectID:     req.ProjectID,
		Volumes:       slices.Clone(req.Volumes),
		Pool:          pool,
		Labels:        maps.Clone(req.Labels),
	}}
	if pool != "" {
		e.sb.ExpiresAt = time.Time{}
	}
	if img != nil {
		// Recording the layers before the driver mounts them keeps them
		// from image GC for as long as the sandbox exists.
		e.sb.Image, e.sb.ImageDigest, e.sb.ImageLayers = img.Ref, img.Digest, slices.Clone(rootfs.Lowers)
		e.sb.ImageUser, e.sb.WorkingDir = img.Config.User, img.Config.WorkingDir
		e.sb.Env = imageEnv(img.Config.Env, req.Env)
	}
	if snap != nil {
		// As for an image: the layers recorded keep them from GC.
		e.sb.Image, e.sb.ImageDigest, e.sb.ImageLayers = snap.Image, snap.Digest, slices.Clone(rootfs.Lowers)
		e.sb.ImageUser, e.sb.WorkingDir = snap.Config.User, snap.Config.WorkingDir
		e.sb.Env = imageEnv(snap.Config.Env, req.Env)
		e.sb.Snapshot = snap.ID
	}
	if ri, ok := drv.(runtime.RegistryImager); ok {
		// The image a snapshot of the sandbox is pushed on top of (push.go).
		e.sb.ImageRef = ri.HostImageRef()
		if rootfs != nil {
			e.sb.ImageRef = rootfs.Ref
		}
	} else if rootfs != nil && m.cfg.SnapshotRegistry != "" {
		// What a snapshot of it is pushed on for the other replicas
		// (push.go); "" for an image or snapshot in no registry.
		e.sb.ImageRef = rootfs.Ref
	}
	// Held until the sandbox leaves pending, so no other operation sees it
	// half-created; Get and List only need e.mu and do not wait.
	e.op.Lock()
	defer e.op.Unlock()

	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrUnavailable, "node_closed", "node is shutting down")
	case len(m.active) >= m.cfg.MaxSandboxes:
		m.mu.Unlock()
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrExhausted, "capacity", "this host runs its maximum of %d sandboxes", m.cfg.MaxSandboxes)
	}
	m.entries[id] = e
	m.indexLocked(e.sb)
	m.mu.Unlock()

	// The pending record goes to disk before the driver builds anything, so
	// a crash mid-create leaves a record that reconcile resolves instead of
	// an orphan.
	if err := m.saveRecord(ctx, e.sb); err != nil {
		m.forget(e)
		return sandbox.Sandbox{}, err
	}
	crashpoint.Hit("node/create/recorded")
	m.emit(ctx, Event{Type: EventCreated, Sandbox: clone(e.sb)})

	log := m.log.With("sandbox", id)
	var phases sandbox.Phases
	dctx, cancel := driverContext(sandbox.WithPhases(ctx, &phases))
	defer cancel()
	spec := runtime.Spec{
		ID:        id,
		Image:     e.sb.Image,
		Rootfs:    rootfs,
		Resources: req.Resources,
		Hostname:  id,
		User:      e.sb.ImageUser,
	}
	client, err := m.boot(dctx, e, spec, req.NetworkPolicy, req.Volumes)
	if err == nil && req.Source != nil {
		var info *sandbox.SourceInfo
		// Not dctx: a fetch may take longer than a driver call (populate
		// bounds it itself).
		step := time.Now()
		info, err = m.populate(ctx, e, client, req.Source)
		phases.Source = time.Since(step)
		if err == nil {
			m.update(e, func(sb *sandbox.Sandbox) { sb.Source = info })
		}
	}
	phases.Total = time.Since(start)
	if err != nil {
		log.Error("create sandbox failed", "err", err)
		m.unboot(ctx, drv, id, client)
		sb, terr := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
			sb.Error = "create: " + err.Error()
			sb.StoppedAt = m.now()
			sb.ExpiresAt = time.Time{}
		})
		m.emit(ctx, Event{Type: EventFailed, Sandbox: sb, Reason: "create"})
		return sb, errors.Join(fmt.Errorf("node: create sandbox %s: %w", id, err), terr)
	}

	sb, err := m.transition(e, sandbox.Running, client, func(sb *sandbox.Sandbox) {
		sb.StartedAt = m.now()
		if pool == "" {
			sb.ExpiresAt = sb.StartedAt.Add(req.Timeout)
		}
	})
	if err != nil {
		return sb, err
	}
	m.emit(ctx, Event{Type: EventStarted, Sandbox: sb})
	log.Info("sandbox running", "expiresAt", sb.ExpiresAt)
	log.Debug("create phases", phases.LogAttrs()...)
	m.observePhases(phases)
	return sb, nil
}

// Capacity reports this host's pending and running sandboxes and the most
// it runs at once (Config.MaxSandboxes): admission's host limit.
func (m *Manager) Capacity() (active, max int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.active), m.cfg.MaxSandboxes
}

// boot gives a pending sandbox its network and volumes and has the driver
// start it; the agent's user is recorded. On error the caller calls unboot.
// The phases it times go to the Phases in dctx, if any (a create's).
func (m *Manager) boot(dctx context.Context, e *entry, spec runtime.Spec, policy *sandbox.NetworkPolicy, vols []sandbox.VolumeMount) (*agent.Client, error) {
	phases := sandbox.PhasesFrom(dctx)
	e.mu.Lock()
	drv := m.driverOf(e.sb)
	e.mu.Unlock()
	step := time.Now()
	if ownNetwork(drv) {
		// The driver's network, its egress rules (see network.go).
		spec.Egress = policy
	} else {
		nw, err := m.setupNetwork(dctx, e, policy)
		if err != nil {
			return nil, err
		}
		if nw != nil {
			spec.Network = &runtime.NetworkSpec{NSPath: nw.NSPath, DNS: nw.DNS}
		}
	}
	phases.Network = time.Since(step)
	crashpoint.Hit("node/create/after-network")
	step = time.Now()
	err := m.prepareVolumes(dctx, e, &spec, vols)
	phases.Volumes = time.Since(step)
	if err != nil {
		return nil, err
	}
	client, err := drv.Create(dctx, spec)
	crashpoint.Hit("node/create/after-driver")
	if err != nil {
		return nil, err
	}
	if a, ok := drv.(runtime.Addresser); ok {
		if err := m.recordAddress(dctx, e, a, spec.ID); err != nil {
			return client, err
		}
	}
	step = time.Now()
	err = m.adoptUser(dctx, e, client)
	phases.User = time.Since(step)
	if err != nil {
		return client, err
	}
	return client, nil
}

// unboot undoes a boot on drv that failed at any step (client may be nil).
func (m *Manager) unboot(ctx context.Context, drv runtime.Driver, id string, client *agent.Client) {
	if client != nil {
		client.Close()
	}
	// A fresh budget for the clean-up: a long populate may have used up
	// the create's, and a Destroy cut short would leak the sandbox.
	dctx, cancel := driverContext(ctx)
	defer cancel()
	// The driver promises to leave nothing behind on error; Destroy
	// makes sure, since a leak here would outlive the record.
	if derr := drv.Destroy(dctx, id); derr != nil {
		m.log.Error("clean up failed sandbox", "sandbox", id, "err", derr)
		return
	}
	// Only once nothing of the sandbox runs in the namespace.
	m.teardownNetwork(dctx, id)
	m.releaseVolumes(dctx, id)
}

// Get returns a copy of one sandbox's record.
func (m *Manager) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	sb, _, gone := e.snapshot()
	if gone {
		return sandbox.Sandbox{}, notFound(id)
	}
	return sb, nil
}

// List returns a page of sandboxes ordered by CreatedAt then ID, and the
// cursor of the next page ("" on the last one).
func (m *Manager) List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = defaultListLimit
	case limit < 0:
		return nil, "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_limit", "limit must not be negative, got %d", limit)
	case limit > maxListLimit:
		limit = maxListLimit
	}
	switch opts.State {
	case "", sandbox.Pending, sandbox.Running, sandbox.Stopping, sandbox.Stopped, sandbox.Failed, sandbox.Paused:
	default:
		return nil, "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_state", "unknown state %q", opts.State)
	}
	var after *cursor
	if opts.Cursor != "" {
		c, err := decodeCursor(opts.Cursor)
		if err != nil {
			return nil, "", err
		}
		after = &c
	}

	// With AllReplicas, the other replicas' sandboxes too: one filter,
	// one order, one cursor over both.
	var peers []sandbox.Sandbox
	if opts.AllReplicas {
		var err error
		if peers, err = m.peerSandboxes(ctx); err != nil {
			return nil, "", err
		}
	}
	m.mu.Lock()
	ents := slices.Collect(maps.Values(m.entries))
	m.mu.Unlock()

	all := make([]sandbox.Sandbox, 0, len(ents)+len(peers))
	keep := func(sb sandbox.Sandbox) {
		// An idle pool sandbox is no team's and in no list (see warm.go).
		if sb.Pool != "" || (opts.State != "" && sb.State != opts.State) || (opts.TeamID != "" && sb.TeamID != opts.TeamID) ||
			!sandbox.MatchLabels(sb.Labels, opts.Labels) {
			return
		}
		if after != nil && !after.before(sb) {
			return
		}
		all = append(all, sb)
	}
	for _, e := range ents {
		if sb, _, gone := e.snapshot(); !gone {
			keep(sb)
		}
	}
	for _, sb := range peers {
		// One moving here (taken over) is listed once, as this node's.
		m.mu.Lock()
		_, local := m.entries[sb.ID]
		m.mu.Unlock()
		if !local {
			keep(sb)
		}
	}
	slices.SortFunc(all, func(a, b sandbox.Sandbox) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(all) <= limit {
		return all, "", nil
	}
	page := all[:limit:limit]
	last := page[len(page)-1]
	return page, cursor{createdAt: last.CreatedAt.UnixNano(), id: last.ID}.encode(), nil
}

// Stop stops a sandbox and blocks until it is stopped. Stopping a sandbox
// that is already stopped or failed returns its record unchanged.
func (m *Manager) Stop(ctx context.Context, id string) (sandbox.Sandbox, error) {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	if gone {
		return sandbox.Sandbox{}, notFound(id)
	}
	switch sb.State {
	case sandbox.Stopped, sandbox.Failed:
		return sb, nil
	case sandbox.Paused:
		return m.stopPaused(e)
	}
	return m.stopLocked(ctx, e, "requested", "")
}

// stopLocked moves a sandbox through stopping to stopped. The caller holds
// e.op. why, when set, is kept as the stopped record's Error: what ended a
// sandbox nobody stopped (liveness.go).
func (m *Manager) stopLocked(ctx context.Context, e *entry, reason, why string) (sandbox.Sandbox, error) {
	// Read while the agent still answers: stopping drops its client.
	lw := m.collectLastWords(ctx, e)
	sb, err := m.transition(e, sandbox.Stopping, nil, nil)
	if err != nil {
		return sb, fmt.Errorf("node: stop sandbox %s: %w", sb.ID, err)
	}
	crashpoint.Hit("node/stop/stopping")
	log := m.log.With("sandbox", sb.ID)
	dctx, cancel := driverContext(ctx)
	defer cancel()
	if err := m.driverOf(sb).Stop(dctx, sb.ID); err != nil {
		log.Error("stop sandbox failed", "reason", reason, "err", err)
		failed, terr := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
			sb.Error = "stop: " + err.Error()
			sb.StoppedAt = m.now()
		})
		m.recordLastWords(ctx, failed, lw)
		m.emit(ctx, Event{Type: EventFailed, Sandbox: failed, Reason: reason})
		return failed, errors.Join(fmt.Errorf("node: stop sandbox %s: %w", sb.ID, err), terr)
	}
	crashpoint.Hit("node/stop/after-driver")
	m.teardownNetwork(dctx, sb.ID)
	m.releaseVolumes(dctx, sb.ID)
	sb, err = m.transition(e, sandbox.Stopped, nil, func(sb *sandbox.Sandbox) {
		sb.StoppedAt = m.now()
		if why != "" {
			sb.Error = why
		}
	})
	if err != nil {
		return sb, fmt.Errorf("node: stop sandbox %s: %w", sb.ID, err)
	}
	m.recordLastWords(ctx, sb, lw)
	m.emitStopped(ctx, sb, reason, lw)
	log.Info("sandbox stopped", "reason", reason)
	return sb, nil
}

// Delete stops the sandbox if needed, destroys everything of it through the
// driver and forgets its record.
func (m *Manager) Delete(ctx context.Context, id string) error {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return err
	}
	return m.delete(ctx, e, id, nil)
}

// delete is Delete of an entry found by lookup or lookupAny; check, when
// given, may refuse it once the entry is locked.
func (m *Manager) delete(ctx context.Context, e *entry, id string, check func(sandbox.Sandbox) error) error {
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	if gone {
		return notFound(id)
	}
	if check != nil {
		if err := check(sb); err != nil {
			return err
		}
	}
	var lw lastWords
	if !sb.State.Terminal() {
		// An idle pool sandbox ran nothing of anyone's; a paused run's
		// figures are recorded already.
		if sb.Pool == "" && sb.State != sandbox.Paused {
			lw = m.collectLastWords(ctx, e)
		}
		// Destroy stops it too; going through stopping keeps the record
		// truthful (and the capacity slot freed) should Destroy fail.
		if _, err := m.transition(e, sandbox.Stopping, nil, nil); err != nil {
			return fmt.Errorf("node: delete sandbox %s: %w", id, err)
		}
	}
	dctx, cancel := driverContext(ctx)
	defer cancel()
	if err := m.driverOf(sb).Destroy(dctx, id); err != nil {
		m.log.Error("destroy sandbox failed", "sandbox", id, "err", err)
		if !sb.State.Terminal() {
			_, _ = m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
				sb.Error = "destroy: " + err.Error()
				sb.StoppedAt = m.now()
			})
		}
		return fmt.Errorf("node: delete sandbox %s: %w", id, err)
	}
	crashpoint.Hit("node/delete/after-driver")
	m.teardownNetwork(dctx, id)
	m.releaseVolumes(dctx, id)
	final := clone(sb)
	if !sb.State.Terminal() {
		// The run ends here: the record is about to go, so stamp it
		// for the usage figures without saving it.
		if final.StoppedAt.IsZero() {
			final.StoppedAt = m.now()
		}
		m.recordLastWords(ctx, final, lw)
		final.State = sandbox.Stopped
		m.emitStopped(ctx, final, "deleted", lw)
	}
	if err := m.removeRecord(ctx, id); err != nil {
		// The sandbox is gone from the host; a stale record would only
		// come back as a failed sandbox after a restart. Say so and go on.
		m.log.Error("remove sandbox record", "sandbox", id, "err", err)
	}
	m.forget(e)
	if sb.Pause != nil {
		// Its own snapshot, made by the pause, goes with it.
		if err := m.DeleteSnapshot(ctx, sb.Pause.Snapshot); err != nil {
			m.log.Error("delete pause snapshot", "sandbox", id, "snapshot", sb.Pause.Snapshot, "err", err)
		}
	}
	m.emit(ctx, Event{Type: EventDeleted, Sandbox: final})
	m.log.Info("sandbox deleted", "sandbox", id)
	return nil
}

// lockRunning finds a running sandbox and takes its lifecycle lock for the
// caller, who must call unlock. For any other state it returns the record
// (so callers can answer with it) and ErrNotRunning, or ErrNotFound.
func (m *Manager) lockRunning(ctx context.Context, id string) (e *entry, sb sandbox.Sandbox, unlock func(), err error) {
	e, err = m.lookup(ctx, id)
	if err != nil {
		return nil, sandbox.Sandbox{}, nil, err
	}
	e.op.Lock()
	sb, _, gone := e.snapshot()
	switch {
	case gone:
		e.op.Unlock()
		return nil, sandbox.Sandbox{}, nil, notFound(id)
	case sb.State != sandbox.Running:
		e.op.Unlock()
		return nil, sb, nil, notRunning(sb)
	}
	return e, sb, e.op.Unlock, nil
}

// ExtendTimeout moves a running sandbox's deadline by `by`, within the
// host's maximum lifetime counted from its start (a resume starts it again).
func (m *Manager) ExtendTimeout(ctx context.Context, id string, by time.Duration) (sandbox.Sandbox, error) {
	if by <= 0 {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "extension must be positive, got %s", by)
	}
	e, sb, unlock, err := m.lockRunning(ctx, id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	expires := sb.ExpiresAt.Add(by)
	// Counted from the last (re)start: a resumed sandbox's paused time
	// does not count.
	start := sb.CreatedAt
	if sb.StartedAt.After(start) {
		start = sb.StartedAt
	}
	if life := expires.Sub(start); life > m.cfg.MaxTimeout {
		return sb, sandbox.Errorf(sandbox.ErrInvalid, "timeout_exceeds_max",
			"extending by %s makes the lifetime %s, over the maximum of %s", by, life.Round(time.Second), m.cfg.MaxTimeout)
	}
	return m.update(e, func(sb *sandbox.Sandbox) { sb.ExpiresAt = expires }), nil
}

// SetTimeout makes a running sandbox end d from now, earlier or later than
// it would, within the host's maximum lifetime counted from its start.
func (m *Manager) SetTimeout(ctx context.Context, id string, d time.Duration) (sandbox.Sandbox, error) {
	if d <= 0 {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeout must be positive, got %s", d)
	}
	e, sb, unlock, err := m.lockRunning(ctx, id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	expires := m.now().Add(d)
	start := sb.CreatedAt
	if sb.StartedAt.After(start) {
		start = sb.StartedAt
	}
	if life := expires.Sub(start); life > m.cfg.MaxTimeout {
		return sb, sandbox.Errorf(sandbox.ErrInvalid, "timeout_exceeds_max",
			"a timeout of %s makes the lifetime %s, over the maximum of %s", d, life.Round(time.Second), m.cfg.MaxTimeout)
	}
	return m.update(e, func(sb *sandbox.Sandbox) { sb.ExpiresAt = expires }), nil
}

// SetLabels replaces a sandbox's labels, in any state but deleted.
func (m *Manager) SetLabels(ctx context.Context, id string, labels map[string]string) (sandbox.Sandbox, error) {
	if err := sandbox.ValidateLabels(labels); err != nil {
		return sandbox.Sandbox{}, err
	}
	e, err := m.lookup(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	if _, _, gone := e.snapshot(); gone {
		return sandbox.Sandbox{}, notFound(id)
	}
	sb := m.update(e, func(sb *sandbox.Sandbox) { sb.Labels = maps.Clone(labels) })
	m.emit(ctx, Event{Type: EventLabelsChanged, Sandbox: sb})
	return sb, nil
}

// Agent returns the client of a running sandbox's agent.
func (m *Manager) Agent(ctx context.Context, id string) (*agent.Client, error) {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	sb, client, gone := e.snapshot()
	switch {
	case gone:
		return nil, notFound(id)
	case sb.State != sandbox.Running || client == nil:
		return nil, notRunning(sb)
	}
	e.touch(m.cfg.Now())
	return client, nil
}

// Touch records activity on a sandbox (a request proxied to one of its
// ports). It never blocks on a lifecycle operation, so the proxy can call
// it on every request; unknown ids are ignored.
func (m *Manager) Touch(id string) {
	m.mu.Lock()
	e := m.entries[id]
	m.mu.Unlock()
	if e != nil {
		e.touch(m.cfg.Now())
	}
}

func (e *entry) touch(now time.Time) {
	e.mu.Lock()
	if e.sb.State == sandbox.Running {
		e.sb.LastActivityAt = now
	}
	e.mu.Unlock()
}

// Stats returns a running sandbox's resource figures.
func (m *Manager) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return runtime.Stats{}, err
	}
	sb, _, gone := e.snapshot()
	switch {
	case gone:
		return runtime.Stats{}, notFound(id)
	case sb.State != sandbox.Running:
		return runtime.Stats{}, notRunning(sb)
	}
	st, err := m.driverOf(sb).Stats(ctx, id)
	if err != nil {
		return runtime.Stats{}, fmt.Errorf("node: stats of sandbox %s: %w", id, err)
	}
	// This host's veth counts the bytes of a network the node set up; a
	// driver with a network of its own counts them itself.
	if m.hostNetwork(sb) {
		rx, tx, err := m.cfg.Network.Stats(id)
		if err != nil {
			return runtime.Stats{}, fmt.Errorf("node: network stats of sandbox %s: %w", id, err)
		}
		st.NetworkRxBytes, st.NetworkTxBytes = rx, tx
	}
	return st, nil
}

// transition moves e to state to, applies fn to the record and saves it.
// The agent client is kept only while the sandbox runs: moving to running
// installs client, any other move drops (and closes) the current one. The
// caller holds e.op. An illegal move changes nothing and returns a
// *sandbox.TransitionError.
func (m *Manager) transition(e *entry, to sandbox.State, client *agent.Client, fn func(*sandbox.Sandbox)) (sandbox.Sandbox, error) {
	e.mu.Lock()
	if err := e.sb.State.Transition(to); err != nil {
		sb := clone(e.sb)
		e.mu.Unlock()
		return sb, err
	}
	e.sb.State = to
	if fn != nil {
		fn(&e.sb)
	}
	if to != sandbox.Running {
		client = nil
	}
	old := e.client
	e.client = client
	sb := clone(e.sb)
	e.mu.Unlock()
	if old != nil && old != client {
		old.Close()
	}
	m.commit(sb)
	return sb, nil
}

// update changes e's record without a state change and saves it. The caller
// holds e.op.
func (m *Manager) update(e *entry, fn func(*sandbox.Sandbox)) sandbox.Sandbox {
	e.mu.Lock()
	fn(&e.sb)
	sb := clone(e.sb)
	e.mu.Unlock()
	m.commit(sb)
	return sb
}

// commit re-indexes and saves a changed record. A failed save is logged,
// not returned: the sandbox has already changed on the host, and a stale
// record is resolved by reconcile after a restart.
func (m *Manager) commit(sb sandbox.Sandbox) {
	m.index(sb)
	if err := m.saveRecord(context.Background(), sb); err != nil {
		m.log.Error("save sandbox record", "sandbox", sb.ID, "state", sb.State, "err", err)
	}
}

// saveRecord saves sb, not cut short by the end of the request that
// changed it (the change happened), but bounded in time.
func (m *Manager) saveRecord(ctx context.Context, sb sandbox.Sandbox) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordsTimeout)
	defer cancel()
	return m.store.Save(ctx, sb)
}

// removeRecord removes a record, as saveRecord saves one.
func (m *Manager) removeRecord(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordsTimeout)
	defer cancel()
	return m.store.Remove(ctx, id)
}

// index updates the capacity count and the timeout deadlines for sb and
// wakes the timeout loop.
func (m *Manager) index(sb sandbox.Sandbox) {
	m.mu.Lock()
	m.indexLocked(sb)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// indexLocked is index without the wake-up; the caller holds m.mu.
func (m *Manager) indexLocked(sb sandbox.Sandbox) {
	switch sb.State {
	case sandbox.Pending, sandbox.Running:
		m.active[sb.ID] = struct{}{}
	default:
		delete(m.active, sb.ID)
	}
	if sb.State == sandbox.Running && !sb.ExpiresAt.IsZero() {
		m.deadlines[sb.ID] = sb.ExpiresAt
	} else {
		delete(m.deadlines, sb.ID)
	}
	if at, ok := m.collectAt(sb); ok {
		m.collect[sb.ID] = at
	} else {
		delete(m.collect, sb.ID)
	}
}

// forget drops e from the node. The caller holds e.op.
func (m *Manager) forget(e *entry) {
	e.mu.Lock()
	e.gone = true
	id, client := e.sb.ID, e.client
	e.client = nil
	e.mu.Unlock()
	if client != nil {
		client.Close()
	}
	m.mu.Lock()
	delete(m.entries, id)
	delete(m.active, id)
	delete(m.deadlines, id)
	delete(m.collect, id)
	m.mu.Unlock()
}

// lookup finds a sandbox of the node's API: an idle pool sandbox is not
// found, as if it did not exist (warm.go reaches those with lookupAny).
// One this node does not have may be another replica's: then the error is
// a *sandbox.ElsewhereError (see peers.go).
func (m *Manager) lookup(ctx context.Context, id string) (*entry, error) {
	e, err := m.lookupAny(id)
	if err != nil {
		return nil, m.elsewhere(ctx, id, err)
	}
	e.mu.Lock()
	pooled := e.sb.Pool != ""
	e.mu.Unlock()
	if pooled {
		return nil, notFound(id)
	}
	return e, nil
}

// lookupAny finds any sandbox of the node, idle pool sandboxes included.
func (m *Manager) lookupAny(id string) (*entry, error) {
	if !sandbox.ValidID(id) {
		return nil, notFound(id)
	}
	m.mu.Lock()
	e, ok := m.entries[id]
	m.mu.Unlock()
	if !ok {
		return nil, notFound(id)
	}
	return e, nil
}

// now is the node's clock in UTC, without a monotonic reading, so that
// times compare the same before and after a round trip through disk.
func (m *Manager) now() time.Time { return m.cfg.Now().UTC() }

// driverContext gives driver work its own deadline, detached from the
// request that asked for it: a client hanging up must not leave a sandbox
// half-built or half-stopped.
func driverContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), driverTimeout)
}

// errNoDiskCap refuses a disk cap the driver cannot enforce: a sandbox
// must not run uncapped because the host lacks a tool.
var errNoDiskCap = sandbox.Errorf(sandbox.ErrUnsupported, "sandbox_disk_unsupported",
	"this host cannot cap sandbox disks (paddock doctor says why); the operator may run paddock with --sandbox-disk 0 to accept uncapped writable layers")

func notFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
}

func notRunning(sb sandbox.Sandbox) error {
	return sandbox.Errorf(sandbox.ErrNotRunning, "sandbox_not_running", "sandbox %s is %s, not running", sb.ID, sb.State)
}

// idEncoding is lowercase base32 without padding: 10 random bytes make 16
// characters from [a-z2-7], within sandbox.ValidID's alphabet.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("node: generate sandbox id: %w", err)
	}
	return "sb-" + idEncoding.EncodeToString(b[:]), nil
}

// cursor is a position in List's order: the last item of a page.
type cursor struct {
	createdAt int64 // UnixNano
	id        string
}

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.createdAt, 10) + ":" + c.id))
}

// before reports whether the cursor's position comes before sb.
func (c cursor) before(sb sandbox.Sandbox) bool {
	t := sb.CreatedAt.UnixNano()
	return c.createdAt < t || (c.createdAt == t && c.id < sb.ID)
}

func decodeCursor(s string) (cursor, error) {
	bad := sandbox.Errorf(sandbox.ErrInvalid, "invalid_cursor", "invalid cursor %q", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	ts, id, ok := strings.Cut(string(raw), ":")
	if !ok || !sandbox.ValidID(id) {
		return cursor{}, bad
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return cursor{}, bad
	}
	return cursor{createdAt: n, id: id}, nil
}
