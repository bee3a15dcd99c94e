package metering

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// point is the end of a sandbox's chain of samples: when, and its
// cumulative counters then.
type point struct {
	at     time.Time
	cpu    float64
	rx, tx uint64
	// first: nothing is booked yet, so the next sample counts the creation.
	first bool
}

// counters are a sandbox's cumulative figures read at one moment.
type counters struct {
	cpu    float64
	rx, tx uint64
	peak   uint64
}

// SampleSandboxes books the interval since the last sample of every
// running sandbox of this host.
func (m *Meter) SampleSandboxes(ctx context.Context) error {
	if m.cfg.Sandboxes == nil {
		return nil
	}
	var running []sandbox.Sandbox
	opts := sandbox.ListOptions{State: sandbox.Running, Limit: 500}
	for {
		page, next, err := m.cfg.Sandboxes.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list running sandboxes: %w", err)
		}
		running = append(running, page...)
		if next == "" {
			break
		}
		opts.Cursor = next
	}
	seen := make(map[string]bool, len(running))
	var errs []error
	for _, sb := range running {
		seen[sb.ID] = true
		if sb.StartedAt.IsZero() {
			continue
		}
		// The sample ends when its counters were read, before the read: a
		// stop that reads the counters after them always stops later.
		at := m.now()
		st, err := m.cfg.Sandboxes.Stats(ctx, sb.ID)
		if err != nil {
			// Stopped since the list: its stop books the last interval.
			m.log.Debug("read sandbox stats", "sandbox", sb.ID, "err", err)
			continue
		}
		c := &counters{cpu: st.CPUUsage.Seconds(), rx: st.NetworkRxBytes, tx: st.NetworkTxBytes, peak: st.MemoryPeak}
		if err := m.book(ctx, sb, at, c, false); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", sb.ID, err))
		}
	}
	// Forget what no longer runs: its chain, if it ever runs on, is in the
	// store.
	m.mu.Lock()
	for id := range m.points {
		if !seen[id] {
			delete(m.points, id)
		}
	}
	for id := range m.ended {
		if !seen[id] {
			delete(m.ended, id)
		}
	}
	m.mu.Unlock()
	return errors.Join(errs...)
}

// Stopped describes a sandbox run that has just ended, with the counters
// read right before its stop (node's History.Used).
type Stopped struct {
	SandboxID, TeamID, ProjectID string
	MemoryMB                     int64
	Start, End                   time.Time // StartedAt, StoppedAt
	// CountersOK: the counters below were read; without them nothing past
	// the last sample but provisioned memory is booked.
	CountersOK      bool
	CPUSeconds      float64
	NetRxBytes      uint64
	NetTxBytes      uint64
	MemoryPeakBytes uint64
}

// Final books a stopped sandbox's last interval, up to its stop. Calling
// it again changes nothing.
func (m *Meter) Final(ctx context.Context, s Stopped) error {
	if s.Start.IsZero() || !s.End.After(s.Start) {
		return nil
	}
	sb := sandbox.Sandbox{ID: s.SandboxID, TeamID: s.TeamID, ProjectID: s.ProjectID, StartedAt: s.Start,
		Resources: sandbox.Resources{MemoryMB: s.MemoryMB}}
	var c *counters
	if s.CountersOK {
		c = &counters{cpu: s.CPUSeconds, rx: s.NetRxBytes, tx: s.NetTxBytes, peak: s.MemoryPeakBytes}
	}
	return m.book(ctx, sb, store.Time(s.End), c, true)
}

// book extends sb's chain to end with counters c (nil: unknown, booked as
// no change). final marks the chain ended: the loop books no more of it.
func (m *Meter) book(ctx context.Context, sb sandbox.Sandbox, end time.Time, c *counters, final bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended[sb.ID] {
		return nil
	}
	for attempt := 0; ; attempt++ {
		p, err := m.pointOf(ctx, sb, end, c)
		if err != nil {
			return err
		}
		next := p
		if end.After(p.at) {
			var samples []store.Usage
			samples, next = m.samples(sb, p, end, c)
			err = m.write(ctx, samples)
		}
		if errors.Is(err, sandbox.ErrConflict) && attempt == 0 {
			// Another writer (a retry, a replica, a crash's survivor)
			// booked part of it: read the chain's end again.
			delete(m.points, sb.ID)
			continue
		}
		if err != nil {
			return err
		}
		if final {
			delete(m.points, sb.ID)
			m.ended[sb.ID] = true
		} else {
			m.points[sb.ID] = next
		}
		return nil
	}
}

// write adds samples in order, so that a failure leaves a chain that ends
// at the last one written.
func (m *Meter) write(ctx context.Context, samples []store.Usage) error {
	for _, u := range samples {
		if err := m.cfg.Store.AddUsage(ctx, u); err != nil {
			return fmt.Errorf("record usage sample %s: %w", u.ID, err)
		}
	}
	return nil
}

// pointOf returns the end of sb's chain: in memory, else the stored sample
// that ends last, else the sandbox's start. A chain that should exist but
// was pruned (the sandbox started before the retention horizon, and
// paddock was down past it) restarts at end with the current counters:
// the gap is lost rather than booked twice.
func (m *Meter) pointOf(ctx context.Context, sb sandbox.Sandbox, end time.Time, c *counters) (point, error) {
	if p, ok := m.points[sb.ID]; ok {
		return p, nil
	}
	samples, err := m.cfg.Store.ListUsage(ctx, store.UsageFilter{SandboxID: sb.ID})
	if err != nil {
		return point{}, fmt.Errorf("read the usage of sandbox %s: %w", sb.ID, err)
	}
	var last *store.Usage
	for i := range samples {
		if last == nil || samples[i].End.After(last.End) {
			last = &samples[i]
		}
	}
	start := store.Time(sb.StartedAt)
	switch {
	case last != nil:
		return point{at: last.End, cpu: last.EndCPUSeconds, rx: last.EndNetRxBytes, tx: last.EndNetTxBytes}, nil
	case start.Before(m.horizon(end)):
		p := point{at: end}
		if c != nil {
			p.cpu, p.rx, p.tx = c.cpu, c.rx, c.tx
		}
		m.log.Warn("usage chain of a long-running sandbox was pruned; metering it from now", "sandbox", sb.ID)
		return p, nil
	default:
		return point{at: start, first: true}, nil
	}
}

// samples books [p.at, end) for sb with counters c (nil: unchanged), split
// at hour boundaries, and returns them with the chain's new end.
func (m *Meter) samples(sb sandbox.Sandbox, p point, end time.Time, c *counters) ([]store.Usage, point) {
	next := point{at: end, cpu: p.cpu, rx: p.rx, tx: p.tx}
	var peak uint64
	if c != nil {
		// Counters never go back (a sandbox's cgroup lives once); a reading
		// older than the chain's end (a stop's, racing the loop) adds
		// nothing.
		next.cpu, next.rx, next.tx = max(c.cpu, p.cpu), max(c.rx, p.rx), max(c.tx, p.tx)
		peak = c.peak
	}
	memTotal := float64(sb.Resources.MemoryMB) * end.Sub(p.at).Hours()
	// Book from the floor at the earliest, so no sample lands in an hour
	// already rolled up and pruned.
	from := p.at
	if floor := m.bookingFloor(end); from.Before(floor) && floor.Before(end) {
		from = floor
	}
	span := end.Sub(from)
	var out []store.Usage
	prev := struct {
		frac   float64
		cpu    float64
		rx, tx uint64
	}{0, p.cpu, p.rx, p.tx}
	for a := from; a.Before(end); {
		b := hourEnd(a, end)
		frac := float64(b.Sub(from)) / float64(span)
		cpu, rx, tx := p.cpu+(next.cpu-p.cpu)*frac, p.rx+uint64(float64(next.rx-p.rx)*frac), p.tx+uint64(float64(next.tx-p.tx)*frac)
		if b.Equal(end) {
			cpu, rx, tx = next.cpu, next.rx, next.tx
		}
		id := a
		if len(out) == 0 {
			id = p.at // fixed by the chain, whatever the floor is now
		}
		u := store.Usage{
			ID: fmt.Sprintf("%s/%d", sb.ID, id.UnixMilli()), TeamID: sb.TeamID, ProjectID: sb.ProjectID, SandboxID: sb.ID,
			Start: a, End: b,
			CPUSeconds: cpu - prev.cpu, MemoryMBHours: memTotal * (frac - prev.frac),
			NetRxBytes: rx - prev.rx, NetTxBytes: tx - prev.tx, MemoryPeakBytes: peak,
			EndCPUSeconds: cpu, EndNetRxBytes: rx, EndNetTxBytes: tx,
		}
		if len(out) == 0 && p.first {
			u.Creations = 1
		}
		out = append(out, u)
		prev.frac, prev.cpu, prev.rx, prev.tx = frac, cpu, rx, tx
		a = b
	}
	return out, next
}

// SampleStorage books each team's stored bytes since the last sample: this
// host's (Storage), and, by the Leader only, what the replicas share
// (SharedStorage). Storage is booked while a Meter runs: after a restart,
// or when another replica booked the shared chain meanwhile, a team's
// chain continues from its last sample if that ended at most one Interval
// ago, else from one Interval ago (downtime beyond that is not charged).
// A sample's ID is its chain's prefix and its start, so two replicas
// continuing one shared chain from the same end write one sample.
func (m *Meter) SampleStorage(ctx context.Context) error {
	var errs []error
	if m.cfg.Storage != nil {
		errs = append(errs, m.sampleChain(ctx, m.cfg.Storage, m.storage, m.storagePrefix))
	}
	if m.cfg.SharedStorage != nil {
		if m.leader() {
			errs = append(errs, m.sampleChain(ctx, m.cfg.SharedStorage, m.shared, sharedPrefix))
		} else {
			m.mu.Lock()
			clear(m.shared)
			m.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// sampleChain books src's bytes of each team in the chains whose ends
// are in ends, under prefix(team).
func (m *Meter) sampleChain(ctx context.Context, src Storage, ends map[string]time.Time, prefix func(team string) string) error {
	sizes, err := src.TeamStorage(ctx)
	if err != nil {
		return fmt.Errorf("read team storage: %w", err)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for team := range ends {
		if sizes[team] == 0 {
			delete(ends, team)
		}
	}
	var errs []error
	for team, bytes := range sizes {
		if bytes == 0 || team == "" {
			continue
		}
		start, ok := ends[team]
		if !ok {
			if start, err = m.storageChain(ctx, prefix(team), team, now); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if now.After(start) {
			if err := m.write(ctx, m.storageSamples(prefix(team), team, bytes, start, now)); err != nil && !errors.Is(err, sandbox.ErrConflict) {
				errs = append(errs, err)
				continue
			}
		}
		ends[team] = now
	}
	return errors.Join(errs...)
}

// storageChain is where a team's storage chain under prefix continues
// after a restart (or after another replica booked it).
func (m *Meter) storageChain(ctx context.Context, prefix, team string, now time.Time) (time.Time, error) {
	from := now.Add(-m.cfg.Interval)
	recent, err := m.cfg.Store.ListUsage(ctx, store.UsageFilter{TeamID: team, Since: from.Add(-m.cfg.Interval)})
	if err != nil {
		return time.Time{}, fmt.Errorf("read the storage usage of team %s: %w", team, err)
	}
	for _, u := range recent {
		if u.SandboxID == "" && strings.HasPrefix(u.ID, prefix) && u.End.After(from) {
			from = u.End
		}
	}
	return from, nil
}

func (m *Meter) storageSamples(prefix, team string, bytes uint64, from, end time.Time) []store.Usage {
	if floor := m.bookingFloor(end); from.Before(floor) {
		from = floor
	}
	var out []store.Usage
	for a := from; a.Before(end); {
		b := hourEnd(a, end)
		out = append(out, store.Usage{ID: prefix + strconv.FormatInt(a.UnixMilli(), 10), TeamID: team,
			Start: a, End: b, StorageGBHours: float64(bytes) / 1e9 * b.Sub(a).Hours()})
		a = b
	}
	return out
}

// storagePrefix starts the ids of this host's storage samples of a team:
// every host books the storage it holds.
func (m *Meter) storagePrefix(team string) string {
	return "storage/" + m.cfg.Node + "/" + team + "/"
}

// sharedPrefix starts the ids of a team's samples of SharedStorage: one
// chain, whichever replica books it (a host's start with "storage/").
func sharedPrefix(team string) string { return "storage-shared/" + team + "/" }

// horizon is where RollUp at t prunes: samples that start before it go.
func (m *Meter) horizon(t time.Time) time.Time {
	return t.Add(-m.cfg.RawRetention).Truncate(time.Hour)
}

// bookingFloor is the earliest start a sample booked at t may have: two
// hours past the horizon, so that the hourly RollUp, which seals what
// starts before its own horizon, never seals an hour a sample can still
// land in.
func (m *Meter) bookingFloor(t time.Time) time.Time { return m.horizon(t).Add(2 * time.Hour) }

// hourEnd is the end of the piece of [a, end) in a's hour.
func hourEnd(a, end time.Time) time.Time {
	if b := a.Truncate(time.Hour).Add(time.Hour); b.Before(end) {
		return b
	}
	return end
}
