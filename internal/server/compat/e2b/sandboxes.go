package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
)

// maxJSONBytes bounds a request body.
const maxJSONBytes = 1 << 20

// maxTimeoutSeconds keeps a timeout's conversion to a Duration exact.
const maxTimeoutSeconds = math.MaxInt64 / int64(time.Second)

// Bounds of what a create may keep as metadata.
const (
	maxMetadata      = 64
	maxMetadataBytes = 16 << 10
)

func badRequest(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_request", format, args...)
}

// decode reads a JSON body into v; an empty body leaves v as it is.
// Unknown fields are ignored, as E2B's own API does: newer SDKs send more.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return sandbox.Errorf(sandbox.ErrTooLarge, "body_too_large", "the request body is over %d bytes", maxJSONBytes)
		}
		return fmt.Errorf("read body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return badRequest("the body is not valid: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
}

// owned is a sandbox of the caller's team E2B shows: running or paused
// (a stopped or failed paddock sandbox is a killed one to E2B). Another
// team's is not found.
// A sandbox that is gone (deleted or ended through paddock's own API, or
// by its timeout) has its record forgotten here, the caller's team's only.
func (h *Handler) owned(r *http.Request, id string) (sandbox.Sandbox, error) {
	sb, err := h.cfg.Sandboxes.Get(r.Context(), id)
	if ee := new(sandbox.ElsewhereError); errors.As(err, &ee) {
		if !callerOf(r).CanAccessTeam(ee.TeamID) {
			return sb, notFound(id)
		}
		return sb, err // another replica's: writeError forwards there
	}
	if errors.Is(err, sandbox.ErrNotFound) {
		h.forget(r.Context(), teamOf(sandbox.Sandbox{TeamID: callerOf(r).TeamID}), id)
		return sb, notFound(id)
	}
	if err != nil {
		return sb, err
	}
	if !callerOf(r).CanAccessTeam(sb.TeamID) {
		return sb, notFound(id)
	}
	if !visible(sb.State) {
		if ended(sb.State) {
			h.forget(r.Context(), teamOf(sb), id)
		}
		return sb, notFound(id)
	}
	return sb, nil
}

// elsewhere is the *sandbox.ElsewhereError of a request for a sandbox of
// the caller's team that another replica runs, found before a handler
// reads the body, so that writeError can still forward the request there
// whole; nil for any other, which its handler answers.
func (h *Handler) elsewhere(r *http.Request) error {
	id := r.PathValue("id")
	if id == "" || !sandbox.ValidID(id) {
		return nil
	}
	_, err := h.cfg.Sandboxes.Get(r.Context(), id)
	if ee := new(sandbox.ElsewhereError); errors.As(err, &ee) && callerOf(r).CanAccessTeam(ee.TeamID) {
		return err
	}
	return nil
}

// ended reports a terminal state: such a sandbox never runs again.
func ended(s sandbox.State) bool { return s == sandbox.Stopped || s == sandbox.Failed }

// forget deletes a gone sandbox's record, if there is one; a failure is
// logged, as the next look or list tries again.
func (h *Handler) forget(ctx context.Context, teamID, id string) {
	if err := h.cfg.Records.DeleteE2BSandbox(ctx, teamID, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		h.cfg.Logger.Warn("e2b compat: forget the record of a gone sandbox", "sandbox", id, "err", err)
	}
}

// maxSweepPages bounds one sweep's work: records are listed a store page
// (store.MaxPageLimit) at a time.
const maxSweepPages = 10

// sweep forgets the records of the team's sandboxes that are gone. A
// sandbox deleted through paddock's own API leaves its record behind, and
// no E2B call names it again, so the first page of every list sweeps.
func (h *Handler) sweep(ctx context.Context, teamID string) {
	cursor := ""
	for range maxSweepPages {
		recs, next, err := h.cfg.Records.ListE2BSandboxes(ctx, store.E2BSandboxFilter{TeamID: teamID}, store.Page{Cursor: cursor, Limit: store.MaxPageLimit})
		if err != nil {
			h.cfg.Logger.Warn("e2b compat: list records to sweep", "team", teamID, "err", err)
			return
		}
		for _, rec := range recs {
			sb, err := h.cfg.Sandboxes.Get(ctx, rec.ID)
			if errors.Is(err, sandbox.ErrNotFound) || (err == nil && ended(sb.State)) {
				h.forget(ctx, teamID, rec.ID)
			}
		}
		if next == "" {
			return
		}
		cursor = next
	}
}

func visible(s sandbox.State) bool {
	return s == sandbox.Pending || s == sandbox.Running || s == sandbox.Paused
}

// stateOf is E2B's name of a paddock state.
func stateOf(s sandbox.State) string {
	if s == sandbox.Paused {
		return "paused"
	}
	return "running"
}

// recordOf is the layer's record of a sandbox, or an empty one for a
// sandbox made through another API.
func (h *Handler) recordOf(r *http.Request, sb sandbox.Sandbox) (record, error) {
	v, err := h.cfg.Records.GetE2BSandbox(r.Context(), teamOf(sb), sb.ID)
	if errors.Is(err, sandbox.ErrNotFound) {
		return record{TemplateID: templateOf(sb)}, nil
	}
	if err != nil {
		return record{}, err
	}
	var rec record
	if err := json.Unmarshal(v.Data, &rec); err != nil {
		return record{}, fmt.Errorf("e2b record of %s: %w", sb.ID, err)
	}
	return rec, nil
}

// teamOf is the team a sandbox's record is kept under: the bootstrap
// team's sandboxes made by the host admin have none.
func teamOf(sb sandbox.Sandbox) string {
	if sb.TeamID == "" {
		return auth.BootstrapTeamID
	}
	return sb.TeamID
}

func templateOf(sb sandbox.Sandbox) string {
	if sb.Snapshot != "" {
		return sb.Snapshot
	}
	return sb.Image
}

// wire is a create's or a connect's answer: the caller owns the sandbox,
// so it gets the sandbox's tokens.
func (h *Handler) wire(sb sandbox.Sandbox, rec record) sandboxWire {
	w := sandboxWire{TemplateID: rec.TemplateID, SandboxID: sb.ID, Alias: rec.Alias, ClientID: ClientID,
		EnvdVersion: EnvdVersion, Domain: h.cfg.Domain}
	if h.cfg.Tokens != nil {
		w.EnvdAccessToken, w.TrafficAccessToken = h.cfg.Tokens.Access(sb.ID), h.cfg.Tokens.Traffic(sb.ID)
	}
	return w
}

func (h *Handler) detail(sb sandbox.Sandbox, rec record) sandboxDetail {
	d := sandboxDetail{TemplateID: rec.TemplateID, Alias: rec.Alias, SandboxID: sb.ID, ClientID: ClientID,
		StartedAt: sb.StartedAt.UTC(), EndAt: sb.ExpiresAt.UTC(), EnvdVersion: EnvdVersion, Domain: h.cfg.Domain,
		CPUCount: max(1, int(math.Ceil(sb.Resources.VCPUs))), MemoryMB: sb.Resources.MemoryMB, DiskSizeMB: sb.Resources.DiskMB,
		Metadata: rec.Metadata, State: stateOf(sb.State)}
	if sb.Pause != nil {
		d.EndAt = sb.Pause.PausedAt.UTC()
	}
	return d
}

// timeoutOf reads a timeout in seconds; nil is zero (the default).
func timeoutOf(t *int64) (time.Duration, error) {
	if t == nil {
		return 0, nil
	}
	if *t < 0 || *t > maxTimeoutSeconds {
		return 0, badRequest("timeout must be a number of seconds, not negative, got %d", *t)
	}
	return time.Duration(*t) * time.Second, nil
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) error {
	var req newSandbox
	if err := decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.AutoPause:
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "autoPause is not supported yet: a sandbox's timeout kills it; pause it yourself")
	case req.AutoResume != nil && req.AutoResume.Enabled:
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "autoResume is not supported: paddock's pause keeps the filesystem only; connect resumes")
	case len(req.MCP) > 0:
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "the MCP gateway is not supported")
	case len(req.VolumeMounts) > 0:
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "E2B volume mounts are not supported; paddock volumes are mounted through paddock's own API")
	}
	if err := checkMetadata(req.Metadata); err != nil {
		return err
	}
	if err := sandbox.ValidateEnv(req.EnvVars); err != nil {
		return err
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		return err
	}
	p := callerOf(r)
	creq := sandbox.CreateRequest{Timeout: timeout, Env: req.EnvVars, TeamID: p.TeamID}
	switch t := req.TemplateID; {
	case t == "" || t == DefaultTemplate:
		creq.Image = h.cfg.DefaultImage
	case strings.HasPrefix(t, "snap-"):
		if h.cfg.Snapshots == nil {
			return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this server cannot start sandboxes from snapshots")
		}
		snap, err := h.cfg.Snapshots.GetSnapshot(r.Context(), t)
		if err != nil || !p.CanAccessTeam(snap.TeamID) {
			return sandbox.Errorf(sandbox.ErrNotFound, "template_not_found", "template %q not found", t)
		}
		creq.Snapshot = t
	default:
		creq.Image = t
	}
	if creq.Image == "host" {
		creq.Image = ""
	}
	allowInternet := req.AllowInternetAccess == nil || *req.AllowInternetAccess
	if policy, err := policyOf(allowInternet, req.Network); err != nil {
		return err
	} else if policy != nil {
		creq.NetworkPolicy = policy
	}
	if req.Network != nil && req.Network.AllowPublicTraffic != nil && *req.Network.AllowPublicTraffic {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "allowPublicTraffic is not supported yet: sandbox ports are private")
	}
	sb, err := h.cfg.Sandboxes.Create(r.Context(), creq)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return sandbox.Errorf(sandbox.ErrNotFound, "template_not_found", "template %q not found: name a paddock image or snapshot", req.TemplateID)
		}
		return err
	}
	tmpl := req.TemplateID
	if tmpl == "" {
		tmpl = DefaultTemplate
	}
	rec := record{TemplateID: tmpl, Metadata: req.Metadata}
	data, err := json.Marshal(rec)
	if err == nil {
		err = h.cfg.Records.CreateE2BSandbox(r.Context(), store.E2BSandbox{ID: sb.ID, TeamID: teamOf(sb), Data: data, CreatedAt: sb.CreatedAt})
	}
	if err != nil {
		// A sandbox E2B cannot describe would leak: remove it.
		if derr := h.cfg.Sandboxes.Delete(r.Context(), sb.ID); derr != nil {
			h.cfg.Logger.Error("e2b compat: remove sandbox after a failed record", "sandbox", sb.ID, "err", derr)
		}
		return fmt.Errorf("record e2b sandbox %s: %w", sb.ID, err)
	}
	writeJSON(w, http.StatusCreated, h.wire(sb, rec))
	return nil
}

func checkMetadata(md map[string]string) error {
	if len(md) > maxMetadata {
		return badRequest("at most %d metadata entries, got %d", maxMetadata, len(md))
	}
	n := 0
	for k, v := range md {
		n += len(k) + len(v)
		if k == "" {
			return badRequest("a metadata key is empty")
		}
	}
	if n > maxMetadataBytes {
		return badRequest("metadata is %d bytes, more than %d", n, maxMetadataBytes)
	}
	return nil
}

// policyOf turns E2B's egress rules into paddock's policy: nil for
// paddock's default (the internet, no private ranges). No internet access
// or a deny of everything (0.0.0.0/0) allows only allowOut; otherwise
// denyOut's ranges are refused. paddock's resolver enforces names, so
// allowOut may hold domains; denyOut takes addresses and ranges only.
func policyOf(allowInternet bool, n *networkConfig) (*sandbox.NetworkPolicy, error) {
	var allowOut, denyOut []string
	if n != nil {
		allowOut, denyOut = n.AllowOut, n.DenyOut
		if n.MaskRequestHost != "" {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "maskRequestHost is not supported")
		}
		if len(n.Rules) > 0 {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "egress rules (header transforms) are not supported")
		}
	}
	denyAll := !allowInternet
	var deny []netip.Prefix
	for _, d := range denyOut {
		p, err := prefixOf(d)
		if err != nil {
			return nil, badRequest("denyOut %q: want an address or a CIDR range (paddock denies names by not allowing them)", d)
		}
		if p.Bits() == 0 {
			denyAll = true
			continue
		}
		deny = append(deny, p)
	}
	if !denyAll {
		if len(deny) == 0 {
			return nil, nil
		}
		return &sandbox.NetworkPolicy{Mode: "allow-all", DenyCIDRs: deny}, nil
	}
	if len(allowOut) == 0 {
		return &sandbox.NetworkPolicy{Mode: "deny-all"}, nil
	}
	pol := &sandbox.NetworkPolicy{Mode: "custom", DenyCIDRs: deny}
	for _, a := range allowOut {
		if p, err := prefixOf(a); err == nil {
			pol.AllowCIDRs = append(pol.AllowCIDRs, p)
		} else {
			pol.AllowDomains = append(pol.AllowDomains, a)
		}
	}
	return pol, nil
}

func prefixOf(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	rec, err := h.recordOf(r, sb)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.detail(sb, rec))
	return nil
}

// listV1 is the older list: every running sandbox of the team, filtered
// by ?metadata=.
func (h *Handler) listV1(w http.ResponseWriter, r *http.Request) error {
	md, err := metadataFilter(r.URL.Query().Get("metadata"))
	if err != nil {
		return err
	}
	var out []sandboxDetail
	cursor := ""
	for {
		page, next, err := h.page(r, cursor, 500, md, []string{"running"})
		if err != nil {
			return err
		}
		out = append(out, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	writeJSON(w, http.StatusOK, nonNil(out))
	return nil
}

// listV2 pages through the team's sandboxes; ?state= (running, paused;
// repeated or comma-separated), ?metadata= (k=v&...), ?template=,
// ?limit=, ?nextToken=; the next page's token comes in x-next-token.
// ?startedAfter= and ?order= are not applied (paddock lists by creation).
func (h *Handler) listV2(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	md, err := metadataFilter(q.Get("metadata"))
	if err != nil {
		return err
	}
	var states []string
	for _, v := range q["state"] {
		for s := range strings.SplitSeq(v, ",") {
			switch s {
			case "running", "paused":
				states = append(states, s)
			case "":
			default:
				return badRequest("unknown state %q (want running or paused)", s)
			}
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return badRequest("limit must be in [1, 100], got %q", v)
		}
		limit = n
	}
	out, next, err := h.page(r, q.Get("nextToken"), limit, md, states)
	if t := q.Get("template"); t != "" {
		out = slices.DeleteFunc(out, func(d sandboxDetail) bool { return d.TemplateID != t })
	}
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, nonNil(out))
	return nil
}

func nonNil(s []sandboxDetail) []sandboxDetail {
	if s == nil {
		return []sandboxDetail{}
	}
	return s
}

// page is one page of paddock's list of the caller's sandboxes, those E2B
// shows and the filters keep. A page may hold fewer than limit entries
// (filtered out); the token names where the next one starts.
func (h *Handler) page(r *http.Request, cursor string, limit int, md map[string]string, states []string) ([]sandboxDetail, string, error) {
	p := callerOf(r)
	if cursor == "" {
		h.sweep(r.Context(), teamOf(sandbox.Sandbox{TeamID: p.TeamID}))
	}
	opts := sandbox.ListOptions{Cursor: cursor, Limit: limit, TeamID: p.TeamID, AllReplicas: true}
	if p.HostAdmin {
		opts.TeamID = ""
	}
	sbs, next, err := h.cfg.Sandboxes.List(r.Context(), opts)
	if err != nil {
		return nil, "", err
	}
	var out []sandboxDetail
	for _, sb := range sbs {
		if !visible(sb.State) || (len(states) > 0 && !slices.Contains(states, stateOf(sb.State))) {
			continue
		}
		rec, err := h.recordOf(r, sb)
		if err != nil {
			return nil, "", err
		}
		if !matches(rec.Metadata, md) {
			continue
		}
		out = append(out, h.detail(sb, rec))
	}
	return out, next, nil
}

// metadataFilter parses ?metadata=, itself a query string (k=v&k2=v2).
func metadataFilter(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	vals, err := url.ParseQuery(s)
	if err != nil {
		return nil, badRequest("metadata filter %q: %v", s, err)
	}
	// The JS SDK escapes each key and value before it builds the query
	// string, so they come escaped once more.
	unescape := func(s string) string {
		if u, err := url.QueryUnescape(s); err == nil {
			return u
		}
		return s
	}
	md := make(map[string]string, len(vals))
	for k, v := range vals {
		md[unescape(k)] = unescape(v[len(v)-1])
	}
	return md, nil
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (h *Handler) kill(w http.ResponseWriter, r *http.Request) error {
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.cfg.Sandboxes.Delete(r.Context(), sb.ID); err != nil {
		return err
	}
	if err := h.cfg.Records.DeleteE2BSandbox(r.Context(), teamOf(sb), sb.ID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		h.cfg.Logger.Error("e2b compat: delete record", "sandbox", sb.ID, "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// TimeoutSetter is the sandboxes' power to move a deadline either way;
// node.Manager has it. Without it set timeout only extends.
type TimeoutSetter interface {
	SetTimeout(ctx context.Context, id string, d time.Duration) (sandbox.Sandbox, error)
}

// setTimeout makes the sandbox end timeout from now, earlier or later.
func (h *Handler) setTimeout(w http.ResponseWriter, r *http.Request) error {
	var req timeoutBody
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Timeout == nil {
		return badRequest("timeout is required")
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		return err
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if sb.State != sandbox.Running {
		return sandbox.Errorf(sandbox.ErrConflict, "sandbox_not_running", "sandbox %s is %s: connect resumes it", sb.ID, stateOf(sb.State))
	}
	if ts, ok := h.cfg.Sandboxes.(TimeoutSetter); ok && timeout > 0 {
		if _, err := ts.SetTimeout(r.Context(), sb.ID, timeout); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	by := h.cfg.Now().Add(timeout).Sub(sb.ExpiresAt).Round(time.Millisecond)
	switch {
	case by > 0:
		if _, err := h.cfg.Sandboxes.ExtendTimeout(r.Context(), sb.ID, by); err != nil {
			return err
		}
	case by < -time.Second:
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this server cannot move a sandbox's end earlier (it ends at %s); kill it instead", sb.ExpiresAt.UTC().Format(time.RFC3339))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// connect resumes a paused sandbox with the timeout asked, or moves a
// running one's end to timeout from now if that is later (never earlier).
func (h *Handler) connect(w http.ResponseWriter, r *http.Request) error {
	var req timeoutBody
	if err := decode(w, r, &req); err != nil {
		return err
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		return err
	}
	if req.Memory != nil && *req.Memory {
		return errNoMemory
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	status := http.StatusOK
	if sb.State == sandbox.Paused {
		if sb, err = h.resumeIt(r, sb, timeout); err != nil {
			return err
		}
		status = http.StatusCreated
	} else if timeout > 0 {
		if by := h.cfg.Now().Add(timeout).Sub(sb.ExpiresAt).Round(time.Millisecond); by > 0 {
			if sb, err = h.cfg.Sandboxes.ExtendTimeout(r.Context(), sb.ID, by); err != nil {
				return err
			}
		}
	}
	rec, err := h.recordOf(r, sb)
	if err != nil {
		return err
	}
	writeJSON(w, status, h.wire(sb, rec))
	return nil
}

// resume is the older resume: a paused sandbox only.
func (h *Handler) resume(w http.ResponseWriter, r *http.Request) error {
	var req timeoutBody
	if err := decode(w, r, &req); err != nil {
		return err
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		return err
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if sb.State != sandbox.Paused {
		return sandbox.Errorf(sandbox.ErrConflict, "sandbox_not_paused", "sandbox %s is already running", sb.ID)
	}
	if sb, err = h.resumeIt(r, sb, timeout); err != nil {
		return err
	}
	rec, err := h.recordOf(r, sb)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, h.wire(sb, rec))
	return nil
}

func (h *Handler) pauser() (server.Pauser, error) {
	p, ok := h.cfg.Sandboxes.(server.Pauser)
	if !ok {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this server cannot pause sandboxes")
	}
	return p, nil
}

func (h *Handler) resumeIt(r *http.Request, sb sandbox.Sandbox, timeout time.Duration) (sandbox.Sandbox, error) {
	p, err := h.pauser()
	if err != nil {
		return sb, err
	}
	return p.Resume(r.Context(), sb.ID, timeout)
}

// errNoMemory refuses a pause or resume that asks for memory kept.
var errNoMemory = sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented",
	"paddock keeps a paused sandbox's filesystem only (keepMemory: false); its processes start afresh on resume")

func (h *Handler) pause(w http.ResponseWriter, r *http.Request) error {
	var req timeoutBody
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Memory != nil && *req.Memory {
		return errNoMemory
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if sb.State == sandbox.Paused {
		return sandbox.Errorf(sandbox.ErrConflict, "sandbox_paused", "sandbox %s is already paused", sb.ID)
	}
	p, err := h.pauser()
	if err != nil {
		return err
	}
	if _, err := p.Pause(r.Context(), sb.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// metrics answers one point, now: paddock keeps no series of a sandbox's
// figures.
func (h *Handler) metrics(w http.ResponseWriter, r *http.Request) error {
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if sb.State != sandbox.Running {
		writeJSON(w, http.StatusOK, []metric{})
		return nil
	}
	st, err := h.cfg.Sandboxes.Stats(r.Context(), sb.ID)
	if err != nil {
		return err
	}
	now := h.cfg.Now().UTC()
	m := metric{Timestamp: now, TimestampUnix: now.Unix(), CPUCount: max(1, int(math.Ceil(sb.Resources.VCPUs))),
		MemUsed: int64(st.MemoryBytes), MemTotal: int64(st.MemoryLimit), DiskUsed: int64(st.DiskBytes), DiskTotal: int64(st.DiskLimitBytes)}
	// Average use since the start: one point has no interval of its own.
	if up := now.Sub(sb.StartedAt); up > 0 && sb.Resources.VCPUs > 0 {
		m.CPUUsedPct = math.Round(1000*float64(st.CPUUsage)/float64(up)/sb.Resources.VCPUs) / 10
	}
	writeJSON(w, http.StatusOK, []metric{m})
	return nil
}

func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request) error {
	if h.cfg.Snapshots == nil {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this server cannot take snapshots")
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Name != "" {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "named snapshots are not supported: a snapshot's id is its template name")
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	snap, err := h.cfg.Snapshots.Snapshot(r.Context(), sb.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, snapshotInfo{SnapshotID: snap.ID, Names: []string{snap.ID}})
	return nil
}

// listSnapshots lists the team's snapshots, ?sandboxID= one sandbox's.
func (h *Handler) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	if h.cfg.Snapshots == nil {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this server cannot take snapshots")
	}
	p := callerOf(r)
	source := r.URL.Query().Get("sandboxID")
	out := []snapshotInfo{}
	team, ok := p.ListTeam()
	if !ok {
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	// Every replica's: the list is the snapshot directory's.
	snaps, err := h.cfg.Snapshots.ListSnapshots(r.Context(), team)
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if !p.CanAccessTeam(s.TeamID) || (source != "" && s.Source != source) {
			continue
		}
		out = append(out, snapshotInfo{SnapshotID: s.ID, Names: []string{s.ID}})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) updateNetwork(w http.ResponseWriter, r *http.Request) error {
	var req networkConfig
	if err := decode(w, r, &req); err != nil {
		return err
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	pol, err := policyOf(true, &req)
	if err != nil {
		return err
	}
	if pol == nil {
		pol = &sandbox.NetworkPolicy{Mode: "allow-all"}
	}
	if _, err := h.cfg.Sandboxes.UpdateNetworkPolicy(r.Context(), sb.ID, *pol); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// refresh is the CLI's keep-alive: extend by ?duration seconds (default
// the E2B default of 60), never shortening.
func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Duration *int64 `json:"duration"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	d := int64(60)
	if req.Duration != nil {
		d = *req.Duration
	}
	t, err := timeoutOf(&d)
	if err != nil {
		return err
	}
	sb, err := h.owned(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if by := h.cfg.Now().Add(t).Sub(sb.ExpiresAt).Round(time.Millisecond); by > 0 && sb.State == sandbox.Running {
		if _, err := h.cfg.Sandboxes.ExtendTimeout(r.Context(), sb.ID, by); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
