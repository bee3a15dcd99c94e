package fake

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Driver is a runtime.Driver whose sandboxes are map entries that all
// answer with one Agent. It records every call and the spec of every
// create, and can be told to fail. Its sandboxes outlive the managers that
// use it, as a host's sandboxes outlive a paddock restart.
type Driver struct {
	agent   *Agent
	name    string
	diskCap bool

	mu sync.Mutex // guards the fields below
	// sock is the agent's socket the sandboxes answer on.
	sock string
	// sandboxes maps id to whether its agent runs.
	sandboxes  map[string]bool
	calls      []string // "create sb-…", "stop sb-…", …
	specs      map[string]runtime.Spec
	stats      runtime.Stats
	createErr  error
	stopErr    error
	destroyErr error
	createHook func(ctx context.Context, id string) error
	// deadAgent lists ids whose agent does not answer though they run.
	deadAgent map[string]bool
}

var _ runtime.Driver = (*Driver)(nil)

// DriverConfig sets up a Driver.
type DriverConfig struct {
	// Agent answers for every sandbox; nil: a new one running Echo.
	Agent *Agent
	// DiskCap is reported in Capabilities.
	DiskCap bool
	// Name is the runtime's name in Capabilities ("fake" if empty).
	Name string
}

// NewDriver returns a Driver with no sandboxes.
func NewDriver(t testing.TB, cfg DriverConfig) *Driver {
	t.Helper()
	a := cfg.Agent
	if a == nil {
		a = StartAgent(t, AgentConfig{})
	}
	name := cfg.Name
	if name == "" {
		name = "fake"
	}
	return &Driver{agent: a, name: name, diskCap: cfg.DiskCap, sock: a.Socket(), sandboxes: map[string]bool{},
		specs: map[string]runtime.Spec{}, deadAgent: map[string]bool{},
		stats: runtime.Stats{PIDs: 3, MemoryBytes: 1 << 20}}
}

// FakeAgent is the Agent every sandbox answers with.
func (d *Driver) FakeAgent() *Agent { return d.agent }

func (d *Driver) record(call, id string) {
	d.mu.Lock()
	d.calls = append(d.calls, call+" "+id)
	d.mu.Unlock()
}

// Called reports whether call ("create", "agent", "stats", "stop",
// "destroy") was made for id.
func (d *Driver) Called(call, id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.calls, call+" "+id)
}

// Count is how many times call was made.
func (d *Driver) Count(call string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if strings.HasPrefix(c, call+" ") {
			n++
		}
	}
	return n
}

// Running reports whether the driver knows id and whether it runs.
func (d *Driver) Running(id string) (running, known bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	running, known = d.sandboxes[id]
	return running, known
}

// Spec is the spec id was last created with.
func (d *Driver) Spec(id string) runtime.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.specs[id]
}

// SetCreateErr makes Create fail with err (nil: succeed).
func (d *Driver) SetCreateErr(err error) { d.mu.Lock(); d.createErr = err; d.mu.Unlock() }

// SetStopErr makes Stop fail with err (nil: succeed).
func (d *Driver) SetStopErr(err error) { d.mu.Lock(); d.stopErr = err; d.mu.Unlock() }

// SetDestroyErr makes Destroy fail with err (nil: succeed).
func (d *Driver) SetDestroyErr(err error) { d.mu.Lock(); d.destroyErr = err; d.mu.Unlock() }

// SetCreateHook runs hook inside Create (outside the driver's lock)
// before it succeeds; an error from it is Create's.
func (d *Driver) SetCreateHook(hook func(ctx context.Context, id string) error) {
	d.mu.Lock()
	d.createHook = hook
	d.mu.Unlock()
}

// SetSandbox puts a sandbox in place as the driver's state on this host:
// running or not.
func (d *Driver) SetSandbox(id string, running bool) {
	d.mu.Lock()
	d.sandboxes[id] = running
	d.mu.Unlock()
}

// Forget drops a sandbox from the driver's state, as if its state on the
// host were gone.
func (d *Driver) Forget(id string) {
	d.mu.Lock()
	delete(d.sandboxes, id)
	d.mu.Unlock()
}

// SetDeadAgent makes id's agent not answer though the sandbox runs.
func (d *Driver) SetDeadAgent(id string) {
	d.mu.Lock()
	d.deadAgent[id] = true
	d.mu.Unlock()
}

// SetStats sets what Stats answers for a running sandbox.
func (d *Driver) SetStats(st runtime.Stats) { d.mu.Lock(); d.stats = st; d.mu.Unlock() }

// SetAgentSocket points the sandboxes at another agent's socket (a real
// agent, say) from now on.
func (d *Driver) SetAgentSocket(sock string) { d.mu.Lock(); d.sock = sock; d.mu.Unlock() }

// ListIsCheap marks List as one the node polls for dead sandboxes, as a
// real runc driver's is.
func (d *Driver) ListIsCheap() {}

func (d *Driver) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Name: d.name, DiskCap: d.diskCap}
}

func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (*agent.Client, error) {
	d.record("create", spec.ID)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake create: %w", err)
	}
	d.mu.Lock()
	d.specs[spec.ID] = spec
	hook, cerr := d.createHook, d.createErr
	d.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, spec.ID); err != nil {
			return nil, err
		}
	}
	if cerr != nil {
		return nil, cerr
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sandboxes[spec.ID] = true
	return agent.UnixClient(d.sock), nil
}

func (d *Driver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	d.record("agent", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	running, ok := d.sandboxes[id]
	switch {
	case !ok:
		return nil, sandbox.ErrNotFound
	case !running:
		return nil, sandbox.ErrNotRunning
	case d.deadAgent[id]:
		return agent.UnixClient(d.sock + ".dead"), nil
	}
	return agent.UnixClient(d.sock), nil
}

func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	d.record("stats", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.sandboxes[id] {
		return runtime.Stats{}, sandbox.ErrNotRunning
	}
	return d.stats, nil
}

func (d *Driver) Stop(ctx context.Context, id string) error {
	d.record("stop", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopErr != nil {
		return d.stopErr
	}
	if _, ok := d.sandboxes[id]; ok {
		d.sandboxes[id] = false
	}
	return nil
}

func (d *Driver) Destroy(ctx context.Context, id string) error {
	d.record("destroy", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.destroyErr != nil {
		return d.destroyErr
	}
	delete(d.sandboxes, id)
	return nil
}

func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []runtime.Info
	for id, running := range d.sandboxes {
		out = append(out, runtime.Info{ID: id, Running: running})
	}
	return out, nil
}

func (d *Driver) Close() error { return nil }

// Adopter is a Driver that takes over the sandboxes of its peers, as
// paddock replicas sharing a Kubernetes namespace do (runtime.Adopter):
// Adopt moves a sandbox from a peer's state into its own. A plain Driver
// has no such power: its sandboxes are its host's.
type Adopter struct {
	*Driver
	peers []*Driver

	mu       sync.Mutex // guards adoptErr
	adoptErr error
}

var _ runtime.Adopter = (*Adopter)(nil)

// NewAdopter makes d an Adopter of the sandboxes of peers.
func NewAdopter(d *Driver, peers ...*Driver) *Adopter { return &Adopter{Driver: d, peers: peers} }

// SetAdoptErr makes Adopt fail with err (nil: succeed).
func (a *Adopter) SetAdoptErr(err error) { a.mu.Lock(); a.adoptErr = err; a.mu.Unlock() }

func (a *Adopter) Adopt(ctx context.Context, id string) (runtime.Info, error) {
	a.record("adopt", id)
	a.mu.Lock()
	err := a.adoptErr
	a.mu.Unlock()
	if err != nil {
		return runtime.Info{}, err
	}
	if running, ok := a.Running(id); ok {
		return runtime.Info{ID: id, Running: running}, nil // its own already
	}
	for _, p := range a.peers {
		p.mu.Lock()
		running, ok := p.sandboxes[id]
		dead := p.deadAgent[id]
		delete(p.sandboxes, id)
		p.mu.Unlock()
		if ok {
			a.Driver.mu.Lock()
			a.sandboxes[id] = running
			a.deadAgent[id] = dead
			a.Driver.mu.Unlock()
			return runtime.Info{ID: id, Running: running}, nil
		}
	}
	return runtime.Info{}, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
}
