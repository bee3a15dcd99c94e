package vercel

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Bounds Vercel documents and this layer enforces itself.
const (
	maxTags      = 5
	defaultLimit = 50
	maxLimit     = 100
)

// Bounds of what a sandbox's record keeps, so that one record stays small
// (it is read on every request naming one of its sessions) and a team
// cannot grow the store without limit through it.
const (
	maxEnvVars     = 256
	maxEnvBytes    = 64 << 10 // names and values together
	maxTagBytes    = 256      // a tag's key or value
	maxShortField  = 256      // projectId, runtime, image, region, a failover region, a revision
	maxFailover    = 16
	maxPorts       = 32
	maxURLBytes    = 4096
	maxPolicyRules = 256 // allowed domains, allowed CIDRs, denied CIDRs, each
	maxDomainBytes = 253
)

// checkConfig refuses a config past the bounds above: 413 for an env too
// large, 400 for anything else.
func checkConfig(cfg SandboxConfig) error {
	if len(cfg.Env) > maxEnvVars {
		return badRequest("at most %d environment variables", maxEnvVars)
	}
	size := 0
	for k, v := range cfg.Env {
		size += len(k) + len(v)
	}
	if size > maxEnvBytes {
		return sandbox.Errorf(sandbox.ErrTooLarge, "env_too_large",
			"the environment is %d bytes; at most %d (names and values together)", size, maxEnvBytes)
	}
	if len(cfg.Tags) > maxTags {
		return badRequest("at most %d tags", maxTags)
	}
	for k, v := range cfg.Tags {
		if k == "" || len(k) > maxTagBytes || len(v) > maxTagBytes {
			return badRequest("a tag's key must be 1-%d bytes and its value at most %d", maxTagBytes, maxTagBytes)
		}
	}
	if len(cfg.Ports) > maxPorts {
		return badRequest("at most %d ports", maxPorts)
	}
	if len(cfg.Failover) > maxFailover {
		return badRequest("at most %d failover regions", maxFailover)
	}
	short := map[string]string{"runtime": cfg.Runtime, "image": cfg.Image, "region": cfg.Region}
	for _, r := range cfg.Failover {
		if len(r) > maxShortField {
			return badRequest("failoverRegions entries must be at most %d bytes", maxShortField)
		}
	}
	if src := cfg.Source; src != nil {
		short["source.revision"] = src.Revision
		if len(src.URL) > maxURLBytes {
			return badRequest("source.url must be at most %d bytes", maxURLBytes)
		}
	}
	for field, v := range short {
		if len(v) > maxShortField {
			return badRequest("%s must be at most %d bytes", field, maxShortField)
		}
	}
	if p := cfg.NetworkPolicy; p != nil {
		if len(p.AllowDomains) > maxPolicyRules || len(p.AllowCIDRs) > maxPolicyRules || len(p.DenyCIDRs) > maxPolicyRules {
			return badRequest("a network policy lists at most %d domains and %d subnets of each kind", maxPolicyRules, maxPolicyRules)
		}
		for _, d := range p.AllowDomains {
			if len(d) > maxDomainBytes {
				return badRequest("domain names are at most %d bytes", maxDomainBytes)
			}
		}
	}
	return nil
}

// checkProject refuses a Vercel project id that a record could not keep.
func checkProject(id string) error {
	switch {
	case id == "":
		return badRequest("projectId is required")
	case len(id) > maxShortField || strings.ContainsRune(id, 0):
		return badRequest("projectId must be at most %d bytes, without NUL", maxShortField)
	}
	return nil
}

// configFromCreate checks a create request (v1, v2 or v3) and turns it into
// a record's config, the source to fetch with its credentials, and whether
// the sandbox is persistent.
func (h *Handler) configFromCreate(r *http.Request, req *createRequest) (SandboxConfig, *sandbox.Source, error) {
	cfg := SandboxConfig{Cwd: DefaultCwd}
	if err := refuseUnsupported(req.NetworkID != nil, len(req.Mounts) > 0, req.SnapshotExpiration != nil, req.KeepLastSnapshots != nil); err != nil {
		return cfg, nil, err
	}
	switch {
	case req.Runtime != "" && req.Image != "":
		return cfg, nil, badRequest("runtime and image cannot be used together")
	case len(req.Tags) > maxTags:
		return cfg, nil, badRequest("at most %d tags", maxTags)
	}
	if err := checkPorts(req.Ports); err != nil {
		return cfg, nil, err
	}
	cfg.Ports = slices.Clone(req.Ports)
	if err := setLimits(&cfg, req.Timeout, req.Resources); err != nil {
		return cfg, nil, err
	}
	if err := sandbox.ValidateEnv(req.Env); err != nil {
		return cfg, nil, err
	}
	cfg.Env, cfg.Tags = maps.Clone(req.Env), maps.Clone(req.Tags)
	pol, err := policyFromRequest(req.NetworkPolicy)
	if err != nil {
		return cfg, nil, err
	}
	cfg.NetworkPolicy = pol
	// Every runtime runs on the image paddock has (the host's /usr by
	// default); the name is kept and reported back.
	cfg.Runtime, cfg.Image = req.Runtime, req.Image
	cfg.Region, cfg.Failover = req.Region, slices.Clone(req.FailoverRegions)
	if err := checkConfig(cfg); err != nil {
		return cfg, nil, err
	}
	var src *sandbox.Source
	if s := req.Source; s != nil {
		switch s.Type {
		case "snapshot":
			if s.SnapshotID == "" {
				return cfg, nil, badRequest("source.snapshotId is required")
			}
			if req.Image != "" || req.Runtime != "" {
				return cfg, nil, badRequest("a snapshot source cannot be combined with runtime or image")
			}
			if _, _, err := h.visibleSnapshot(r, s.SnapshotID); err != nil {
				return cfg, nil, err
			}
			cfg.Source = &SourceConfig{Type: "snapshot", SnapshotID: s.SnapshotID}
		case "git", "tarball":
			if s.URL == "" {
				return cfg, nil, badRequest("source.url is required")
			}
			if s.Type == "tarball" && (s.Depth != 0 || s.Revision != "" || s.Username != "" || s.Password != "") {
				return cfg, nil, badRequest("a tarball source takes only a url")
			}
			if s.Depth < 0 {
				return cfg, nil, badRequest("source.depth must be at least 1")
			}
			depth := s.Depth
			if s.Type == "git" && depth == 0 {
				depth = -1 // Vercel clones the whole history unless depth is given
			}
			cfg.Source = &SourceConfig{Type: s.Type, URL: s.URL, Depth: depth, Revision: s.Revision, Private: s.Username != "" || s.Password != ""}
			if err := checkConfig(cfg); err != nil {
				return cfg, nil, err
			}
			src = &sandbox.Source{Type: s.Type, URL: s.URL, Revision: s.Revision, Depth: depth, Username: s.Username, Password: s.Password}
		default:
			return cfg, nil, badRequest("unknown source type %q", s.Type)
		}
	}
	return cfg, src, nil
}

// refuseUnsupported refuses the options of create and update that need
// what paddock lacks: Secure Compute networks, drives, snapshot retention.
func refuseUnsupported(networkID, mounts, snapshotExpiration, keepLastSnapshots bool) error {
	switch {
	case networkID:
		return unsupportedOption("networkId (Secure Compute networks)")
	case mounts:
		return unsupportedOption("mounts (drives)")
	case snapshotExpiration:
		return unsupportedOption("snapshotExpiration: paddock's snapshots expire after the store's TTL from last use")
	case keepLastSnapshots:
		return unsupportedOption("keepLastSnapshots")
	}
	return nil
}

func checkPorts(ports []int) error {
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return badRequest("port %d is outside 1-65535", p)
		}
	}
	return nil
}

// setLimits applies a request's timeout and vCPUs, each only when given.
func setLimits(cfg *SandboxConfig, timeout *int64, res *resourcesRequest) error {
	if timeout != nil {
		if *timeout <= 0 {
			return badRequest("timeout must be positive")
		}
		cfg.TimeoutMs = *timeout
	}
	if res != nil {
		if res.VCPUs <= 0 {
			return badRequest("resources.vcpus must be positive")
		}
		cfg.VCPUs = res.VCPUs
	}
	return nil
}

// nameOrRandom checks a requested sandbox name, or makes one up when none
// is given, as Vercel does.
func nameOrRandom(name string) (string, error) {
	if name == "" {
		return randomName(), nil
	}
	if !namePattern().MatchString(name) {
		return "", badRequest("name must match ^[a-zA-Z0-9_-]+$ and be at most 128 characters")
	}
	return name, nil
}

// createV2 is POST /v3/sandboxes and POST /v2/sandboxes.
func (h *Handler) createV2(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := decodeCreate(w, r, &req); err != nil {
		return err
	}
	scope, _ := scopeOf(r, "")
	scope.Project = req.ProjectID
	if err := checkProject(scope.Project); err != nil {
		return err
	}
	var err error
	if req.Name, err = nameOrRandom(req.Name); err != nil {
		return err
	}
	cfg, src, err := h.configFromCreate(r, &req)
	if err != nil {
		return err
	}
	rec := Record{Scope: scope, Name: req.Name, API: apiV2, Persistent: req.Persistent == nil || *req.Persistent, Config: cfg}
	out, err := h.createRecord(r.Context(), rec, src)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// createRecord starts a new named sandbox's first session and saves it.
func (h *Handler) createRecord(ctx context.Context, rec Record, src *sandbox.Source) (sandboxAndSession, error) {
	// A cheap check first: the store's own check, at the save, comes
	// after a session has started.
	if _, err := h.store.get(ctx, rec.Scope, rec.Name); err == nil {
		return sandboxAndSession{}, errSandboxExists(rec.Name)
	} else if !errors.Is(err, sandbox.ErrNotFound) {
		return sandboxAndSession{}, err
	}
	if err := h.startFirstSession(ctx, &rec, src); err != nil {
		return sandboxAndSession{}, err
	}
	return h.describe(ctx, &rec, false)
}

// startFirstSession starts a new record's first session and saves the
// record. A v1 record is named after that session. A record that cannot
// be saved (its name taken meanwhile, through another replica) takes its
// session's sandbox with it, so that none runs unknown to this API.
func (h *Handler) startFirstSession(ctx context.Context, rec *Record, src *sandbox.Source) error {
	rec.CreatedAt = ms(h.now())
	s, err := h.startSession(ctx, rec, "", src)
	if err != nil {
		return err
	}
	rec.addSession(s)
	if rec.API == apiV1 {
		rec.Name = s.ID
	}
	if err := h.store.create(context.WithoutCancel(ctx), rec); err != nil {
		h.dropSession(ctx, &s)
		return err
	}
	return nil
}

// namedRecord reads {name} in the request's team and projectId.
func (h *Handler) namedRecord(r *http.Request) (Record, error) {
	scope, err := scopeOf(r, "projectId")
	if err != nil {
		return Record{}, err
	}
	rec, err := h.store.get(r.Context(), scope, r.PathValue("name"))
	if err != nil {
		return Record{}, err
	}
	if rec.API != apiV2 {
		return Record{}, errSandboxNotFound
	}
	return rec, nil
}

// getV2 is GET /v2/sandboxes/{name}; resume=true starts a new session when
// the current one has ended.
func (h *Handler) getV2(w http.ResponseWriter, r *http.Request) error {
	resume, err := boolParam(r, "resume")
	if err != nil {
		return err
	}
	rec, err := h.namedRecord(r)
	if err != nil {
		return err
	}
	if !resume {
		return h.answerDescribe(w, r, &rec, false)
	}
	rec, resumed, err := h.resume(r.Context(), rec)
	if err != nil {
		return err
	}
	return h.answerDescribe(w, r, &rec, resumed)
}

// answerDescribe answers {sandbox, session, routes, resumed?}.
func (h *Handler) answerDescribe(w http.ResponseWriter, r *http.Request, rec *Record, resumed bool) error {
	out, err := h.describe(r.Context(), rec, resumed)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, badRequest("%s must be true or false, got %q", name, v)
	}
}

func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, badRequest("limit must be an integer in [1, %d]", maxLimit)
	}
	return n, nil
}

// page cuts items at an opaque cursor (an offset) and returns the next one.
func page[T any](r *http.Request, items []T) ([]T, cursorPage, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, cursorPage{}, err
	}
	off := 0
	if c := r.URL.Query().Get("cursor"); c != "" {
		if off, err = strconv.Atoi(c); err != nil || off < 0 {
			return nil, cursorPage{}, badRequest("cursor %q is not one this server gave", c)
		}
	}
	off = min(off, len(items))
	end := min(off+limit, len(items))
	p := cursorPage{Count: end - off}
	if end < len(items) {
		next := strconv.Itoa(end)
		p.Next = &next
	}
	return items[off:end], p, nil
}

func sortOrder(r *http.Request) (desc bool, err error) {
	switch v := r.URL.Query().Get("sortOrder"); v {
	case "", "desc":
		return true, nil
	case "asc":
		return false, nil
	default:
		return false, badRequest("sortOrder must be asc or desc, got %q", v)
	}
}

// listV2 is GET /v2/sandboxes.
func (h *Handler) listV2(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	scope := listScope(r)
	desc, err := sortOrder(r)
	if err != nil {
		return err
	}
	sortBy := q.Get("sortBy")
	switch sortBy {
	case "", "createdAt", "name", "statusUpdatedAt":
	default:
		return badRequest("sortBy must be createdAt, name or statusUpdatedAt")
	}
	var tagKey, tagValue string
	if tags := q["tags"]; len(tags) > 1 {
		return badRequest("filter by one tag at most")
	} else if len(tags) == 1 {
		var ok bool
		if tagKey, tagValue, ok = strings.Cut(tags[0], ":"); !ok {
			return badRequest("tags must be key:value")
		}
	}
	prefix := q.Get("namePrefix")
	// Sorted by what the store does not keep (a session's live status):
	// every match is read, a page at a time, and only its description kept.
	items := []wireSandbox{}
	err = h.store.eachSandbox(r.Context(), scope, apiV2, func(rec Record) error {
		if !strings.HasPrefix(rec.Name, prefix) || (tagKey != "" && rec.Config.Tags[tagKey] != tagValue) {
			return nil
		}
		var cur *wireSession
		if s := rec.current(); s != nil {
			l, err := h.live(r.Context(), s)
			if err != nil {
				return err
			}
			ws := h.wireSessionOf(r.Context(), &rec, l)
			cur = &ws
		}
		items = append(items, h.wireSandboxOf(&rec, cur))
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortStableFunc(items, func(a, b wireSandbox) int {
		var c int
		switch sortBy {
		case "name":
			c = strings.Compare(a.Name, b.Name)
		case "statusUpdatedAt":
			c = cmp.Compare(a.StatusUpdatedAt, b.StatusUpdatedAt)
		default:
			c = cmp.Compare(a.CreatedAt, b.CreatedAt)
		}
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
		}
		if desc {
			return -c
		}
		return c
	})
	items, p, err := page(r, items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": items, "pagination": p})
	return nil
}

// updateV2 is PATCH /v2/sandboxes/{name}. Settings apply to the next
// session, except ports, which a running session gains at once.
func (h *Handler) updateV2(w http.ResponseWriter, r *http.Request) error {
	var req updateRequest
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := refuseUnsupported(req.NetworkID != nil, req.Mounts != nil, req.SnapshotExpiration != nil, req.KeepLastSnapshots != nil); err != nil {
		return err
	}
	var pol *PolicyConfig
	var err error
	if req.NetworkPolicy != nil {
		if pol, err = policyFromRequest(req.NetworkPolicy); err != nil {
			return err
		}
	}
	if req.Ports != nil {
		if err := checkPorts(*req.Ports); err != nil {
			return err
		}
	}
	// patch is the request, applied to whatever the record holds when it
	// is saved: a change another writer saved first is kept.
	patch := func(rec *Record) error {
		if req.Persistent != nil {
			rec.Persistent = *req.Persistent
		}
		if err := setLimits(&rec.Config, req.Timeout, req.Resources); err != nil {
			return err
		}
		if req.NetworkPolicy != nil {
			rec.Config.NetworkPolicy = pol
		}
		if req.Tags != nil {
			rec.Config.Tags = maps.Clone(req.Tags)
		}
		if req.Region != nil {
			rec.Config.Region = *req.Region
		}
		if req.FailoverRegions != nil {
			rec.Config.Failover = slices.Clone(*req.FailoverRegions)
		}
		if req.CurrentSnapshotID != nil {
			rec.CurrentSnapshotID = *req.CurrentSnapshotID
		}
		if req.Ports != nil {
			rec.Config.Ports = slices.Clone(*req.Ports)
		}
		return nil
	}
	// Refuse a bad request before anything happens: what it sets, alone,
	// then on the record (patch replaces maps and slices rather than
	// changing them, so a shallow copy will do).
	var trial Record
	if err := patch(&trial); err != nil {
		return err
	}
	if err := checkConfig(trial.Config); err != nil {
		return err
	}
	rec, err := h.namedRecord(r)
	if err != nil {
		return err
	}
	if req.CurrentSnapshotID != nil {
		if _, _, err := h.visibleSnapshot(r, *req.CurrentSnapshotID); err != nil {
			return err
		}
	}
	trial = rec
	_ = patch(&trial)
	if err := checkConfig(trial.Config); err != nil {
		return err
	}
	if req.Ports != nil {
		if err := h.applyPorts(r.Context(), &rec, *req.Ports); err != nil {
			return err
		}
	}
	// Detached: a running session may already have gained ports above.
	if rec, err = h.change(r.Context(), rec, patch); err != nil {
		return err
	}
	out, err := h.describe(r.Context(), &rec, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandbox": out.Sandbox, "routes": out.Routes})
	return nil
}

// applyPorts gives a running session the ports it lacks. paddock cannot
// withdraw a port from a running sandbox, so a list that drops one is
// refused while a session runs.
func (h *Handler) applyPorts(ctx context.Context, rec *Record, ports []int) error {
	cur := rec.current()
	if cur == nil {
		return nil
	}
	l, err := h.live(ctx, cur)
	if err != nil || !l.found || l.sb.State != sandbox.Running {
		return err
	}
	var add []sandbox.Port
	for _, p := range l.sb.Ports {
		if !slices.Contains(ports, p.Port) {
			return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "removing port %d from a running session is not supported; stop the sandbox first", p.Port)
		}
	}
	for _, p := range ports {
		if !slices.ContainsFunc(l.sb.Ports, func(x sandbox.Port) bool { return x.Port == p }) {
			add = append(add, sandbox.Port{Port: p})
		}
	}
	if len(add) == 0 {
		return nil
	}
	if _, err := h.sb.AddPorts(ctx, cur.ID, add); err != nil {
		return err
	}
	return nil
}

// deleteV2 is DELETE /v2/sandboxes/{name}: its sessions' sandboxes go, and
// with deleteOrphanSnapshots its snapshots too. The delete is optimistic:
// a session another writer started meanwhile goes too.
func (h *Handler) deleteV2(w http.ResponseWriter, r *http.Request) error {
	orphans, err := boolParam(r, "deleteOrphanSnapshots")
	if err != nil {
		return err
	}
	rec, err := h.namedRecord(r)
	if err != nil {
		return err
	}
	ctx := context.WithoutCancel(r.Context())
	out, err := h.describe(ctx, &rec, false)
	if err != nil {
		return err
	}
	for try := 1; ; try++ {
		for i := range rec.Sessions {
			h.dropSession(ctx, &rec.Sessions[i])
		}
		err := h.store.remove(ctx, rec)
		if err == nil {
			break
		}
		if !isStale(err) || try == maxTries {
			return err
		}
		backoff(try)
		if rec, err = h.store.get(ctx, rec.Scope, rec.Name); err != nil {
			return err
		}
	}
	if orphans && h.snaps != nil {
		var snaps []SnapshotRecord
		err := h.store.eachSnapshot(ctx, rec.Scope, rec.Name, func(s SnapshotRecord) error {
			snaps = append(snaps, s)
			return nil
		})
		if err != nil {
			return err
		}
		for _, s := range snaps {
			if err := h.snaps.DeleteSnapshot(ctx, s.ID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
				h.log.Warn("vercel compat: delete orphan snapshot", "snapshot", s.ID, "err", err)
				continue
			}
			_ = h.store.deleteSnapshot(ctx, s.Team, s.ID)
		}
	}
	out.Sandbox.Status = "stopped"
	writeJSON(w, http.StatusOK, map[string]any{"sandbox": out.Sandbox, "routes": []wireRoute{}})
	return nil
}

// forkV2 is POST /v2/sandboxes/{name}/fork: a new sandbox with the
// source's config (overridden by the body) whose first session starts from
// the source's current snapshot, or from its base when it has none.
func (h *Handler) forkV2(w http.ResponseWriter, r *http.Request) error {
	if r.PathValue("name") == "drives" {
		return unsupported(drivesUnsupported)(h, w, r) // POST /v2/sandboxes/drives/{name}
	}
	var req createRequest
	if err := decodeCreate(w, r, &req); err != nil {
		return err
	}
	if req.Source != nil || req.Runtime != "" {
		return badRequest("a fork starts from its source: source and runtime are not allowed")
	}
	src, err := h.namedRecord(r)
	if err != nil {
		return err
	}
	if req.Name, err = nameOrRandom(req.Name); err != nil {
		return err
	}
	over, _, err := h.configFromCreate(r, &req)
	if err != nil {
		return err
	}
	cfg := src.Config
	cfg.Env, cfg.Tags = maps.Clone(cfg.Env), maps.Clone(cfg.Tags)
	if req.Ports != nil {
		cfg.Ports = over.Ports
	}
	if req.Timeout != nil {
		cfg.TimeoutMs = over.TimeoutMs
	}
	if req.Resources != nil {
		cfg.VCPUs = over.VCPUs
	}
	if req.Image != "" {
		cfg.Image = over.Image
	}
	if req.NetworkPolicy != nil {
		cfg.NetworkPolicy = over.NetworkPolicy
	}
	if req.Env != nil {
		cfg.Env = over.Env
	}
	if req.Tags != nil {
		cfg.Tags = over.Tags
	}
	if req.Region != "" {
		cfg.Region = over.Region
	}
	if req.FailoverRegions != nil {
		cfg.Failover = over.Failover
	}
	if src.CurrentSnapshotID != "" {
		cfg.Source = &SourceConfig{Type: "snapshot", SnapshotID: src.CurrentSnapshotID}
		cfg.Image = ""
	} else if cfg.Source != nil && cfg.Source.Private {
		return badRequest("sandbox %s has no snapshot and starts from a private repository whose credentials paddock does not keep", src.Name)
	}
	if err := checkConfig(cfg); err != nil {
		return err
	}
	rec := Record{Scope: src.Scope, Name: req.Name, API: apiV2, Persistent: src.Persistent, Config: cfg}
	if req.Persistent != nil {
		rec.Persistent = *req.Persistent
	}
	out, err := h.createRecord(r.Context(), rec, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// visibleSnapshot returns the snapshot named id if the request's team may see it:
// paddock keeps it, it is the team's (a snapshot belongs to its source
// sandbox's team; one from before teams, to host admins only) and, when
// this API took it, its record is the team's. Any other is not found.
func (h *Handler) visibleSnapshot(r *http.Request, id string) (*image.Snapshot, SnapshotRecord, error) {
	if h.snaps == nil {
		return nil, SnapshotRecord{}, errNoSnapshots
	}
	c := callerOf(r)
	// Another team's record is not found: the snapshot's own team decides.
	sr, err := h.store.getSnapshot(r.Context(), c.team, id)
	if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return nil, SnapshotRecord{}, err
	}
	snap, err := h.snaps.GetSnapshot(r.Context(), id)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return nil, SnapshotRecord{}, errSnapshotNotFound
	case err != nil:
		return nil, SnapshotRecord{}, err
	case snap.TeamID != c.team && (snap.TeamID != "" || !c.p.HostAdmin):
		return nil, SnapshotRecord{}, errSnapshotNotFound
	}
	return snap, sr, nil
}

// listSessions is GET /v2/sandboxes/sessions?name=.
func (h *Handler) listSessions(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	scope := listScope(r)
	if scope.Project == "" || q.Get("name") == "" {
		return badRequest("project and name are required")
	}
	desc, err := sortOrder(r)
	if err != nil {
		return err
	}
	rec, err := h.store.get(r.Context(), scope, q.Get("name"))
	if err != nil {
		return err
	}
	if rec.API != apiV2 {
		return errSandboxNotFound // a v1 sandbox has no sessions to list
	}
	items := []wireSession{}
	for i := range rec.Sessions {
		l, err := h.live(r.Context(), &rec.Sessions[i])
		if err != nil {
			return err
		}
		items = append(items, h.wireSessionOf(r.Context(), &rec, l))
	}
	if desc {
		slices.Reverse(items)
	}
	items, p, err := page(r, items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": items, "pagination": p})
	return nil
}

// getSession is GET /v2/sandboxes/sessions/{sid}.
func (h *Handler) getSession(w http.ResponseWriter, r *http.Request) error {
	rec, s, err := h.sessionRecord(r)
	if err != nil {
		return err
	}
	l, err := h.live(r.Context(), s)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"session": h.wireSessionOf(r.Context(), &rec, l), "routes": h.routesOf(l)})
	return nil
}
