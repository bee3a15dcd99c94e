package sandbox

import (
	"context"
	"log/slog"
	"time"
)

// Phases is how long each step of one create took, for logs and metrics. A
// step that did not run is zero. Steps that overlap are timed each on its
// own, so they may add up to more than Total.
type Phases struct {
	Network time.Duration // the sandbox's network namespace, veth and rules
	Volumes time.Duration // volumes claimed and prepared
	Layer   time.Duration // writable layer (directory or disk) and the overlay root
	Config  time.Duration // mounts, id mapping and the container's config and state
	Start   time.Duration // the container's init: namespaces, cgroups, mounts, exec of the agent
	Agent   time.Duration // from the agent's exec until it answers
	User    time.Duration // the sandbox user looked up and volumes given to it
	Source  time.Duration // the source fetched into the sandbox
	Total   time.Duration // the whole create, as the caller waited for it
}

// LogAttrs are the phases as slog attributes, in milliseconds.
func (p Phases) LogAttrs() []any {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return []any{
		slog.Float64("network_ms", ms(p.Network)), slog.Float64("volumes_ms", ms(p.Volumes)),
		slog.Float64("layer_ms", ms(p.Layer)), slog.Float64("config_ms", ms(p.Config)),
		slog.Float64("start_ms", ms(p.Start)), slog.Float64("agent_ms", ms(p.Agent)),
		slog.Float64("user_ms", ms(p.User)), slog.Float64("source_ms", ms(p.Source)),
		slog.Float64("total_ms", ms(p.Total)),
	}
}

type phasesKey struct{}

// WithPhases returns ctx carrying p, for the layers below a create (the
// driver) to record their steps into. A step writes only its own fields.
func WithPhases(ctx context.Context, p *Phases) context.Context {
	return context.WithValue(ctx, phasesKey{}, p)
}

// PhasesFrom returns the Phases ctx carries, or a throwaway one, so a
// caller may always write to the result.
func PhasesFrom(ctx context.Context) *Phases {
	if p, ok := ctx.Value(phasesKey{}).(*Phases); ok && p != nil {
		return p
	}
	return &Phases{}
}
