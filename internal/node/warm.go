package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Warm sandboxes: node's side of internal/pool. An idle pool sandbox is an
// ordinary sandbox whose record names its pool (Sandbox.Pool) and no team.
// lookup and List do not see it, so no API, proxy or command path reaches
// it; it has no deadline. Claim hands it to an owner in one step under the
// sandbox's lifecycle lock: the record is rewritten (owner, env, ports,
// timeout) and saved before the claimer learns the id, so a sandbox is
// either the pool's or its owner's, on disk too, and a claimed one never
// goes back.

// WarmKey is what must be equal for a pool sandbox to serve a create
// request exactly as a cold create would. Everything else a request asks
// for is applied by Claim: the owner (team, project), env (kept in the
// record and given to each command by Exec; nothing of it reaches the
// sandbox before a command runs), ports (proxy declarations), the timeout,
// and a source (written in after the claim, as Create does after start).
// Volumes are mounted by the driver when it builds the sandbox, so a
// request with volumes has no key (ErrUnsupported "not_poolable").
type WarmKey struct {
	// Base is what the root filesystem is: "host", "image:<manifest
	// digest>" (the image as the requesting team resolves the ref, so a
	// team's own ref of the same name, or a re-pulled one, is another
	// base), or "snapshot:<id>".
	Base string
	// Resources are the limits after the host's defaults, disk cap included.
	Resources sandbox.Resources
	// Network is the egress policy after the host's default, as canonical
	// JSON; "" on a host without sandbox networking.
	Network string
	// Runtime runs the sandbox (the request's, else its snapshot's, else
	// the host's default): a gVisor create never claims a runc sandbox.
	Runtime string
}

func (k WarmKey) String() string {
	return fmt.Sprintf("%s runtime=%s vcpus=%g mem=%dMB pids=%d disk=%dMB net=%s", k.Base, k.Runtime, k.Resources.VCPUs,
		k.Resources.MemoryMB, k.Resources.PIDs, k.Resources.DiskMB, k.Network)
}

// claimPingTimeout bounds the check that an idle sandbox's agent answers
// before it is handed out; a miss costs a cold create, not a failure.
const claimPingTimeout = time.Second

var errNotPoolable = sandbox.Errorf(sandbox.ErrUnsupported, "not_poolable", "a request with volumes is never served from a pool")

// WarmKey returns the key of req as its team would be served: req is
// checked and defaulted as Create does, and its image resolved in its
// team's scope.
func (m *Manager) WarmKey(req sandbox.CreateRequest) (WarmKey, error) {
	req, err := normalize(&m.cfg, req, m.requestNetworked(req))
	if err != nil {
		return WarmKey{}, err
	}
	k, _, err := m.warmKey(req)
	return k, err
}

// warmKey is WarmKey of a normalized request, with the image config's
// env, which a claim puts under the request's.
func (m *Manager) warmKey(req sandbox.CreateRequest) (WarmKey, []string, error) {
	if len(req.Volumes) > 0 {
		return WarmKey{}, nil, errNotPoolable
	}
	k := WarmKey{Base: hostImage, Resources: req.Resources}
	var env []string
	rt := req.Runtime
	switch {
	case req.Snapshot != "":
		store, err := m.snapshots()
		if err != nil {
			return WarmKey{}, nil, err
		}
		snap, err := store.GetSnapshot(req.Snapshot)
		if err != nil {
			return WarmKey{}, nil, err
		}
		k.Base, env = "snapshot:"+snap.ID, snap.Config.Env
		if rt == "" {
			rt = snap.Runtime
		}
	default:
		// Not resolveImage: a key is asked for on every request and every
		// refill round, and its bookkeeping (the image's last use) writes.
		img, err := m.lookupImage(req.TeamID, req.Image)
		if err != nil {
			return WarmKey{}, nil, err
		}
		if img != nil {
			k.Base, env = "image:"+img.Digest, img.Config.Env
		}
	}
	k.Network = policyKey(req.NetworkPolicy)
	name, _, err := m.rt.resolve(rt)
	if err != nil {
		return WarmKey{}, nil, err
	}
	k.Runtime = name
	return k, env, nil
}

// KeyOf is the key of the sandbox sb is: what it was built from and with.
func KeyOf(sb sandbox.Sandbox) WarmKey {
	k := WarmKey{Base: hostImage, Resources: sb.Resources, Network: policyKey(sb.NetworkPolicy), Runtime: sb.Driver}
	switch {
	case sb.Snapshot != "":
		k.Base = "snapshot:" + sb.Snapshot
	case sb.ImageDigest != "":
		k.Base = "image:" + sb.ImageDigest
	}
	return k
}

// policyKey is a policy as canonical JSON (struct fields in order, lists
// as given: a reordered list is another key, which costs a miss, never a
// wrong sandbox).
func policyKey(p *sandbox.NetworkPolicy) string {
	if p == nil {
		return ""
	}
	b, err := json.Marshal(p)
	if err != nil { // a struct of strings and prefixes always marshals
		panic(err)
	}
	return string(b)
}

// CreatePooled creates an idle sandbox for the pool named pool from req,
// which may say only what a WarmKey holds (image or snapshot, resources,
// network policy): the sandbox belongs to no team. A failed create leaves
// nothing behind, not even a record.
func (m *Manager) CreatePooled(ctx context.Context, pool string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	switch {
	case pool == "":
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_pool", "node: a pool sandbox needs its pool's name")
	case req.TeamID != "" || req.ProjectID != "" || len(req.Env) > 0 || len(req.Ports) > 0 || req.Source != nil || len(req.Volumes) > 0:
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_pool", "node: a pool sandbox is made of its key only: no owner, env, ports, source or volumes")
	}
	sb, err := m.create(ctx, req, pool)
	if err == nil {
		m.warm(ctx, sb.ID)
	}
	if err != nil && sb.ID != "" {
		// Nobody would ever see or delete the failed record.
		if e, lerr := m.lookupAny(sb.ID); lerr == nil {
			if derr := m.delete(ctx, e, sb.ID, nil); derr != nil {
				m.log.Error("delete failed pool sandbox", "sandbox", sb.ID, "pool", pool, "err", derr)
			}
		}
		return sandbox.Sandbox{}, err
	}
	return sb, err
}

// poolWarmTimeout bounds a pool sandbox's warm-up.
const poolWarmTimeout = 5 * time.Second

// warm has the agent of a new pool sandbox fork and reap a no-op once
// (agent.Client.Warm), so that the claimer's first command does not pay
// for the agent's first fork: about 3 ms of a fresh agent's first
// command here, off the claim path this way. Best effort: a sandbox that
// did not warm serves a claim all the same.
func (m *Manager) warm(ctx context.Context, id string) {
	e, err := m.lookupAny(id)
	if err != nil {
		return
	}
	_, client, gone := e.snapshot()
	if gone || client == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, poolWarmTimeout)
	defer cancel()
	if err := client.Warm(wctx); err != nil {
		m.log.Warn("warm pool sandbox", "sandbox", id, "err", err)
	}
}

// Pooled returns the records of every idle pool sandbox, in any state
// (reconcile marks the ones lost in a restart failed): what the pools
// adopt or discard when they start.
func (m *Manager) Pooled() []sandbox.Sandbox {
	var out []sandbox.Sandbox
	for _, sb := range m.records() {
		if sb.Pool != "" {
			out = append(out, clone(sb))
		}
	}
	slices.SortFunc(out, func(a, b sandbox.Sandbox) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Load is the number of pending and running sandboxes (idle pool ones
// included) and the host's maximum of them.
func (m *Manager) Load() (active, max int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.active), m.cfg.MaxSandboxes
}

// DiscardPooled deletes an idle pool sandbox. A sandbox claimed meanwhile
// is its owner's, and is left alone (ErrConflict "pool_sandbox_claimed").
func (m *Manager) DiscardPooled(ctx context.Context, id string) error {
	e, err := m.lookupAny(id)
	if err != nil {
		return err
	}
	return m.delete(ctx, e, id, func(sb sandbox.Sandbox) error {
		if sb.Pool == "" {
			return errClaimed(id)
		}
		return nil
	})
}

func errClaimed(id string) error {
	return sandbox.Errorf(sandbox.ErrConflict, "pool_sandbox_claimed", "sandbox %s is no longer in a pool", id)
}

// ErrNotClaimed tells a caller of Claim that the pool sandbox could not
// serve the request and nothing happened to it for the request: create
// one cold instead (and discard the pool sandbox, which may be stale).
var ErrNotClaimed = errors.New("pool sandbox not claimed")

// Claim gives the idle pool sandbox id to req's owner and applies what req
// asks beyond its WarmKey: team and project, env (the image's under the
// request's, as Create records it), ports, the timeout counted from now,
// and a source. The sandbox's life as its owner sees it starts now
// (CreatedAt, StartedAt); Warm marks it.
//
// An error wrapping ErrNotClaimed means the sandbox stayed the pool's
// (gone, not running, or not interchangeable with req: its key differs).
// Otherwise, like Create, Claim returns the record, failed when writing
// the source failed, with the error.
func (m *Manager) Claim(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	req, err := normalize(&m.cfg, req, m.requestNetworked(req))
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	key, imgEnv, err := m.warmKey(req)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	e, err := m.lookupAny(id)
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("%w: %w", ErrNotClaimed, err)
	}
	e.op.Lock()
	defer e.op.Unlock()
	sb, client, gone := e.snapshot()
	switch {
	case gone || sb.Pool == "":
		return sandbox.Sandbox{}, fmt.Errorf("%w: sandbox %s is not in a pool", ErrNotClaimed, id)
	case sb.State != sandbox.Running || client == nil:
		return sandbox.Sandbox{}, fmt.Errorf("%w: pool sandbox %s is %s", ErrNotClaimed, id, sb.State)
	case KeyOf(sb) != key:
		return sandbox.Sandbox{}, fmt.Errorf("%w: pool sandbox %s is %s, the request wants %s", ErrNotClaimed, id, KeyOf(sb), key)
	}
	// An idle sandbox ran nothing, but its agent may have died since it
	// was made (OOM, a host-side kill): a claim must hand out one that works.
	pctx, cancel := context.WithTimeout(ctx, claimPingTimeout)
	_, perr := client.Ping(pctx)
	cancel()
	if perr != nil {
		return sandbox.Sandbox{}, fmt.Errorf("%w: the agent of pool sandbox %s does not answer: %w", ErrNotClaimed, id, perr)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return sandbox.Sandbox{}, fmt.Errorf("%w: %w", ErrNotClaimed,
			sandbox.Errorf(sandbox.ErrUnavailable, "node_closed", "node is shutting down"))
	}

	now := m.now()
	claimed := sb
	claimed.Pool, claimed.Warm = "", true
	claimed.TeamID, claimed.ProjectID = req.TeamID, req.ProjectID
	claimed.Env = imageEnv(imgEnv, req.Env)
	claimed.Ports = slices.Clone(req.Ports)
	claimed.CreatedAt, claimed.StartedAt, claimed.LastActivityAt = now, now, time.Time{}
	claimed.ExpiresAt = now.Add(req.Timeout)
	// On disk before anyone learns the id: a record that still said
	// "pooled" after a crash would put a used sandbox back in the pool.
	if err := m.saveRecord(ctx, claimed); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("%w: save the claim: %w", ErrNotClaimed, err)
	}
	e.mu.Lock()
	e.sb = clone(claimed)
	e.mu.Unlock()
	m.index(claimed)
	log := m.log.With("sandbox", id)

	if req.Source != nil {
		info, err := m.populate(ctx, e, client, req.Source)
		if err != nil {
			log.Error("claim: write the source failed", "err", err)
			dctx, cancel := driverContext(ctx)
			defer cancel()
			if derr := m.driverOf(sb).Destroy(dctx, id); derr != nil {
				log.Error("clean up failed sandbox", "err", derr)
			} else {
				m.teardownNetwork(dctx, id)
				m.releaseVolumes(dctx, id)
			}
			failed, terr := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
				sb.Error = "create: " + err.Error()
				sb.StoppedAt = m.now()
				sb.ExpiresAt = time.Time{}
			})
			return failed, errors.Join(fmt.Errorf("node: claim sandbox %s: %w", id, err), terr)
		}
		claimed = m.update(e, func(sb *sandbox.Sandbox) { sb.Source = info })
	}
	log.Info("sandbox claimed from pool", "pool", sb.Pool, "team", req.TeamID, "expiresAt", claimed.ExpiresAt)
	return clone(claimed), nil
}
