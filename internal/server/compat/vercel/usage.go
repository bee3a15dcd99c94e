package vercel

import (
	"context"
	"errors"

	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Usage reads the usage paddock's meter booked for a sandbox, as
// GET /api/v1/usage?sandboxId= does; *metering.Meter implements it.
type Usage interface {
	Query(ctx context.Context, q metering.Query) (metering.Page, error)
}

var _ Usage = (*metering.Meter)(nil)

// maxUsagePages bounds the pages of one sandbox's usage read: an hour a
// row, within the meter's raw retention (two days by default), fits one.
const maxUsagePages = 4

// usageOfStats is a running sandbox's counters as the SDK reports them.
// The node reads network bytes on the host's end of the sandbox's veth,
// so its rx is what went into the sandbox.
func usageOfStats(st runtime.Stats) *SessionUsage {
	return &SessionUsage{ActiveCPUMs: st.CPUUsage.Milliseconds(), IngressBytes: st.NetworkRxBytes, EgressBytes: st.NetworkTxBytes}
}

// sessionUsage is what session l of team used: a running session's
// counters now (what the meter samples), else what was recorded when this
// API stopped it, else the meter's record of its sandbox (a session that
// ended on its own). nil when none is known: the SDK's fields are optional.
func (h *Handler) sessionUsage(ctx context.Context, team string, l liveSession) *SessionUsage {
	if l.found && l.sb.State == sandbox.Running {
		st, err := h.sb.Stats(ctx, l.sb.ID)
		if err == nil {
			return usageOfStats(st)
		}
		if !errors.Is(err, sandbox.ErrNotRunning) && !errors.Is(err, sandbox.ErrNotFound) {
			h.log.Warn("vercel compat: session usage", "sandbox", l.sb.ID, "err", err)
		}
	}
	if l.rec.Last != nil && l.rec.Last.Usage != nil {
		return l.rec.Last.Usage
	}
	if l.found && l.sb.State == sandbox.Pending {
		return nil
	}
	return h.meteredUsage(ctx, team, l.rec.ID)
}

// meteredUsage sums what the meter booked for sandbox id of team; nil
// without a meter or a record.
func (h *Handler) meteredUsage(ctx context.Context, team, id string) *SessionUsage {
	if h.meter == nil {
		return nil
	}
	q := metering.Query{TeamID: team, SandboxID: id, Granularity: metering.Day, Limit: metering.MaxLimit}
	var sum metering.Totals
	rows := 0
	for range maxUsagePages {
		page, err := h.meter.Query(ctx, q)
		if err != nil {
			h.log.Warn("vercel compat: metered usage", "sandbox", id, "err", err)
			return nil
		}
		for _, r := range page.Rows {
			sum.CPUSeconds += r.Totals.CPUSeconds
			sum.NetRxBytes += r.Totals.NetRxBytes
			sum.NetTxBytes += r.Totals.NetTxBytes
		}
		rows += len(page.Rows)
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	if rows == 0 {
		return nil
	}
	return &SessionUsage{ActiveCPUMs: int64(sum.CPUSeconds * 1000), IngressBytes: sum.NetRxBytes, EgressBytes: sum.NetTxBytes}
}

// stoppedUsage is what a session used, once stop has stopped it: the
// meter's booking (made by the stop, from the counters read right before
// it), else before, the counters this API read just before the stop.
func (h *Handler) stoppedUsage(ctx context.Context, team, id string, before *SessionUsage) *SessionUsage {
	if u := h.meteredUsage(ctx, team, id); u != nil {
		return u
	}
	return before
}

// wireTransfer is a session's network bytes.
type wireTransfer struct {
	Ingress uint64 `json:"ingress"`
	Egress  uint64 `json:"egress"`
}

// setUsage fills the session's usage fields from u.
func (ws *wireSession) setUsage(u *SessionUsage) {
	if u == nil {
		return
	}
	cpu := u.ActiveCPUMs
	ws.ActiveCPUDurationMs = &cpu
	ws.NetworkTransfer = &wireTransfer{Ingress: u.IngressBytes, Egress: u.EgressBytes}
}
