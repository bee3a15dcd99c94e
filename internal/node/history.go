package node

import (
	"context"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// History keeps what outlives a sandbox: its commands, with their exits,
// and its resource use. It has one writer, the node: Exec records each
// command as it starts (right after its answer, in order: started.go),
// and every stop path (API stop, timeout, delete of
// a running sandbox, deactivation, which deletes) records the exits and
// the usage; internal/daemon implements it over the store.
type History interface {
	// Started records a command Exec just started in sb, with its exit
	// when it already finished (a waited command). A command recorded
	// already (by Finished, racing a stop) is no error.
	Started(ctx context.Context, sb sandbox.Sandbox, cmd agent.Command) error
	// Finished records the commands of sb as its agent listed them right
	// before the stop. A command still running then is killed by the stop
	// and its exit is never known.
	Finished(ctx context.Context, sb sandbox.Sandbox, cmds []agent.Command) error
	// Used records one run of a sandbox.
	Used(ctx context.Context, u Usage) error
}

// Usage is the resource use of one sandbox run, [Start, End).
type Usage struct {
	SandboxID string
	TeamID    string
	ProjectID string
	Start     time.Time // StartedAt
	End       time.Time // StoppedAt
	// CPUSeconds is the cgroup's CPU time read right before the stop.
	CPUSeconds float64
	// MemoryMBHours is provisioned memory: Resources.MemoryMB × hours run.
	MemoryMBHours float64
	// Network bytes are the veth's counters read right before the stop;
	// zero for loopback-only sandboxes.
	NetRxBytes, NetTxBytes uint64
	// MemoryMB is the sandbox's provisioned memory; MemoryPeakBytes the
	// cgroup's peak, read with the counters.
	MemoryMB        int64
	MemoryPeakBytes uint64
	// CountersOK: CPUSeconds, the network bytes and MemoryPeakBytes were
	// read (else they are zero, not measured).
	CountersOK bool
}

// historyTimeout bounds asking the agent for its commands and the cgroup
// and veth for their counters before a stop: a hung agent must not hold up
// the stop for long.
const historyTimeout = 5 * time.Second

// lastWords is what the node reads of a sandbox right before it stops it.
type lastWords struct {
	cmds     []agent.Command
	cmdsOK   bool
	stats    runtime.Stats
	statsOK  bool
	recorded bool // history was asked for at all
}

// collectLastWords reads a running sandbox's command list and counters for
// History. The caller holds e.op; sb is running. Failures are logged and
// leave the figures out: a stop never fails for want of history.
func (m *Manager) collectLastWords(ctx context.Context, e *entry) lastWords {
	if m.cfg.History == nil {
		return lastWords{}
	}
	sb, client, _ := e.snapshot()
	lw := lastWords{recorded: true}
	if sb.State != sandbox.Running {
		return lw
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyTimeout)
	defer cancel()
	log := m.log.With("sandbox", sb.ID)
	if client != nil {
		cmds, err := client.List(ctx)
		if err != nil {
			log.Warn("list commands before stop", "err", err)
		} else {
			lw.cmds, lw.cmdsOK = cmds, true
		}
	}
	st, err := m.driverOf(sb).Stats(ctx, sb.ID)
	if err != nil {
		log.Warn("read stats before stop", "err", err)
		return lw
	}
	if m.hostNetwork(sb) {
		rx, tx, err := m.cfg.Network.Stats(sb.ID)
		if err != nil {
			log.Warn("read network stats before stop", "err", err)
		} else {
			st.NetworkRxBytes, st.NetworkTxBytes = rx, tx
		}
	}
	lw.stats, lw.statsOK = st, true
	return lw
}

// recordLastWords hands what collectLastWords read to History, once sb
// (its final record) has stopped.
func (m *Manager) recordLastWords(ctx context.Context, sb sandbox.Sandbox, lw lastWords) {
	if !lw.recorded {
		return
	}
	// The starts Exec handed over first, so that a stopped sandbox's
	// history is whole when the API can first read it.
	m.startLog.flush()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordsTimeout)
	defer cancel()
	log := m.log.With("sandbox", sb.ID)
	if lw.cmdsOK {
		if err := m.cfg.History.Finished(ctx, sb, lw.cmds); err != nil {
			log.Error("record command history", "err", err)
		}
	}
	if u, ok := usageOf(sb, lw); ok {
		if err := m.cfg.History.Used(ctx, u); err != nil {
			log.Error("record usage", "err", err)
		}
	}
}

// usageOf computes the usage of sb's run; false for a sandbox that never
// ran. Without counters (the cgroup could not be read) CPU and network
// are zero, but the run and its provisioned memory are still recorded.
func usageOf(sb sandbox.Sandbox, lw lastWords) (Usage, bool) {
	if sb.StartedAt.IsZero() || sb.StoppedAt.IsZero() || sb.StoppedAt.Before(sb.StartedAt) {
		return Usage{}, false
	}
	hours := sb.StoppedAt.Sub(sb.StartedAt).Hours()
	u := Usage{
		SandboxID:     sb.ID,
		TeamID:        sb.TeamID,
		ProjectID:     sb.ProjectID,
		Start:         sb.StartedAt,
		End:           sb.StoppedAt,
		MemoryMBHours: float64(sb.Resources.MemoryMB) * hours,
		MemoryMB:      sb.Resources.MemoryMB,
	}
	if lw.statsOK {
		u.CPUSeconds = lw.stats.CPUUsage.Seconds()
		u.NetRxBytes, u.NetTxBytes = lw.stats.NetworkRxBytes, lw.stats.NetworkTxBytes
		u.MemoryPeakBytes, u.CountersOK = lw.stats.MemoryPeak, true
	}
	return u, true
}
