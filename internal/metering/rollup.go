package metering

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// RollUp seals the hours before the retention horizon: it sums their
// samples per team, project and hour into roll-ups, then prunes the
// samples. A roll-up is a function of its hour's samples, all still there
// until the prune, so a RollUp cut short and run again writes the same
// roll-ups; once an hour is pruned no sample lands in it again (see
// bookingFloor).
func (m *Meter) RollUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	horizon := m.horizon(m.now())
	old, err := m.cfg.Store.ListUsage(ctx, store.UsageFilter{Until: horizon})
	if err != nil {
		return fmt.Errorf("read samples to roll up: %w", err)
	}
	sums := map[bucketKey]*store.Usage{}
	for _, u := range old {
		if !u.Start.Before(horizon) {
			continue // overlaps the horizon but starts after it
		}
		k := bucketKey{start: u.Start.Truncate(time.Hour), team: u.TeamID, project: u.ProjectID}
		r := sums[k]
		if r == nil {
			r = &store.Usage{ID: rollupID(k), TeamID: k.team, ProjectID: k.project, Start: k.start, End: k.start.Add(time.Hour)}
			sums[k] = r
		}
		add(r, u)
	}
	for _, r := range sums {
		if err := m.cfg.Store.PutUsageRollup(ctx, *r); err != nil {
			return fmt.Errorf("write usage roll-up %s: %w", r.ID, err)
		}
	}
	n, err := m.cfg.Store.PruneUsage(ctx, horizon)
	if err != nil {
		return fmt.Errorf("prune usage samples: %w", err)
	}
	if n > 0 {
		m.log.Info("rolled up usage", "samples", n, "rollups", len(sums), "before", horizon)
	}
	return nil
}

func rollupID(k bucketKey) string {
	return fmt.Sprintf("%s/%s/%d", k.team, k.project, k.start.UnixMilli())
}

// add sums u into r: peak memory is a maximum, the rest are sums.
func add(r *store.Usage, u store.Usage) {
	r.CPUSeconds += u.CPUSeconds
	r.MemoryMBHours += u.MemoryMBHours
	r.NetRxBytes += u.NetRxBytes
	r.NetTxBytes += u.NetTxBytes
	r.MemoryPeakBytes = max(r.MemoryPeakBytes, u.MemoryPeakBytes)
	r.Creations += u.Creations
	r.StorageGBHours += u.StorageGBHours
}

// Granularities of a Query. Minute is for one sandbox only: its samples
// (about one a minute) are kept for the raw retention, roll-ups only per
// hour.
const (
	Minute = "minute"
	Hour   = "hour"
	Day    = "day"
)

// Page sizes of a Query.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Query selects usage: one row per bucket (an hour or a UTC day), team and
// project, or per bucket of one sandbox when SandboxID is set.
type Query struct {
	// TeamID "" selects every team: the caller (the API) decides who may.
	TeamID    string
	ProjectID string
	// SandboxID selects one sandbox's samples: answered within the raw
	// retention only, since roll-ups keep no sandbox.
	SandboxID string
	// Since and Until bound the buckets; they are widened to whole
	// buckets. A sample belongs to the bucket its start is in.
	Since, Until time.Time
	Granularity  string // Minute (with SandboxID), Hour or Day (default)
	Cursor       string // from a previous page's NextCursor
	Limit        int    // DefaultLimit if 0, at most MaxLimit
}

// Totals are usage summed over a bucket.
type Totals struct {
	CPUSeconds      float64 `json:"cpuSeconds"`
	MemoryGBHours   float64 `json:"memoryGBHours"`
	MemoryPeakBytes uint64  `json:"memoryPeakBytes"`
	NetRxBytes      uint64  `json:"netRxBytes"`
	NetTxBytes      uint64  `json:"netTxBytes"`
	Creations       int64   `json:"creations"`
	StorageGBHours  float64 `json:"storageGBHours"`
}

// Row is one bucket's usage and its cost.
type Row struct {
	TeamID    string
	ProjectID string // "" for sandboxes of no project, and for storage
	SandboxID string // set only when the query named a sandbox
	Start     time.Time
	End       time.Time
	Totals    Totals
	Cost      Cost
}

// Page is a page of rows, ordered by (Start, TeamID, ProjectID).
type Page struct {
	Rows       []Row
	NextCursor string // "" on the last page
	Currency   string
}

type bucketKey struct {
	start   time.Time
	team    string
	project string
	sandbox string
}

func (k bucketKey) compare(o bucketKey) int {
	return cmp.Or(k.start.Compare(o.start), strings.Compare(k.team, o.team),
		strings.Compare(k.project, o.project), strings.Compare(k.sandbox, o.sandbox))
}

// cursor is a page's position: the last row's key. It names the caller's
// own rows only (every query is scoped to the caller's team first), so it
// tells nobody anything they could not list.
type cursor struct {
	Start   int64  `json:"s"`
	Team    string `json:"t,omitempty"`
	Project string `json:"p,omitempty"`
	Sandbox string `json:"x,omitempty"`
}

func invalid(code, format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, code, format, args...)
}

// Query answers q, one page at a time.
func (m *Meter) Query(ctx context.Context, q Query) (Page, error) {
	if q.Granularity == "" {
		q.Granularity = Day
	}
	switch {
	case q.Granularity == Minute && q.SandboxID == "":
		return Page{}, invalid("invalid_query", "granularity %q needs a sandboxId", Minute)
	case q.Granularity != Minute && q.Granularity != Hour && q.Granularity != Day:
		return Page{}, invalid("invalid_query", "granularity must be %q, %q or %q (with a sandboxId)", Hour, Day, Minute)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return Page{}, invalid("invalid_query", "since must be before until")
	}
	switch {
	case q.Limit <= 0:
		q.Limit = DefaultLimit
	case q.Limit > MaxLimit:
		q.Limit = MaxLimit
	}
	var after *bucketKey
	if q.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		var c cursor
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		if err != nil {
			return Page{}, invalid("invalid_cursor", "malformed cursor")
		}
		after = &bucketKey{start: time.UnixMilli(c.Start).UTC(), team: c.Team, project: c.Project, sandbox: c.Sandbox}
	}
	sums, err := m.aggregate(ctx, q)
	if err != nil {
		return Page{}, err
	}
	keys := make([]bucketKey, 0, len(sums))
	for k := range sums {
		if after == nil || k.compare(*after) > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, bucketKey.compare)
	page := Page{Rows: []Row{}, Currency: m.cfg.Prices.currency()}
	if len(keys) > q.Limit {
		keys = keys[:q.Limit]
		last := keys[len(keys)-1]
		b, _ := json.Marshal(cursor{Start: last.start.UnixMilli(), Team: last.team, Project: last.project, Sandbox: last.sandbox})
		page.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	for _, k := range keys {
		t := totalsOf(*sums[k])
		end := nextBucket(k.start, q.Granularity)
		page.Rows = append(page.Rows, Row{TeamID: k.team, ProjectID: k.project, SandboxID: k.sandbox,
			Start: k.start, End: end, Totals: t, Cost: m.cfg.Prices.Cost(t)})
	}
	return page, nil
}

// truncate is the start of the bucket t is in (UTC days).
func truncate(t time.Time, granularity string) time.Time {
	t = t.UTC()
	switch granularity {
	case Day:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case Minute:
		return t.Truncate(time.Minute)
	}
	return t.Truncate(time.Hour)
}

// nextBucket is the start of the bucket after the one starting at t.
func nextBucket(t time.Time, granularity string) time.Time {
	switch granularity {
	case Day:
		return t.AddDate(0, 0, 1)
	case Minute:
		return t.Add(time.Minute)
	}
	return t.Add(time.Hour)
}

// aggregate sums the samples and roll-ups q selects per bucket. Per team,
// project and hour a roll-up, when there is one, stands for that hour's
// samples (they are about to be pruned, or are).
func (m *Meter) aggregate(ctx context.Context, q Query) (map[bucketKey]*store.Usage, error) {
	f := store.UsageFilter{TeamID: q.TeamID, ProjectID: q.ProjectID, SandboxID: q.SandboxID}
	if !q.Since.IsZero() {
		f.Since = truncate(q.Since, q.Granularity)
	}
	if !q.Until.IsZero() {
		f.Until = truncate(q.Until, q.Granularity)
		if f.Until.Before(q.Until) {
			f.Until = nextBucket(f.Until, q.Granularity)
		}
	}
	in := func(u store.Usage) bool {
		return (f.Since.IsZero() || !u.Start.Before(f.Since)) && (f.Until.IsZero() || u.Start.Before(f.Until))
	}
	type hourKey struct {
		hour          time.Time
		team, project string
	}
	rolled := map[hourKey]bool{}
	var rows []store.Usage
	if q.SandboxID == "" {
		rollups, err := m.cfg.Store.ListUsageRollups(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("list usage roll-ups: %w", err)
		}
		for _, r := range rollups {
			rolled[hourKey{r.Start, r.TeamID, r.ProjectID}] = true
			rows = append(rows, r)
		}
	}
	samples, err := m.cfg.Store.ListUsage(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list usage: %w", err)
	}
	for _, u := range samples {
		if !rolled[hourKey{u.Start.Truncate(time.Hour), u.TeamID, u.ProjectID}] {
			rows = append(rows, u)
		}
	}
	sums := map[bucketKey]*store.Usage{}
	for _, u := range rows {
		if !in(u) {
			continue
		}
		k := bucketKey{start: truncate(u.Start, q.Granularity), team: u.TeamID, project: u.ProjectID}
		if q.SandboxID != "" {
			k.sandbox = u.SandboxID
		}
		s := sums[k]
		if s == nil {
			s = &store.Usage{}
			sums[k] = s
		}
		add(s, u)
	}
	return sums, nil
}

// totalsOf turns a sum of samples into Totals.
func totalsOf(u store.Usage) Totals {
	return Totals{CPUSeconds: u.CPUSeconds, MemoryGBHours: u.MemoryMBHours / 1024, MemoryPeakBytes: u.MemoryPeakBytes,
		NetRxBytes: u.NetRxBytes, NetTxBytes: u.NetTxBytes, Creations: u.Creations, StorageGBHours: u.StorageGBHours}
}
