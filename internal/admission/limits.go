package admission

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Limits bound what one team may hold at once; a zero field is no limit.
type Limits struct {
	Concurrent       int     `json:"concurrent,omitempty"`       // pending and running sandboxes
	VCPUs            float64 `json:"vcpus,omitempty"`            // their vCPUs together
	MemoryMB         int64   `json:"memoryMb,omitempty"`         // their memory together
	CreatesPerMinute int     `json:"createsPerMinute,omitempty"` // admissions in any 60 s
}

// Presets are the named limits a host admin gives a team.
var Presets = map[string]Limits{
	"hobby": {Concurrent: 10, VCPUs: 20, MemoryMB: 20 << 10, CreatesPerMinute: 60},
	"pro":   {Concurrent: 2000, VCPUs: 4000, MemoryMB: 4000 << 10, CreatesPerMinute: 1200},
}

// PresetNames are the presets' names, sorted.
func PresetNames() []string {
	var out []string
	for n := range Presets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TeamLimits is what a host admin sets for a team: a preset, and custom
// values that override its fields (a custom field of zero keeps the
// preset's). Neither: the team has no limits of its own.
type TeamLimits struct {
	Preset string `json:"preset,omitempty"`
	Limits
}

// Validate checks l as an admin sets it.
func (l TeamLimits) Validate() error {
	if _, ok := Presets[l.Preset]; l.Preset != "" && !ok {
		return sandbox.Errorf(sandbox.ErrInvalid, "unknown_preset", "no preset %q (presets: %v)", l.Preset, PresetNames())
	}
	switch {
	case l.Concurrent < 0, l.MemoryMB < 0, l.CreatesPerMinute < 0, l.VCPUs < 0,
		math.IsNaN(l.VCPUs), math.IsInf(l.VCPUs, 0):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_limits", "limits must be zero (none) or positive")
	case l.Concurrent > 1_000_000, l.CreatesPerMinute > 1_000_000, l.VCPUs > 1e6, l.MemoryMB > 1<<40:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_limits", "limits must be at most a million sandboxes, vCPUs or creates per minute")
	}
	return nil
}

// Effective is the limits l stands for: the preset's, overridden by the
// custom fields that are set.
func (l TeamLimits) Effective() Limits {
	e := Presets[l.Preset]
	if l.Concurrent > 0 {
		e.Concurrent = l.Concurrent
	}
	if l.VCPUs > 0 {
		e.VCPUs = l.VCPUs
	}
	if l.MemoryMB > 0 {
		e.MemoryMB = l.MemoryMB
	}
	if l.CreatesPerMinute > 0 {
		e.CreatesPerMinute = l.CreatesPerMinute
	}
	return e
}

// IsZero reports limits that limit nothing.
func (l TeamLimits) IsZero() bool { return l == TeamLimits{} }

// rateWindow is the window of CreatesPerMinute.
const rateWindow = time.Minute

// fit says whether one more request of res fits l beside what d holds,
// and if not why and, for the rate, when it will.
func (d *doc) fit(l Limits, res resources, now time.Time) (ok bool, why string, retry time.Duration) {
	var vcpus float64
	var mem int64
	for _, h := range d.Held {
		vcpus += h.VCPUs
		mem += h.MemoryMB
	}
	switch {
	case l.Concurrent > 0 && len(d.Held)+1 > l.Concurrent:
		return false, fmt.Sprintf("the team runs its maximum of %d sandboxes", l.Concurrent), 0
	case l.VCPUs > 0 && vcpus+res.VCPUs > l.VCPUs+1e-9:
		return false, fmt.Sprintf("the team's sandboxes use %g of its %g vCPUs", vcpus, l.VCPUs), 0
	case l.MemoryMB > 0 && mem+res.MemoryMB > l.MemoryMB:
		return false, fmt.Sprintf("the team's sandboxes use %d of its %d MB of memory", mem, l.MemoryMB), 0
	case l.CreatesPerMinute > 0 && len(d.Recent) >= l.CreatesPerMinute:
		oldest := d.Recent[len(d.Recent)-l.CreatesPerMinute]
		return false, fmt.Sprintf("the team created its maximum of %d sandboxes in a minute", l.CreatesPerMinute),
			oldest.Add(rateWindow).Sub(now)
	}
	return true, "", 0
}

// never reports a request that no amount of waiting admits: it alone is
// more than the team may hold.
func never(l Limits, res resources) error {
	switch {
	case l.VCPUs > 0 && res.VCPUs > l.VCPUs+1e-9:
		return sandbox.Errorf(sandbox.ErrInvalid, "over_team_limit", "the sandbox asks for %g vCPUs, more than the team's limit of %g", res.VCPUs, l.VCPUs)
	case l.MemoryMB > 0 && res.MemoryMB > l.MemoryMB:
		return sandbox.Errorf(sandbox.ErrInvalid, "over_team_limit", "the sandbox asks for %d MB of memory, more than the team's limit of %d", res.MemoryMB, l.MemoryMB)
	}
	return nil
}
