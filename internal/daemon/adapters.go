package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/pool"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/compat/e2b"
	"github.com/paddock-dev/paddock/internal/store"
)

// The adapters below only connect two packages: each forwards to
// node.Manager or image.Store. The rules (what is in use, what a removal
// collects) live in node. node.Manager is the server's Sandboxes as it is:
// both speak the sandbox package's request types.

var (
	_ server.Sandboxes  = (*node.Manager)(nil)
	_ server.Pauser     = (*node.Manager)(nil) // pause and resume, through the API and the E2B layer
	_ e2b.TimeoutSetter = (*node.Manager)(nil) // E2B's set timeout moves an end either way
)

// warmSandboxes is node as the server's (and the Vercel layer's)
// Sandboxes, with creates served from the warm pools when one matches.
type warmSandboxes struct {
	*node.Manager
	pools *pool.Manager
}

var _ frontSandboxes = warmSandboxes{}

// frontSandboxes is what the API, the Vercel layer and the E2B layer
// create and drive sandboxes through: server.Sandboxes with the optional
// powers they look for (pause and resume, a timeout set either way).
// The wrappers in front of node (admission, budgets) embed it rather than
// server.Sandboxes, so that those powers are not hidden behind them.
type frontSandboxes interface {
	server.Sandboxes
	server.Pauser
	SetTimeout(ctx context.Context, id string, d time.Duration) (sandbox.Sandbox, error)
}

// Create implements server.Sandboxes: a claim from a pool, else a cold create.
func (w warmSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	return w.pools.Create(ctx, req)
}

// admittedSandboxes is the server's (and the Vercel layer's) Sandboxes
// with every create admitted first: within the team's limits and the
// host's capacity, or after a wait in the queue. It wraps whatever makes
// sandboxes (node.Manager here), so that admission stays in front of it.
type admittedSandboxes struct {
	frontSandboxes
	adm *admission.Controller
}

var _ frontSandboxes = admittedSandboxes{}

// Create implements server.Sandboxes.
func (a admittedSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	return admitted(ctx, a.adm, req, a.frontSandboxes.Create)
}

// Resume implements server.Pauser: a paused sandbox holds no slot (its
// pause gave it back: nothing of it runs), so its resume is admitted like
// a create — within its team's limits, after a wait in the queue, or
// refused with a Retry-After — and the slot is its own again.
func (a admittedSandboxes) Resume(ctx context.Context, id string, timeout time.Duration) (sandbox.Sandbox, error) {
	sb, err := a.frontSandboxes.Get(ctx, id)
	if err != nil || sb.State != sandbox.Paused {
		return a.frontSandboxes.Resume(ctx, id, timeout) // running: unchanged; otherwise node's answer
	}
	return admitted(ctx, a.adm, sandbox.CreateRequest{TeamID: sb.TeamID, Resources: sb.Resources},
		func(ctx context.Context, _ sandbox.CreateRequest) (sandbox.Sandbox, error) {
			return a.frontSandboxes.Resume(ctx, id, timeout)
		})
}

// admitted runs create once req's team has a slot for it, binds the slot
// to the sandbox made, and gives it back when none was.
func admitted(ctx context.Context, adm *admission.Controller, req sandbox.CreateRequest,
	create func(context.Context, sandbox.CreateRequest) (sandbox.Sandbox, error),
) (sandbox.Sandbox, error) {
	t, err := adm.Acquire(ctx, admission.Request{Team: req.TeamID, VCPUs: req.Resources.VCPUs,
		MemoryMB: req.Resources.MemoryMB, Deadline: admission.Deadline(ctx)})
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	sb, err := create(ctx, req)
	if err != nil || sb.State != sandbox.Running && sb.State != sandbox.Pending {
		t.Release(ctx)
		return sb, err
	}
	// A bind that fails has logged why; the sandbox runs all the same, and
	// its unbound hold expires.
	_ = t.Bind(ctx, sb)
	return sb, nil
}

// portTargets is node as the port proxy's Resolver: where a sandbox's
// ports are, from node's in-memory record (it is asked on every proxied
// request).
type portTargets struct{ node *node.Manager }

var _ proxy.Resolver = portTargets{}

// Lookup implements proxy.Resolver.
func (p portTargets) Lookup(ctx context.Context, id string) (proxy.Target, error) {
	sb, err := p.node.Get(ctx, id)
	if err != nil {
		return proxy.Target{}, err
	}
	t := proxy.Target{
		Addr:    sb.Address,
		Running: sb.State == sandbox.Running && sb.Address.IsValid(),
		Ports:   make(map[int]proxy.PortConfig, len(sb.Ports)),
	}
	for _, port := range sb.Ports {
		t.Ports[port.Port] = proxy.PortConfig{Public: port.Public}
	}
	return t, nil
}

// serverImages is the image store as the server's Images, with removal
// going through node, which knows which images its sandboxes use.
type serverImages struct {
	*image.Store
	node *node.Manager
}

var _ server.Images = serverImages{}

// Remove implements server.Images.
func (i serverImages) Remove(ctx context.Context, scope, ref string) error {
	return i.node.RemoveImage(ctx, scope, ref)
}

// serverSnapshots is node and the image store as the server's Snapshots.
type serverSnapshots struct {
	store *image.Store
	node  *node.Manager
	adm   *admission.Controller                          // a fork is a create: admitted like one
	gate  func(ctx context.Context, teamID string) error // the budgets' gate on forks
}

var _ server.Snapshots = serverSnapshots{}

// Snapshot implements server.Snapshots.
func (s serverSnapshots) Snapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	return s.node.Snapshot(ctx, id)
}

// Fork implements server.Snapshots.
func (s serverSnapshots) Fork(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	if err := s.gate(ctx, req.TeamID); err != nil {
		return sandbox.Sandbox{}, err
	}
	return admitted(ctx, s.adm, req, func(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
		return s.node.Fork(ctx, id, req)
	})
}

// CanSnapshot implements server.Snapshots.
func (s serverSnapshots) CanSnapshot(ctx context.Context, id string) error {
	return s.node.CanSnapshot(ctx, id)
}

// ListSnapshots implements server.Snapshots: the snapshot directory's,
// so that every replica lists every replica's.
func (s serverSnapshots) ListSnapshots(ctx context.Context, team string) ([]*image.Snapshot, error) {
	return s.store.ListSnapshots(ctx, team)
}

// GetSnapshot implements server.Snapshots.
func (s serverSnapshots) GetSnapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	return s.store.LookupSnapshot(ctx, id)
}

// DeleteSnapshot implements server.Snapshots.
func (s serverSnapshots) DeleteSnapshot(ctx context.Context, id string) error {
	return s.node.DeleteSnapshot(ctx, id)
}

// controlSandboxes is node.Manager (and its image store, for the command a
// project without Start runs) as the control plane's Sandboxes.
type controlSandboxes struct {
	*node.Manager
	pools  *pool.Manager
	images node.Images // nil: only images without a command
}

var _ control.Sandboxes = controlSandboxes{}

// Create implements control.Sandboxes: an activation claims from a warm
// pool when one matches, like an API create.
func (c controlSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	return c.pools.Create(ctx, req)
}

// Agent implements control.Sandboxes.
func (c controlSandboxes) Agent(ctx context.Context, id string) (control.Agent, error) {
	a, err := c.Manager.Agent(ctx, id)
	if err != nil {
		return nil, err
	}
	return control.AgentClient(a), nil
}

// ImageCommand implements control.Sandboxes: the image's Entrypoint
// followed by its Cmd; none for the host image.
func (c controlSandboxes) ImageCommand(team, ref string) ([]string, error) {
	if ref == "" || ref == sandbox.HostImage || c.images == nil {
		return nil, nil
	}
	img, err := c.images.Get(team, ref)
	if err != nil {
		return nil, err
	}
	return append(append([]string(nil), img.Config.Entrypoint...), img.Config.Cmd...), nil
}

// imageDirectory is the store's image directory as the image store's
// Directory, recorded under this replica's name.
type imageDirectory struct {
	s       store.Store
	replica string
}

var _ image.Directory = imageDirectory{}

// Record implements image.Directory.
func (d imageDirectory) Record(ctx context.Context, e image.Entry) error {
	return d.s.PutImageRef(ctx, store.ImageRef{Scope: e.Scope, Ref: e.Ref, Digest: e.Digest, Source: e.Source,
		Platform: e.Platform, Insecure: e.Insecure, Keychain: e.Keychain, Replica: d.replica, UpdatedAt: time.Now()})
}

// Lookup implements image.Directory.
func (d imageDirectory) Lookup(ctx context.Context, scope, ref string) (image.Entry, error) {
	r, err := d.s.GetImageRef(ctx, scope, ref)
	if err != nil {
		return image.Entry{}, err
	}
	return image.Entry{Scope: r.Scope, Ref: r.Ref, Digest: r.Digest, Source: r.Source, Platform: r.Platform,
		Insecure: r.Insecure, Keychain: r.Keychain, Replica: r.Replica}, nil
}

// Forget implements image.Directory.
func (d imageDirectory) Forget(ctx context.Context, scope, ref, digest string) error {
	_, err := d.s.DeleteImageRef(ctx, scope, ref, digest)
	return err
}

// CountRefs implements image.Directory.
func (d imageDirectory) CountRefs(ctx context.Context, scope string) (int, error) {
	return d.s.CountImageRefs(ctx, scope)
}

// RecordSnapshot implements image.Directory.
func (d imageDirectory) RecordSnapshot(ctx context.Context, snap image.Snapshot) error {
	var digest string
	if _, after, ok := strings.Cut(snap.Ref, "@"); ok {
		digest = after
	}
	return d.s.PutSnapshotRef(ctx, store.SnapshotRef{ID: snap.ID, Team: snap.TeamID, Ref: snap.Ref, Digest: digest, Replica: d.replica,
		Source: snap.Source, Image: snap.Image, ImageDigest: snap.Digest, OnHost: snap.OnHost, Runtime: snap.Runtime,
		Env: snap.Config.Env, WorkingDir: snap.Config.WorkingDir, User: snap.Config.User, Size: snap.Size,
		CreatedAt: snap.CreatedAt, LastUsed: snap.LastUsed})
}

// LookupSnapshot implements image.Directory.
func (d imageDirectory) LookupSnapshot(ctx context.Context, id string) (image.Snapshot, error) {
	r, err := d.s.GetSnapshotRef(ctx, id)
	if err != nil {
		return image.Snapshot{}, err
	}
	return snapshotOfRef(r), nil
}

// ListSnapshots implements image.Directory: every page of the team's
// records.
func (d imageDirectory) ListSnapshots(ctx context.Context, team string) ([]image.Snapshot, error) {
	out := []image.Snapshot{}
	for cursor := ""; ; {
		refs, next, err := d.s.ListSnapshotRefs(ctx, team, store.Page{Cursor: cursor, Limit: store.MaxPageLimit})
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			out = append(out, snapshotOfRef(r))
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// snapshotOfRef is a snapshot directory record as the image store's
// Directory gives it.
func snapshotOfRef(r store.SnapshotRef) image.Snapshot {
	return image.Snapshot{ID: r.ID, TeamID: r.Team, Ref: r.Ref, Replica: r.Replica, Source: r.Source, Image: r.Image,
		Digest: r.ImageDigest, OnHost: r.OnHost, Runtime: r.Runtime,
		Config: image.ImageConfig{Env: r.Env, WorkingDir: r.WorkingDir, User: r.User}, Size: r.Size,
		CreatedAt: r.CreatedAt, LastUsed: r.LastUsed}
}

// TouchSnapshot implements image.Directory.
func (d imageDirectory) TouchSnapshot(ctx context.Context, id string, at time.Time) error {
	return d.s.TouchSnapshotRef(ctx, id, at)
}

// ForgetSnapshot implements image.Directory.
func (d imageDirectory) ForgetSnapshot(ctx context.Context, id string) error {
	_, err := d.s.DeleteSnapshotRef(ctx, id)
	return err
}
