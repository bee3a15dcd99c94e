// Package storeutil is what the store implementations share so that they
// behave alike: record checks and defaults, page sizes and cursors.
package storeutil

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Limit returns the page size p asks for, defaulted and clamped.
func Limit(p store.Page) int { return clamp(p.Limit, store.DefaultPageLimit, store.MaxPageLimit) }

// EventLimit returns the number of events f asks for, defaulted and clamped.
func EventLimit(f store.EventFilter) int {
	return clamp(f.Limit, store.DefaultEventLimit, store.MaxEventLimit)
}

// clamp is n, or def when n is unset (zero or less), at most max.
func clamp(n, def, max int) int {
	switch {
	case n <= 0:
		return def
	case n > max:
		return max
	}
	return n
}

// Cut ends a page: the stores ask for limit+1 records so that one more than
// fits says there is a next page without a second query; Cut drops it and
// returns the cursor after the last record kept ("" on the last page).
func Cut[T any](out []T, limit int, key func(T) Key) ([]T, string) {
	if len(out) <= limit {
		return out, ""
	}
	out = out[:limit]
	return out, key(out[limit-1]).Encode()
}

// Key is a position in a list: the (time, id) of the last record of a page.
type Key struct {
	Time time.Time
	ID   string
}

const cursorPrefix = "c1."

// Encode returns the opaque cursor for k.
func (k Key) Encode() string {
	raw := strconv.FormatInt(k.Time.UnixMilli(), 10) + ":" + k.ID
	return cursorPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// Decode parses a cursor; "" is the start (ok false).
func Decode(cursor string) (k Key, ok bool, err error) {
	if cursor == "" {
		return Key{}, false, nil
	}
	bad := sandbox.Errorf(sandbox.ErrInvalid, "invalid_cursor", "malformed page cursor")
	rest, found := strings.CutPrefix(cursor, cursorPrefix)
	if !found {
		return Key{}, false, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Key{}, false, bad
	}
	ms, id, found := strings.Cut(string(raw), ":")
	if !found {
		return Key{}, false, bad
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return Key{}, false, bad
	}
	return Key{Time: time.UnixMilli(n).UTC(), ID: id}, true, nil
}

// Now is the clock of record defaults, at store precision.
func Now() time.Time { return store.Time(time.Now()) }

func required(what, field, v string) error {
	if v == "" {
		return store.Invalid("%s: %s is required", what, field)
	}
	return nil
}

func created(t time.Time) time.Time {
	if t.IsZero() {
		return Now()
	}
	return store.Time(t)
}

// Team checks t and applies defaults.
func Team(t store.Team) (store.Team, error) {
	if err := required("team", "id", t.ID); err != nil {
		return t, err
	}
	if err := required("team", "name", t.Name); err != nil {
		return t, err
	}
	t.CreatedAt = created(t.CreatedAt)
	return t, nil
}

// User checks u and applies defaults.
func User(u store.User) (store.User, error) {
	if err := required("user", "id", u.ID); err != nil {
		return u, err
	}
	u.CreatedAt = created(u.CreatedAt)
	return u, nil
}

// Token checks t and applies defaults.
func Token(t store.Token) (store.Token, error) {
	if err := required("token", "id", t.ID); err != nil {
		return t, err
	}
	if len(t.Hash) == 0 {
		return t, store.Invalid("token: hash is required")
	}
	t.CreatedAt = created(t.CreatedAt)
	t.ExpiresAt = store.Time(t.ExpiresAt)
	return t, nil
}

// Project checks p and applies defaults; for an update (create false) it
// leaves Version, CreatedAt and UpdatedAt to the caller.
func Project(p store.Project, create bool) (store.Project, error) {
	if err := required("project", "id", p.ID); err != nil {
		return p, err
	}
	if err := required("project", "name", p.Name); err != nil {
		return p, err
	}
	if len(p.Spec) == 0 {
		p.Spec = nil
	} else if !json.Valid(p.Spec) {
		return p, store.Invalid("project %s: spec is not valid JSON", p.ID)
	}
	if create {
		if p.Version <= 0 {
			p.Version = 1
		}
		p.CreatedAt = created(p.CreatedAt)
		if p.UpdatedAt.IsZero() {
			p.UpdatedAt = p.CreatedAt
		}
		p.UpdatedAt = store.Time(p.UpdatedAt)
	}
	return p, nil
}

// Activation checks a and applies defaults, as Project does.
func Activation(a store.Activation, create bool) (store.Activation, error) {
	if err := required("activation", "id", a.ID); err != nil {
		return a, err
	}
	if create {
		if a.Version <= 0 {
			a.Version = 1
		}
		a.CreatedAt = created(a.CreatedAt)
	}
	a.ReadyAt = store.Time(a.ReadyAt)
	a.EndedAt = store.Time(a.EndedAt)
	a.LastActivityAt = store.Time(a.LastActivityAt)
	return a, nil
}

// Sandbox checks r, normalises its times and returns the sandbox as the
// JSON both stores keep it as: its Env has free-form keys, which a
// document store does not take as field names everywhere.
func Sandbox(r store.SandboxRecord) (store.SandboxRecord, string, error) {
	if err := required("sandbox", "id", r.Sandbox.ID); err != nil {
		return r, "", err
	}
	r.Sandbox = store.NormalizeSandbox(r.Sandbox)
	data, err := json.Marshal(r.Sandbox)
	if err != nil {
		return r, "", fmt.Errorf("encode sandbox %s: %w", r.Sandbox.ID, err)
	}
	return r, string(data), nil
}

// Command checks c and applies defaults.
func Command(c store.Command) (store.Command, error) {
	if err := required("command", "id", c.ID); err != nil {
		return c, err
	}
	if err := required("command", "sandboxId", c.SandboxID); err != nil {
		return c, err
	}
	if len(c.Args) == 0 {
		c.Args = nil
	}
	c.StartedAt = created(c.StartedAt)
	c.FinishedAt = store.Time(c.FinishedAt)
	return c, nil
}

// Usage checks u and normalises its times.
func Usage(u store.Usage) (store.Usage, error) {
	if err := required("usage", "id", u.ID); err != nil {
		return u, err
	}
	for _, n := range []uint64{u.NetRxBytes, u.NetTxBytes, u.MemoryPeakBytes, u.EndNetRxBytes, u.EndNetTxBytes} {
		if n > math.MaxInt64 {
			return u, store.Invalid("usage %s: byte count out of range", u.ID)
		}
	}
	u.Start = store.Time(u.Start)
	u.End = store.Time(u.End)
	return u, nil
}

// Budget checks b and normalises it.
func Budget(b store.Budget) (store.Budget, error) {
	if err := required("budget", "team", b.TeamID); err != nil {
		return b, err
	}
	if b.MonthlyLimit < 0 || math.IsNaN(b.MonthlyLimit) || math.IsInf(b.MonthlyLimit, 0) {
		return b, store.Invalid("budget %s: limit must be a non-negative number", b.TeamID)
	}
	if len(b.Thresholds) == 0 {
		b.Thresholds = nil
	}
	b.UpdatedAt = store.Time(b.UpdatedAt)
	return b, nil
}

// Event checks e and applies defaults.
func Event(e store.Event) (store.Event, error) {
	if err := required("event", "type", e.Type); err != nil {
		return e, err
	}
	e.Time = created(e.Time)
	if len(e.Data) == 0 {
		e.Data = nil
	}
	return e, nil
}

// Finished returns the time FinishCommand records.
func Finished(t time.Time) time.Time { return created(t) }

// VercelSandboxKey is the one string that names a Vercel sandbox, its
// primary key in both stores and the ID of its page cursors: the lengths
// keep (team, project, name) apart whatever bytes they hold.
func VercelSandboxKey(teamID, project, name string) string {
	return strconv.Itoa(len(teamID)) + ":" + teamID + "/" + strconv.Itoa(len(project)) + ":" + project + "/" + name
}

// VercelSandbox checks v and applies defaults; for an update (create
// false) it leaves Version, CreatedAt and UpdatedAt to the caller.
func VercelSandbox(v store.VercelSandbox, create bool) (store.VercelSandbox, error) {
	for _, f := range []struct{ field, v string }{{"teamId", v.TeamID}, {"project", v.Project}, {"name", v.Name}} {
		if err := required("vercel sandbox", f.field, f.v); err != nil {
			return v, err
		}
	}
	switch {
	case len(v.Data) == 0:
		return v, store.Invalid("vercel sandbox %s: data is required", v.Name)
	case len(v.Data) > store.MaxVercelData:
		return v, store.Invalid("vercel sandbox %s: data is %d bytes, more than %d", v.Name, len(v.Data), store.MaxVercelData)
	case !json.Valid(v.Data):
		return v, store.Invalid("vercel sandbox %s: data is not valid JSON", v.Name)
	}
	if len(v.SessionIDs) == 0 {
		v.SessionIDs = nil
	}
	for _, id := range v.SessionIDs {
		if id == "" {
			return v, store.Invalid("vercel sandbox %s: an empty session id", v.Name)
		}
	}
	if create {
		if v.Version <= 0 {
			v.Version = 1
		}
		v.CreatedAt = created(v.CreatedAt)
		if v.UpdatedAt.IsZero() {
			v.UpdatedAt = v.CreatedAt
		}
		v.UpdatedAt = store.Time(v.UpdatedAt)
	}
	return v, nil
}

// VercelSnapshot checks v and applies defaults.
func VercelSnapshot(v store.VercelSnapshot) (store.VercelSnapshot, error) {
	for _, f := range []struct{ field, v string }{{"id", v.ID}, {"teamId", v.TeamID}, {"project", v.Project}} {
		if err := required("vercel snapshot", f.field, f.v); err != nil {
			return v, err
		}
	}
	v.CreatedAt = created(v.CreatedAt)
	return v, nil
}

// Admission checks a and applies defaults; for an update (create false)
// it leaves Version to the caller.
func Admission(a store.Admission, create bool) (store.Admission, error) {
	if err := required("admission", "team id", a.TeamID); err != nil {
		return a, err
	}
	if len(a.Data) == 0 {
		a.Data = json.RawMessage("{}")
	}
	if !json.Valid(a.Data) {
		return a, store.Invalid("admission %s: data is not valid JSON", a.TeamID)
	}
	if len(a.Data) > store.MaxAdmissionData {
		return a, store.Invalid("admission %s: data is %d bytes, more than %d", a.TeamID, len(a.Data), store.MaxAdmissionData)
	}
	if create {
		if a.Version <= 0 {
			a.Version = 1
		}
		a.UpdatedAt = created(a.UpdatedAt)
	}
	return a, nil
}

// AdmissionHold checks a hold record for create and applies defaults.
func AdmissionHold(h store.AdmissionHold) (store.AdmissionHold, error) {
	for _, f := range []struct{ field, v string }{{"sandbox id", h.SandboxID}, {"team id", h.TeamID}} {
		if err := required("admission hold", f.field, f.v); err != nil {
			return h, err
		}
	}
	if h.VCPUs < 0 || math.IsNaN(h.VCPUs) || math.IsInf(h.VCPUs, 0) || h.MemoryMB < 0 {
		return h, store.Invalid("admission hold %s: vCPUs and memory must be finite and not negative", h.SandboxID)
	}
	h.CreatedAt = created(h.CreatedAt)
	return h, nil
}

// E2BSandbox checks an E2B sandbox record for create.
func E2BSandbox(v store.E2BSandbox) (store.E2BSandbox, error) {
	for _, f := range []struct{ field, v string }{{"id", v.ID}, {"teamId", v.TeamID}} {
		if err := required("e2b sandbox", f.field, f.v); err != nil {
			return v, err
		}
	}
	switch {
	case len(v.Data) == 0:
		return v, store.Invalid("e2b sandbox %s: data is required", v.ID)
	case len(v.Data) > store.MaxE2BData:
		return v, store.Invalid("e2b sandbox %s: data is %d bytes, more than %d", v.ID, len(v.Data), store.MaxE2BData)
	case !json.Valid(v.Data):
		return v, store.Invalid("e2b sandbox %s: data is not valid JSON", v.ID)
	}
	v.CreatedAt = created(v.CreatedAt)
	return v, nil
}

// DeliveryLimit is f.Limit within the event bounds.
func DeliveryLimit(f store.DeliveryFilter) int {
	return clamp(f.Limit, store.DefaultEventLimit, store.MaxEventLimit)
}

// Webhook checks w and applies defaults.
func Webhook(w store.Webhook) (store.Webhook, error) {
	for _, f := range []struct{ name, v string }{{"id", w.ID}, {"teamId", w.TeamID}, {"url", w.URL}} {
		if err := required("webhook", f.name, f.v); err != nil {
			return w, err
		}
	}
	w.CreatedAt = created(w.CreatedAt)
	return w, nil
}

// Delivery checks d and applies defaults; for an update (create false) it
// leaves Version, CreatedAt and UpdatedAt to the caller.
func Delivery(d store.Delivery, create bool) (store.Delivery, error) {
	for _, f := range []struct{ name, v string }{{"id", d.ID}, {"webhookId", d.WebhookID}, {"state", d.State}} {
		if err := required("delivery", f.name, f.v); err != nil {
			return d, err
		}
	}
	switch d.State {
	case store.DeliveryPending, store.DeliveryDelivered, store.DeliveryFailed, store.DeliveryDropped:
	default:
		return d, store.Invalid("delivery: unknown state %q", d.State)
	}
	d.NextAttemptAt, d.LastAttemptAt = store.Time(d.NextAttemptAt), store.Time(d.LastAttemptAt)
	if create {
		d.CreatedAt = created(d.CreatedAt)
		d.UpdatedAt = d.CreatedAt
		if d.Version == 0 {
			d.Version = 1
		}
	}
	return d, nil
}
