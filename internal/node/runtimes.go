package node

import (
	"context"
	"slices"
	"strings"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Runtimes: a node holds one driver per runtime it offers, by the name the
// driver gives itself (Capabilities().Name). A create picks one
// (CreateRequest.Runtime, else the snapshot's, else Config.Driver's); the
// record keeps it (Sandbox.Driver), and every later operation on the
// sandbox, reconcile after a restart included, goes to that driver. A
// record whose runtime this host no longer offers meets missingDriver,
// which fails every call with the reason.

// runtimeSet is the node's drivers; it never changes after New.
type runtimeSet struct {
	def     string                    // the default runtime's name
	drivers map[string]runtime.Driver // by name
	// missing are runtimes this host knows but cannot run, with why.
	missing map[string]string
}

func newRuntimeSet(cfg *Config) (runtimeSet, error) {
	rs := runtimeSet{def: cfg.Driver.Capabilities().Name, drivers: map[string]runtime.Driver{}, missing: map[string]string{}}
	for _, d := range append([]runtime.Driver{cfg.Driver}, cfg.Drivers...) {
		name := d.Capabilities().Name
		if _, dup := rs.drivers[name]; dup || name == "" {
			return rs, sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: two drivers named %q", name)
		}
		rs.drivers[name] = d
	}
	for name, why := range cfg.Unavailable {
		if _, ok := rs.drivers[name]; !ok {
			rs.missing[name] = why
		}
	}
	return rs, nil
}

// resolve returns the name and driver of the runtime a create asks for
// ("" the default), or ErrInvalid saying why it cannot run here.
func (rs runtimeSet) resolve(name string) (string, runtime.Driver, error) {
	if name == "" {
		name = rs.def
	}
	if d, ok := rs.drivers[name]; ok {
		return name, d, nil
	}
	if why, ok := rs.missing[name]; ok {
		return "", nil, sandbox.Errorf(sandbox.ErrInvalid, "runtime_unavailable", "runtime %q is unavailable on this host: %s", name, why)
	}
	return "", nil, sandbox.Errorf(sandbox.ErrInvalid, "unknown_runtime", "unknown runtime %q: this host offers %s", name, strings.Join(rs.names(), ", "))
}

// names lists the runtimes that run here, sorted.
func (rs runtimeSet) names() []string {
	var out []string
	for n := range rs.drivers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// of returns the driver of a record's runtime ("": the default, as for a
// record older than runtimes), or a missingDriver.
func (rs runtimeSet) of(name string) runtime.Driver {
	if name == "" {
		name = rs.def
	}
	if d, ok := rs.drivers[name]; ok {
		return d
	}
	why, ok := rs.missing[name]
	if !ok {
		why = "this host does not offer it"
	}
	return missingDriver{name: name, why: why}
}

// driverOf is the driver of sb's runtime.
func (m *Manager) driverOf(sb sandbox.Sandbox) runtime.Driver { return m.rt.of(sb.Driver) }

// Runtimes lists the runtimes this host knows, available or not, sorted
// by name: what GET /api/v1/runtimes shows.
func (m *Manager) Runtimes() []runtime.Status {
	var out []runtime.Status
	for name, d := range m.rt.drivers {
		out = append(out, runtime.Status{Name: name, Default: name == m.rt.def, Available: true, Capabilities: d.Capabilities()})
	}
	for name, why := range m.rt.missing {
		out = append(out, runtime.Status{Name: name, Reason: why, Capabilities: runtime.Capabilities{Name: name}})
	}
	slices.SortFunc(out, func(a, b runtime.Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// checkCapabilities refuses what a request asks that its runtime cannot
// do, rather than run the sandbox without it.
func checkCapabilities(name string, caps runtime.Capabilities, req sandbox.CreateRequest) error {
	if req.Resources.DiskMB > 0 && !caps.DiskCap {
		if name == "runc" {
			return errNoDiskCap
		}
		return sandbox.Errorf(sandbox.ErrUnsupported, "sandbox_disk_unsupported",
			"runtime %q cannot cap sandbox disks (%d MB asked, or the host's default cap): use a runtime that can (GET /api/v1/runtimes), or the operator runs paddock with --sandbox-disk 0 to let sandboxes without a cap of their own run uncapped", name, req.Resources.DiskMB)
	}
	return nil
}

// errNoSnapshotsOn refuses a snapshot or pause of a sandbox whose runtime
// cannot copy its writable layer.
func errNoSnapshotsOn(name string) error {
	return sandbox.Errorf(sandbox.ErrUnsupported, "snapshots_unsupported",
		"runtime %q cannot snapshot or pause sandboxes on this host (GET /api/v1/runtimes lists what each runtime can do)", name)
}

// snapshotterOf is sb's driver as a Snapshotter, or the error saying its
// runtime has none.
func (m *Manager) snapshotterOf(sb sandbox.Sandbox) (runtime.Snapshotter, error) {
	d := m.driverOf(sb)
	s, ok := d.(runtime.Snapshotter)
	if !ok {
		return nil, errNoSnapshotsOn(d.Capabilities().Name)
	}
	return s, nil
}

// missingDriver stands for a runtime a record names that this host does
// not run (runsc removed since the sandbox was made): every call fails
// with the reason, and it has no sandboxes to list.
type missingDriver struct{ name, why string }

var _ runtime.Driver = missingDriver{}

func (d missingDriver) err() error {
	return sandbox.Errorf(sandbox.ErrUnavailable, "runtime_unavailable", "runtime %q is unavailable on this host: %s", d.name, d.why)
}

func (d missingDriver) Capabilities() runtime.Capabilities { return runtime.Capabilities{Name: d.name} }
func (d missingDriver) Create(context.Context, runtime.Spec) (*agent.Client, error) {
	return nil, d.err()
}
func (d missingDriver) Agent(context.Context, string) (*agent.Client, error) { return nil, d.err() }
func (d missingDriver) Stats(context.Context, string) (runtime.Stats, error) {
	return runtime.Stats{}, d.err()
}
func (d missingDriver) Stop(context.Context, string) error           { return d.err() }
func (d missingDriver) Destroy(context.Context, string) error        { return d.err() }
func (d missingDriver) List(context.Context) ([]runtime.Info, error) { return nil, nil }
func (d missingDriver) Close() error                                 { return nil }

// CheckRuntime refuses a runtime name a create could not run on (see
// CreateRequest.Runtime): a project's, checked when it is saved.
func (m *Manager) CheckRuntime(name string) error {
	_, _, err := m.rt.resolve(name)
	return err
}
