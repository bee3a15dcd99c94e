// Package metering turns what sandboxes use into usage records, cost and
// budgets. A Meter, owned by the daemon, samples every running sandbox of
// this host at an interval (cgroup CPU time, provisioned memory, peak
// memory, veth bytes), books each team's snapshot and volume storage,
// rolls samples up per team, project and hour before pruning them, prices
// usage with a price table, and enforces each team's monthly budget:
// warning events at thresholds and, with a hard cap, no new work and the
// team's running sandboxes stopped with their state saved.
//
// # No loss, no double count
//
// A sandbox's usage is a chain of samples. Each covers [the last recorded
// point, now) and carries the sandbox's cumulative counters (CPU seconds,
// bytes in and out) at its end; the next sample's deltas are taken from
// there. A sample's ID is the sandbox's ID and the millisecond its
// interval starts, so writing it twice (a retry, two writers racing) is a
// conflict that changes nothing, and the loser reads the chain's end again
// before going on. After a restart the chain of a re-adopted sandbox
// continues from its last stored sample, so the time paddock was down is
// booked once, in the first sample after it. The stop of a sandbox (node's
// History.Used, with the counters read right before the stop) books the
// last interval up to StoppedAt. A sandbox that died while paddock was
// down gets that last interval from its counters if the driver can still
// read them when reconcile stops it (up to the StoppedAt reconcile
// records); if it cannot, nothing past the last sample is booked: at most
// one interval of CPU and network is lost, and provisioned memory is
// booked only up to the last sample.
//
// Samples never cross an hour boundary (an interval is split, its deltas
// shared by time), so each belongs to one hour. A sample that would start
// before the raw retention horizon (paddock down for longer than that) is
// booked from the horizon on, so that no sample lands in an hour already
// rolled up and pruned.
//
// The first sample of a sandbox counts its creation, once, because its ID
// is fixed by the sandbox's StartedAt.
package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Defaults for Config fields left zero.
const (
	DefaultInterval     = time.Minute
	DefaultRawRetention = 48 * time.Hour
	// minRawRetention keeps a few hours of samples: roll-ups seal an hour
	// only once no sample can land in it any more.
	minRawRetention = 3 * time.Hour
	// storeTimeout bounds one round of store work.
	storeTimeout = 30 * time.Second
)

// Sandboxes is what the Meter reads of this host's sandboxes; node's
// Manager satisfies it.
type Sandboxes interface {
	List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error)
	// Stats of a running sandbox, network bytes included.
	Stats(ctx context.Context, id string) (runtime.Stats, error)
}

// Storage reports the bytes each team keeps, by team ID: on this host
// (Config.Storage: volumes' sizes), or together with the other replicas
// sharing the store (Config.SharedStorage: snapshots, which any replica
// serves and pulls).
type Storage interface {
	TeamStorage(ctx context.Context) (map[string]uint64, error)
}

// Store is the part of store.Store the Meter uses.
type Store interface {
	AddUsage(ctx context.Context, u store.Usage) error
	ListUsage(ctx context.Context, f store.UsageFilter) ([]store.Usage, error)
	PruneUsage(ctx context.Context, before time.Time) (int, error)
	PutUsageRollup(ctx context.Context, u store.Usage) error
	ListUsageRollups(ctx context.Context, f store.UsageFilter) ([]store.Usage, error)
	PutBudget(ctx context.Context, b store.Budget) (store.Budget, error)
	GetBudget(ctx context.Context, teamID string) (store.Budget, error)
	ListBudgets(ctx context.Context) ([]store.Budget, error)
	DeleteBudget(ctx context.Context, teamID string) error
}

var _ Store = store.Store(nil)

// Events receives budget warnings. The daemon appends them to the store's
// event records; an event bus can take its place.
type Events interface {
	Publish(ctx context.Context, e store.Event) error
}

// Enforcer stops a team's running work when its hard cap is reached:
// projects deactivated (state saved), other sandboxes stopped (not
// deleted, their writable layer kept).
type Enforcer interface {
	StopTeam(ctx context.Context, teamID, reason string) error
}

// Config configures a Meter.
type Config struct {
	Store     Store     // required
	Sandboxes Sandboxes // nil: no sandbox sampling (a store-only replica)
	Storage   Storage   // this host's, booked by every replica; nil: none
	// SharedStorage is what the replicas keep together, each byte once
	// whichever replicas hold copies (the snapshot directory's
	// snapshots): booked by the replica Leader allows, in one chain per
	// team that any replica continues. Nil: none.
	SharedStorage Storage
	Events        Events   // nil: warnings are only logged
	Enforcer      Enforcer // nil: a hard cap refuses new work but stops nothing
	Prices        Prices
	// Node names this host among those sharing the store: its storage
	// samples are its own ("" for one host).
	Node string
	// Interval between samples (DefaultInterval if 0).
	Interval time.Duration
	// RawRetention is how long samples are kept before they are rolled up
	// per team, project and hour and pruned (DefaultRawRetention if 0; at
	// least 3 h).
	RawRetention time.Duration
	// Leader, when set, gates what runs once among the replicas sharing
	// a store, from the one holding the lease of that work: the hourly
	// roll-up and prune (two at once could overwrite a roll-up with one
	// summed from samples the other was pruning) and the booking of
	// SharedStorage. Sampling and budget checks stay on every replica:
	// each samples and stops its own host's sandboxes, and a budget's
	// warnings are recorded once by compare-and-set. Nil: always.
	Leader func() bool
	Now    func() time.Time // default time.Now
	Logger *slog.Logger     // default slog.Default()
}

func (c *Config) setDefaults() error {
	if c.Store == nil {
		return errors.New("metering: Config.Store is required")
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.RawRetention == 0 {
		c.RawRetention = DefaultRawRetention
	}
	if c.Interval < 0 || c.RawRetention < minRawRetention {
		return fmt.Errorf("metering: Interval must be positive and RawRetention at least %s", minRawRetention)
	}
	if err := c.Prices.Validate(); err != nil {
		return err
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Meter samples, rolls up, prices and enforces budgets. Start runs its
// loop; Close stops it.
type Meter struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below, and is held across a sandbox's sample
	// write, so the loop and a stop never book one interval twice.
	mu      sync.Mutex
	points  map[string]point     // chain ends of running sandboxes, by id
	ended   map[string]bool      // sandboxes whose last interval is booked
	storage map[string]time.Time // end of each team's storage chain of this host
	// shared is the end of each team's chain of SharedStorage, while
	// this replica is the Leader: emptied when it is not, so that one
	// taken up again continues from what the other replicas booked.
	shared map[string]time.Time
	over   map[string]string // teams past a hard cap → why

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Meter; Start runs it.
func New(cfg Config) (*Meter, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Meter{cfg: cfg, log: cfg.Logger.With("component", "metering"),
		points: map[string]point{}, ended: map[string]bool{}, storage: map[string]time.Time{},
		shared: map[string]time.Time{}, over: map[string]string{}}, nil
}

// Start checks budgets once (so a hard cap holds from the first request)
// and starts the loop: sample every Interval, roll up and prune hourly.
func (m *Meter) Start(ctx context.Context) error {
	m.checkBudgets(ctx)
	lctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.loop(lctx) // owned: Close cancels and waits
	return nil
}

// Close stops the loop and waits for it. Sandboxes keep running; the next
// Meter continues their chains from the store.
func (m *Meter) Close() error {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
	return nil
}

func (m *Meter) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	var rolled time.Time
	for {
		// Sample before rolling up: after a long downtime the chains of
		// re-adopted sandboxes continue from samples the roll-up would prune.
		m.Tick(ctx)
		if now := m.now(); now.Sub(rolled) >= time.Hour && m.leader() {
			if err := m.RollUp(ctx); err != nil {
				if ctx.Err() == nil {
					m.log.Warn("roll up usage", "err", err)
				}
			} else {
				rolled = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick takes one round of samples, then checks budgets. The loop calls it
// every Interval; tests call it with a fake clock.
func (m *Meter) Tick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := m.SampleSandboxes(ctx); err != nil && ctx.Err() == nil {
		m.log.Warn("sample sandboxes", "err", err)
	}
	if err := m.SampleStorage(ctx); err != nil && ctx.Err() == nil {
		m.log.Warn("sample storage", "err", err)
	}
	if ctx.Err() == nil {
		m.checkBudgets(ctx)
	}
}

func (m *Meter) now() time.Time { return store.Time(m.cfg.Now()) }

// leader reports whether this replica does the work that runs once.
func (m *Meter) leader() bool { return m.cfg.Leader == nil || m.cfg.Leader() }
