package bench

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// phaseLog collects the node's "create phases" debug records, so a
// benchmark can report where a create's time went. Every other record is
// dropped.
type phaseLog struct {
	mu     sync.Mutex
	off    bool                       // guarded by mu: records are dropped
	phases map[string][]time.Duration // guarded by mu: "network" -> one per create
}

func newPhaseLog() *phaseLog { return &phaseLog{phases: map[string][]time.Duration{}} }

func (l *phaseLog) logger() *slog.Logger { return slog.New(l) }

func (l *phaseLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *phaseLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *phaseLog) WithGroup(string) slog.Handler            { return l }

func (l *phaseLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "create phases" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.off {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if name, ok := strings.CutSuffix(a.Key, "_ms"); ok && a.Value.Kind() == slog.KindFloat64 {
			l.phases[name] = append(l.phases[name], time.Duration(a.Value.Float64()*float64(time.Millisecond)))
		}
		return true
	})
	return nil
}

// collect turns collecting on or off (around a baseline's creates).
func (l *phaseLog) collect(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.off = !on
}

// report adds the p50 of every phase that took time as "<phase>-p50-ms".
func (l *phaseLog) report(b *testing.B, prefix string) {
	b.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.phases))
	for name := range l.phases {
		names = append(names, name)
	}
	slices.Sort(names)
	var line []string
	for _, name := range names {
		ds := l.phases[name]
		if p := pct(ds, 50); p > 0 {
			b.ReportMetric(ms(p), prefix+name+"-p50-ms")
			line = append(line, name+"="+p.Round(10*time.Microsecond).String())
		}
	}
	b.Logf("%sphases p50 (n=%d): %s", prefix, len(l.phases["total"]), strings.Join(line, " "))
}
