package fake

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sandboxes keeps sandboxes in a map and checks requests as node.Manager
// does, for the layers above node (server.Sandboxes, the Vercel layer,
// control.Sandboxes through a small adapter). Every running sandbox
// answers with one agent. It records every create, exec and mutation.
type Sandboxes struct {
	cfg SandboxesConfig

	mu        sync.Mutex // guards the fields below
	sbs       map[string]sandbox.Sandbox
	agents    map[string]*agent.Client // of NewAgent, by sandbox id
	seq       int
	creates   []sandbox.CreateRequest
	execs     []sandbox.ExecRequest
	mutations []string // "create sb-…", "stop sb-…", …
	createErr error
	stats     map[string]runtime.Stats // of SetStats, by sandbox id
}

// SandboxesConfig sets up Sandboxes; the zero value checks nothing.
type SandboxesConfig struct {
	// Agent answers for every running sandbox; nil for tests that run no
	// command.
	Agent *agent.Client
	// NewAgent, when set, gives each new sandbox an agent of its own
	// instead.
	NewAgent func(sb sandbox.Sandbox) *agent.Client
	// Address is every sandbox's address.
	Address netip.Addr
	// IDPrefix starts every new id (then a number of three digits or
	// more); default "sb-".
	IDPrefix string
	// Now stamps creates and stops; nil: time.Now.
	Now func() time.Time
	// Resources fills what a create request leaves zero.
	Resources sandbox.Resources
	// MaxResources bounds a request's resources; zero: no bound.
	MaxResources sandbox.Resources
	// MaxTimeout bounds a sandbox's lifetime; zero: no bound.
	MaxTimeout time.Duration
	// Images, when set, are the images Create knows ("" is "host"); any
	// other is not found. Nil: any image.
	Images []string
	// OnStop runs after a sandbox stops (to end its commands, say).
	OnStop func(id string)
}

// NewSandboxes returns Sandboxes holding none.
func NewSandboxes(cfg SandboxesConfig) *Sandboxes {
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "sb-"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sandboxes{cfg: cfg, sbs: map[string]sandbox.Sandbox{}, agents: map[string]*agent.Client{}}
}

// DefaultTimeout is a new sandbox's lifetime when its request sets none.
const DefaultTimeout = 5 * time.Minute

func notFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
}

func notRunning(sb sandbox.Sandbox) error {
	return sandbox.Errorf(sandbox.ErrNotRunning, "sandbox_not_running", "sandbox %s is %s, not running", sb.ID, sb.State)
}

// Add puts a sandbox in place as it is, not counted as a mutation.
func (f *Sandboxes) Add(sb sandbox.Sandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sbs[sb.ID] = sb
}

// Reset drops every sandbox the fake holds, not counted as a mutation.
func (f *Sandboxes) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.sbs)
}

// SetState moves a sandbox as the node would on its own (a timeout).
func (f *Sandboxes) SetState(id string, st sandbox.State) {
	f.update(id, "", func(sb *sandbox.Sandbox) error { //nolint:errcheck // a test's own id
		sb.State = st
		return nil
	})
}

// SetCreateErr makes Create fail with err, leaving a failed sandbox as
// node does (nil: succeed).
func (f *Sandboxes) SetCreateErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.createErr = err
}

// Count is the number of sandboxes the fake holds.
func (f *Sandboxes) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sbs)
}

// IDs returns the ids of the sandboxes the fake holds, sorted.
func (f *Sandboxes) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.sbs))
}

// Mutations returns "create <id>", "stop <id>", "delete <id>", "extend
// <id>", "ports <id>", "policy <id>", "pause <id>", "resume <id>" and
// "timeout <id>" of every change, in order.
func (f *Sandboxes) Mutations() []string { return cloneLocked(&f.mu, &f.mutations) }

// Creates returns every create request, in order.
func (f *Sandboxes) Creates() []sandbox.CreateRequest { return cloneLocked(&f.mu, &f.creates) }

// Execs returns every exec request that reached a running sandbox, in
// order, as it came.
func (f *Sandboxes) Execs() []sandbox.ExecRequest { return cloneLocked(&f.mu, &f.execs) }

// LastExec is the last exec request that reached a running sandbox.
func (f *Sandboxes) LastExec() sandbox.ExecRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.execs) == 0 {
		return sandbox.ExecRequest{}
	}
	return f.execs[len(f.execs)-1]
}

// Create fills the request's defaults, checks it against the bounds and
// keeps a running sandbox (a failed one when told to fail).
func (f *Sandboxes) Create(_ context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	res := req.Resources
	if res.VCPUs == 0 {
		res.VCPUs = f.cfg.Resources.VCPUs
	}
	if res.MemoryMB == 0 {
		res.MemoryMB = f.cfg.Resources.MemoryMB
	}
	if res.PIDs == 0 {
		res.PIDs = f.cfg.Resources.PIDs
	}
	if f.cfg.MaxResources != (sandbox.Resources{}) {
		if err := res.Validate(f.cfg.MaxResources); err != nil {
			return sandbox.Sandbox{}, err
		}
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if f.cfg.MaxTimeout != 0 && timeout > f.cfg.MaxTimeout {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeout past %s", f.cfg.MaxTimeout)
	}
	img := req.Image
	if img == "" {
		img = "host"
	}
	if f.cfg.Images != nil && !slices.Contains(f.cfg.Images, img) {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "no image %q", req.Image)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	f.seq++
	now := f.cfg.Now()
	sb := sandbox.Sandbox{ID: fmt.Sprintf("%s%03d", f.cfg.IDPrefix, f.seq), State: sandbox.Running, Image: img,
		Snapshot: req.Snapshot, Resources: res, Env: req.Env, Ports: req.Ports, NetworkPolicy: req.NetworkPolicy,
		TeamID: req.TeamID, ProjectID: req.ProjectID, Labels: maps.Clone(req.Labels), Address: f.cfg.Address, CreatedAt: now, StartedAt: now,
		ExpiresAt: now.Add(timeout)}
	if f.createErr != nil {
		// Like node: the failed sandbox's record stays until deleted.
		sb.State = sandbox.Failed
	}
	f.sbs[sb.ID] = sb
	if f.cfg.NewAgent != nil {
		f.agents[sb.ID] = f.cfg.NewAgent(sb)
	}
	f.mutations = append(f.mutations, "create "+sb.ID)
	return sb, f.createErr
}

// Get returns a sandbox. A sandbox whose id is "panic" panics, for tests
// of a caller's recovery.
func (f *Sandboxes) Get(_ context.Context, id string) (sandbox.Sandbox, error) {
	if id == "panic" {
		panic("fake panic")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sandbox.Sandbox{}, notFound(id)
	}
	return sb, nil
}

// List pages through the sandboxes in id order, as node does.
func (f *Sandboxes) List(_ context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.sbs))
	for id, sb := range f.sbs {
		if id > opts.Cursor && (opts.State == "" || sb.State == opts.State) && (opts.TeamID == "" || sb.TeamID == opts.TeamID) &&
			sandbox.MatchLabels(sb.Labels, opts.Labels) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	limit := opts.Limit
	if limit == 0 {
		limit = 100
	}
	next := ""
	if len(ids) > limit {
		ids, next = ids[:limit], ids[limit-1]
	}
	out := make([]sandbox.Sandbox, 0, len(ids))
	for _, id := range ids {
		out = append(out, f.sbs[id])
	}
	return out, next, nil
}

// Stop stops a sandbox that has not ended; stopping an ended one does
// nothing.
func (f *Sandboxes) Stop(_ context.Context, id string) (sandbox.Sandbox, error) {
	return f.end(id, "stop")
}

// Delete stops a sandbox and forgets it.
func (f *Sandboxes) Delete(_ context.Context, id string) error {
	_, err := f.end(id, "delete")
	return err
}

// end stops a sandbox; with "delete" it also drops it.
func (f *Sandboxes) end(id, how string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	sb, ok := f.sbs[id]
	if !ok {
		f.mu.Unlock()
		return sb, notFound(id)
	}
	if !sb.State.Terminal() {
		sb.State, sb.StoppedAt = sandbox.Stopped, f.cfg.Now()
		f.sbs[id] = sb
	}
	if how == "delete" {
		delete(f.sbs, id)
	}
	f.mutations = append(f.mutations, how+" "+id)
	f.mu.Unlock()
	if f.cfg.OnStop != nil {
		f.cfg.OnStop(id)
	}
	return sb, nil
}

// update changes a sandbox with change and records the mutation as "how
// <id>"; an error from change leaves it as it was.
func (f *Sandboxes) update(id, how string, change func(sb *sandbox.Sandbox) error) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, notFound(id)
	}
	if err := change(&sb); err != nil {
		return f.sbs[id], err
	}
	f.sbs[id] = sb
	if how != "" {
		f.mutations = append(f.mutations, how+" "+id)
	}
	return sb, nil
}

func (f *Sandboxes) ExtendTimeout(_ context.Context, id string, by time.Duration) (sandbox.Sandbox, error) {
	return f.update(id, "extend", func(sb *sandbox.Sandbox) error {
		if f.cfg.MaxTimeout != 0 && sb.ExpiresAt.Add(by).Sub(sb.CreatedAt) > f.cfg.MaxTimeout {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "past the maximum of %s", f.cfg.MaxTimeout)
		}
		sb.ExpiresAt = sb.ExpiresAt.Add(by)
		return nil
	})
}

// Pause pauses a running sandbox as node does in small: paused, a pause
// record with the run's timeout, no deadline; pausing a paused one does
// nothing.
func (f *Sandboxes) Pause(_ context.Context, id string) (sandbox.Sandbox, error) {
	return f.update(id, "pause", func(sb *sandbox.Sandbox) error {
		switch sb.State {
		case sandbox.Paused:
			return nil
		case sandbox.Running:
		default:
			return notRunning(*sb)
		}
		now := f.cfg.Now()
		sb.Pause = &sandbox.Pause{Snapshot: "snap-pause-" + id, PausedAt: now, Timeout: sb.ExpiresAt.Sub(sb.StartedAt)}
		sb.State, sb.StoppedAt, sb.ExpiresAt = sandbox.Paused, now, time.Time{}
		return nil
	})
}

// Resume runs a paused sandbox again with timeout (the paused run's if
// zero); resuming a running one does nothing.
func (f *Sandboxes) Resume(_ context.Context, id string, timeout time.Duration) (sandbox.Sandbox, error) {
	return f.update(id, "resume", func(sb *sandbox.Sandbox) error {
		switch {
		case sb.State == sandbox.Running:
			return nil
		case sb.State != sandbox.Paused || sb.Pause == nil:
			return sandbox.Errorf(sandbox.ErrConflict, "sandbox_not_paused", "sandbox %s is %s, not paused", id, sb.State)
		}
		if timeout == 0 {
			timeout = sb.Pause.Timeout
		}
		now := f.cfg.Now()
		sb.State, sb.StartedAt, sb.ExpiresAt, sb.StoppedAt, sb.Pause = sandbox.Running, now, now.Add(timeout), time.Time{}, nil
		return nil
	})
}

// SetTimeout makes a running sandbox end d from now.
func (f *Sandboxes) SetTimeout(_ context.Context, id string, d time.Duration) (sandbox.Sandbox, error) {
	return f.update(id, "timeout", func(sb *sandbox.Sandbox) error {
		if sb.State != sandbox.Running {
			return notRunning(*sb)
		}
		sb.ExpiresAt = f.cfg.Now().Add(d)
		return nil
	})
}

// running returns a sandbox that runs, and its agent.
func (f *Sandboxes) running(id string) (sandbox.Sandbox, *agent.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	switch {
	case !ok:
		return sb, nil, notFound(id)
	case sb.State != sandbox.Running:
		return sb, nil, notRunning(sb)
	}
	if ac, ok := f.agents[id]; ok {
		return sb, ac, nil
	}
	return sb, f.cfg.Agent, nil
}

// Agent returns the agent of a running sandbox.
func (f *Sandboxes) Agent(_ context.Context, id string) (*agent.Client, error) {
	_, ac, err := f.running(id)
	return ac, err
}

// Exec checks the request and starts it on the sandbox's agent with node's
// defaults in small: the sandbox's env under the request's under its
// secrets, the sandbox's working dir. It records the request as it came.
func (f *Sandboxes) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error) {
	if err := req.Validate(); err != nil {
		return agent.Command{}, err
	}
	sb, ac, err := f.running(id)
	if err != nil {
		return agent.Command{}, err
	}
	f.mu.Lock()
	f.execs = append(f.execs, req)
	f.mu.Unlock()
	var env map[string]string
	if len(sb.Env)+len(req.Env)+len(req.SecretEnv) > 0 {
		env = maps.Clone(sb.Env)
		if env == nil {
			env = map[string]string{}
		}
		maps.Copy(env, req.Env)
		maps.Copy(env, req.SecretEnv)
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = sb.WorkingDir
	}
	areq := agent.CommandRequest{Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Env: env, Sudo: req.Sudo,
		TimeoutMs: req.TimeoutMs, Stdin: req.Stdin, PTY: req.PTY, Tag: req.Tag}
	if req.Wait {
		return ac.Run(ctx, areq)
	}
	return ac.Start(ctx, areq)
}

// Stats answers what SetStats gave for a sandbox that runs, else fixed
// figures for one that exists.
func (f *Sandboxes) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	if _, err := f.Get(ctx, id); err != nil {
		return runtime.Stats{}, err
	}
	f.mu.Lock()
	st, ok := f.stats[id]
	f.mu.Unlock()
	if ok {
		return st, nil
	}
	return runtime.Stats{CPUUsage: 1500 * time.Millisecond, MemoryBytes: 1 << 20, PIDs: 3, CPUQuotaFrac: 1}, nil
}

// SetStats makes Stats answer st for sandbox id (counters a test moves).
func (f *Sandboxes) SetStats(id string, st runtime.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stats == nil {
		f.stats = map[string]runtime.Stats{}
	}
	f.stats[id] = st
}

func (f *Sandboxes) AddPorts(_ context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error) {
	return f.update(id, "ports", func(sb *sandbox.Sandbox) error {
		sb.Ports = append(slices.Clone(sb.Ports), ports...)
		return nil
	})
}

func (f *Sandboxes) SetLabels(_ context.Context, id string, labels map[string]string) (sandbox.Sandbox, error) {
	return f.update(id, "labels", func(sb *sandbox.Sandbox) error {
		sb.Labels = maps.Clone(labels)
		return nil
	})
}

func (f *Sandboxes) UpdateNetworkPolicy(_ context.Context, id string, policy sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	return f.update(id, "policy", func(sb *sandbox.Sandbox) error {
		sb.NetworkPolicy = &policy
		return nil
	})
}

// Snapshots keeps snapshots of Sandboxes' sandboxes in a map: a snapshot
// belongs to its source's team, and a fork is a create from it.
type Snapshots struct {
	sbs    *Sandboxes
	prefix string

	mu    sync.Mutex // guards the fields below
	snaps map[string]*image.Snapshot
	seq   int
	taken []string // sources snapshotted, in order
	// unsupported, when set, is what Snapshot and CanSnapshot fail with:
	// a runtime that cannot snapshot.
	unsupported error
	// runningOnly: a runtime that snapshots running sandboxes only
	// (Kubernetes); CanSnapshot says so, and Snapshot of a stopped one
	// fails.
	runningOnly bool
}

// SetRunningOnly makes the fake a runtime that snapshots running sandboxes
// only.
func (f *Snapshots) SetRunningOnly(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runningOnly = on
}

// SetUnsupported makes every snapshot fail with err (nil: succeed again),
// as on a runtime that cannot snapshot.
func (f *Snapshots) SetUnsupported(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unsupported = err
}

// CanSnapshot implements server.Snapshots: the sandbox's error, else what
// SetUnsupported set.
func (f *Snapshots) CanSnapshot(ctx context.Context, id string) error {
	if _, err := f.sbs.Get(ctx, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unsupported == nil && f.runningOnly {
		return sandbox.Errorf(sandbox.ErrUnsupported, sandbox.CodeSnapshotRunningOnly, "the fake runtime snapshots running sandboxes only")
	}
	return f.unsupported
}

// NewSnapshots returns Snapshots over sbs, holding none; ids start with
// prefix (default "snap-").
func NewSnapshots(sbs *Sandboxes, prefix string) *Snapshots {
	if prefix == "" {
		prefix = "snap-"
	}
	return &Snapshots{sbs: sbs, prefix: prefix, snaps: map[string]*image.Snapshot{}}
}

// Add puts a snapshot in place as it is.
func (f *Snapshots) Add(s *image.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps[s.ID] = s
}

// Taken counts the snapshots taken of source.
func (f *Snapshots) Taken(source string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.taken {
		if s == source {
			n++
		}
	}
	return n
}

// Count is the number of snapshots the fake holds.
func (f *Snapshots) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.snaps)
}

func (f *Snapshots) Snapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	sb, err := f.sbs.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unsupported != nil {
		return nil, f.unsupported
	}
	if f.runningOnly && sb.State != sandbox.Running {
		return nil, sandbox.Errorf(sandbox.ErrConflict, "sandbox_layer_removed", "sandbox %s is %s: its changes are gone", id, sb.State)
	}
	f.seq++
	now := f.sbs.cfg.Now()
	s := &image.Snapshot{ID: fmt.Sprintf("%s%d", f.prefix, f.seq), Source: id, TeamID: sb.TeamID, Image: sb.Image,
		Size: 4096, CreatedAt: now, LastUsed: now}
	f.snaps[s.ID] = s
	f.taken = append(f.taken, id)
	return s, nil
}

func (f *Snapshots) Fork(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	if _, err := f.Snapshot(ctx, id); err != nil {
		return sandbox.Sandbox{}, err
	}
	return f.sbs.Create(ctx, req)
}

// ListSnapshots implements server.Snapshots: team's ("" every team's),
// oldest first.
func (f *Snapshots) ListSnapshots(_ context.Context, team string) ([]*image.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*image.Snapshot{}
	for _, s := range f.snaps {
		if team == "" || s.TeamID == team {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *image.Snapshot) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func snapshotNotFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "snapshot_not_found", "snapshot %q not found", id)
}

func (f *Snapshots) GetSnapshot(_ context.Context, id string) (*image.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[id]
	if !ok {
		return nil, snapshotNotFound(id)
	}
	return s, nil
}

func (f *Snapshots) DeleteSnapshot(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.snaps[id]; !ok {
		return snapshotNotFound(id)
	}
	delete(f.snaps, id)
	return nil
}
