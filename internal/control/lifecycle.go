package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Start re-adopts the activations a previous run of paddock left and
// starts the idle and lifetime checks. A ready activation whose sandbox
// still runs keeps going; one whose sandbox is gone has stopped; one that
// was still coming up failed ("interrupted by restart"), its sandbox
// deleted; one that was deactivating finishes deactivating. What a crash
// left half-done goes: saved state no project names, and project
// sandboxes no live activation holds.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("control: Start called twice or after Close")
	}
	s.started = true
	s.mu.Unlock()

	// Before any activation runs again and saves.
	s.sweepState(ctx)
	f := store.ActivationFilter{States: liveStates()}
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		acts, next, err := s.cfg.Store.ListActivations(ctx, f, page)
		if err != nil {
			return err
		}
		for _, a := range acts {
			if !s.mine(a) {
				continue // another replica's: it drives it, or the sweep ends it once that replica is gone
			}
			s.readopt(ctx, a)
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	if err := s.removeUnclaimed(ctx); err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.loop()
	}()
	return nil
}

// DeactivateTeam deactivates every live activation of a team (state saved,
// sandbox deleted, as any deactivation) and waits for those this process
// drives; another replica's end through the store. A budget's hard cap
// calls it.
func (s *Service) DeactivateTeam(ctx context.Context, teamID, reason string) error {
	f := store.ActivationFilter{TeamID: teamID, States: liveStates()}
	var acts []store.Activation
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		list, next, err := s.cfg.Store.ListActivations(ctx, f, page)
		if err != nil {
			return err
		}
		acts = append(acts, list...)
		if next == "" {
			break
		}
		page.Cursor = next
	}
	var errs []error
	for _, a := range acts {
		if a.EndReason != "" {
			continue // already ending
		}
		if _, err := s.deactivate(ctx, a.ProjectID, a.ID, reason); err != nil {
			errs = append(errs, fmt.Errorf("deactivate project %s: %w", a.ProjectID, err))
		}
	}
	return errors.Join(errs...)
}

// removeUnclaimed deletes this host's project sandboxes that no live
// activation holds. Only an activation creates a sandbox for a project,
// and it records the sandbox once the create returns: a crash in between
// leaves a sandbox running that nothing would ever stop. Called at Start,
// after the re-adoption, before this process creates any.
func (s *Service) removeUnclaimed(ctx context.Context) error {
	claimed := map[string]bool{}
	f := store.ActivationFilter{States: liveStates()}
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		acts, next, err := s.cfg.Store.ListActivations(ctx, f, page)
		if err != nil {
			return err
		}
		for _, a := range acts {
			claimed[a.SandboxID] = true
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	opts := sandbox.ListOptions{Limit: store.MaxPageLimit}
	for {
		sbs, next, err := s.cfg.Sandboxes.List(ctx, opts)
		if err != nil {
			return err
		}
		for _, sb := range sbs {
			if sb.ProjectID == "" || claimed[sb.ID] {
				continue
			}
			log := s.log.With("project", sb.ProjectID, "team", sb.TeamID, "sandbox", sb.ID)
			log.Warn("deleting a project sandbox no activation holds", "state", sb.State)
			s.removeSandbox(sb.ID, log)
		}
		if next == "" {
			return nil
		}
		opts.Cursor = next // positions survive the deletes
	}
}

// sweepState removes what saves and deletes cut short by a crash left
// under <data>/state: temp files of a save (written whole, then renamed),
// state files their project does not name (renamed, but not recorded),
// and the state of a project deleted before its directory went.
func (s *Service) sweepState(ctx context.Context) {
	root := filepath.Join(s.cfg.DataDir, "state")
	dirs, err := os.ReadDir(root)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("sweep saved state", "err", err)
		}
		return
	}
	for _, d := range dirs {
		if !d.IsDir() || !sandbox.ValidID(d.Name()) {
			continue
		}
		dir := filepath.Join(root, d.Name())
		pr, err := s.cfg.Store.GetProject(ctx, "", d.Name())
		if errors.Is(err, sandbox.ErrNotFound) {
			s.log.Warn("removing the saved state of a deleted project", "project", d.Name())
			if err := os.RemoveAll(dir); err != nil {
				s.log.Warn("remove saved state", "project", d.Name(), "err", err)
			}
			continue
		}
		if err != nil {
			s.log.Warn("sweep saved state", "project", d.Name(), "err", err)
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			s.log.Warn("sweep saved state", "project", d.Name(), "err", err)
			continue
		}
		for _, f := range files {
			name := f.Name()
			if name == pr.StateRef || !strings.HasPrefix(name, ".tmp-") && !refPattern().MatchString(name) {
				continue
			}
			s.log.Warn("removing saved state a crash left half-done", "project", pr.ID, "file", name)
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				s.log.Warn("remove saved state", "project", pr.ID, "file", name, "err", err)
			}
		}
	}
}

func (s *Service) readopt(ctx context.Context, a store.Activation) {
	log := s.log.With("project", a.ProjectID, "team", a.TeamID, "activation", a.ID)
	switch stateOf(a) {
	case StateReady, StateDeactivating:
		r, err := s.adopt(ctx, a)
		if err != nil {
			log.Warn("activation not re-adopted", "err", err)
			s.endOrphan(a, StateStopped, ReasonSandboxGone, "")
			return
		}
		log.Info("activation re-adopted", "sandbox", a.SandboxID, "state", a.State)
		if stateOf(a) == StateDeactivating {
			reason := a.EndReason
			if reason == "" {
				reason = ReasonExplicit
			}
			r.stop(reason)
		}
	default:
		log.Warn("activation interrupted by restart", "state", a.State)
		s.endOrphan(a, StateFailed, "", "interrupted by restart")
	}
}

// adopt takes over a ready activation whose sandbox runs on this host.
func (s *Service) adopt(ctx context.Context, a store.Activation) (*run, error) {
	pr, err := s.cfg.Store.GetProject(ctx, "", a.ProjectID)
	if err != nil {
		return nil, err
	}
	if pr.ActiveActivation != a.ID {
		return nil, errors.New("the project moved on to another activation")
	}
	doc, err := decodeSpec(pr.Spec)
	if err != nil {
		return nil, err
	}
	secret, err := s.seal.open(pr.ID, doc.AppSecret)
	if err != nil {
		return nil, err
	}
	if a.SandboxID == "" {
		return nil, errors.New("no sandbox")
	}
	sb, err := s.cfg.Sandboxes.Get(ctx, a.SandboxID)
	if err != nil {
		return nil, err
	}
	if sb.State != sandbox.Running || !sb.Address.IsValid() {
		return nil, errors.New("sandbox " + sb.ID + " is " + string(sb.State))
	}
	var cmdID string
	evs, err := s.cfg.Store.ListEvents(ctx, store.EventFilter{ActivationID: a.ID, Limit: store.MaxEventLimit})
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		if e.Type == string(StateStarting) && e.Data["commandId"] != "" {
			cmdID = e.Data["commandId"]
		}
	}
	if cmdID == "" {
		return nil, errors.New("the app's command is not on record")
	}
	r := s.newRun(a, doc, string(secret))
	r.mu.Lock()
	r.cmdID = cmdID
	r.target = &url.URL{Scheme: "http", Host: netip.AddrPortFrom(sb.Address, uint16(doc.AppPort)).String()}
	r.readyAt, r.activity = a.ReadyAt, a.LastActivityAt
	r.mu.Unlock()
	s.goDrive(r, true)
	return r, nil
}

// endOrphan ends an activation no run drives: its sandbox deleted, its
// project freed.
func (s *Service) endOrphan(a store.Activation, state State, reason, errMsg string) {
	r := &run{id: a.ID, projectID: a.ProjectID, teamID: a.TeamID, sandboxID: a.SandboxID}
	s.finish(r, s.log.With("project", a.ProjectID, "activation", a.ID), state, reason, errMsg, "")
}

// Close stops the Service's goroutines: activations still coming up fail
// (their sandboxes deleted); ready apps keep running for the next Start to
// re-adopt. It waits for them.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.flush(context.Background())
	return nil
}

// loop checks idle timeouts and lifetimes every IdleCheckInterval.
func (s *Service) loop() {
	t := time.NewTicker(s.cfg.IdleCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.checkLimits(s.ctx)
			s.sweepOrphans()
		}
	}
}

// mine reports whether a is this replica's to drive: recorded by it, or
// by no replica (made before activations recorded theirs).
func (s *Service) mine(a store.Activation) bool {
	return a.Replica == "" || a.Replica == s.cfg.Replica
}

// sweepOrphans ends what replicas gone from the store left, when this
// replica holds the sweep (Config.Sweep): an activation a gone replica
// was bringing up fails at once (ReasonReplicaLost: its steps lived in
// that replica's goroutines, and none can be resumed); a ready one this
// replica's sandboxes reach (a driver shared by the replicas) is taken
// over as a restart re-adopts it; one it cannot reach ends once its
// replica has been gone for OrphanGrace (a restart within it re-adopts
// it). Checks and idle teardown of live replicas' activations stay
// theirs (checkLimits acts only on this process's runs), so each runs
// exactly once.
func (s *Service) sweepOrphans() {
	if s.cfg.Sweep == nil {
		return
	}
	held, ok := s.cfg.Sweep()
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(held)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	now := s.now()
	gone := map[string]time.Time{} // replica → since when it is gone; zero: alive
	f := store.ActivationFilter{States: liveStates()}
	page := store.Page{Limit: store.MaxPageLimit}
	for ctx.Err() == nil {
		acts, next, err := s.cfg.Store.ListActivations(ctx, f, page)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("sweep orphaned activations", "err", err)
			}
			return
		}
		for _, a := range acts {
			if s.mine(a) || ctx.Err() != nil {
				continue
			}
			since, seen := gone[a.Replica]
			if !seen {
				since = s.replicaGone(ctx, a.Replica, now)
				gone[a.Replica] = since
			}
			if !since.IsZero() {
				s.orphan(ctx, a, since, now)
			}
		}
		if next == "" {
			return
		}
		page.Cursor = next
	}
}

// replicaGone returns since when replica has been gone
// (lease.ReplicaGone), or the zero time while it holds its lease (or the
// store cannot tell).
func (s *Service) replicaGone(ctx context.Context, replica string, now time.Time) time.Time {
	since, err := lease.ReplicaGone(ctx, s.cfg.Store, replica, now)
	if err != nil {
		s.log.Warn("read a replica's lease", "replica", replica, "err", err)
		return time.Time{}
	}
	return since
}

// orphan ends or takes over one activation of a replica gone since since.
func (s *Service) orphan(ctx context.Context, a store.Activation, since, now time.Time) {
	log := s.log.With("project", a.ProjectID, "team", a.TeamID, "activation", a.ID, "replica", a.Replica)
	if st := stateOf(a); st != StateReady && st != StateDeactivating {
		log.Warn("failing an activation its replica left coming up", "state", a.State)
		s.endOrphan(a, StateFailed, ReasonReplicaLost,
			fmt.Sprintf("replica %s went away while the activation was %s", a.Replica, a.State))
		return
	}
	if a.SandboxID != "" {
		if sb, err := s.cfg.Sandboxes.Get(ctx, a.SandboxID); err == nil && sb.State == sandbox.Running {
			taken, err := s.updateActivation(ctx, a.ID, func(c *store.Activation) bool {
				if c.Replica != a.Replica || stateOf(*c).Terminal() {
					return false
				}
				c.Replica = s.cfg.Replica
				return true
			})
			if err != nil || taken.Replica != s.cfg.Replica {
				return
			}
			log.Warn("taking over the activation of a replica gone", "sandbox", a.SandboxID)
			s.readopt(ctx, taken)
			return
		}
	}
	if now.Sub(since) < s.cfg.OrphanGrace {
		return
	}
	log.Warn("ending the activation of a replica gone", "state", a.State, "goneSince", since)
	s.endOrphan(a, StateStopped, ReasonReplicaLost, "")
}

// checkLimits flushes recorded activity, then stops every ready app idle
// for its IdleTimeout or older than its MaxLifetime.
func (s *Service) checkLimits(ctx context.Context) {
	s.flush(ctx)
	now := s.now()
	s.mu.Lock()
	runs := make([]*run, 0, len(s.runs))
	for _, r := range s.runs {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	for _, r := range runs {
		// A deactivation asked for through the store (by another replica).
		if a, err := s.cfg.Store.GetActivation(ctx, r.id); err == nil && a.EndReason != "" && stateOf(a).Live() {
			r.stop(a.EndReason)
			continue
		}
		r.mu.Lock()
		ready, last := r.target != nil, r.activity
		if r.readyAt.After(last) {
			last = r.readyAt
		}
		r.mu.Unlock()
		switch {
		case now.Sub(r.createdAt) >= r.spec.maxLifetime():
			r.stop(ReasonLifetime)
		case ready && now.Sub(last) >= r.spec.idleTimeout():
			// Another replica's proxy may have seen traffic: its touches
			// are in the store.
			if a, err := s.cfg.Store.GetActivation(ctx, r.id); err == nil && now.Sub(a.LastActivityAt) < r.spec.idleTimeout() {
				r.mu.Lock()
				if a.LastActivityAt.After(r.activity) {
					r.activity = a.LastActivityAt
				}
				r.mu.Unlock()
				continue
			}
			r.stop(ReasonIdle)
		}
	}
}

// flush writes the activity Touch recorded to the store.
func (s *Service) flush(ctx context.Context) {
	s.mu.Lock()
	touched := s.touched
	s.touched = map[string]time.Time{}
	s.mu.Unlock()
	for id, t := range touched {
		_, err := s.updateActivation(ctx, id, func(a *store.Activation) bool {
			if stateOf(*a).Terminal() || !t.After(a.LastActivityAt) {
				return false
			}
			a.LastActivityAt = t
			return true
		})
		if err != nil && ctx.Err() == nil {
			s.log.Warn("record activity", "activation", id, "err", err)
		}
	}
}

// Touch records activity on an activation (a proxied request): cheap, in
// memory, written to the store by the next check.
func (s *Service) Touch(activationID string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[activationID]
	if !ok {
		return
	}
	s.touched[activationID] = now
	r.mu.Lock()
	if now.After(r.activity) {
		r.activity = now
	}
	r.mu.Unlock()
}

// Heartbeat keeps a project's activation from idling out.
func (s *Service) Heartbeat(ctx context.Context, p auth.Principal, projectID string) error {
	pr, _, err := s.project(ctx, p, projectID)
	if err != nil {
		return err
	}
	if pr.ActiveActivation == "" {
		return errNotActive
	}
	if s.runOf(pr.ActiveActivation) != nil {
		s.Touch(pr.ActiveActivation)
		return nil
	}
	now := s.now()
	_, err = s.updateActivation(ctx, pr.ActiveActivation, func(a *store.Activation) bool {
		if stateOf(*a).Terminal() || !now.After(a.LastActivityAt) {
			return false
		}
		a.LastActivityAt = now
		return true
	})
	return err
}

// Deactivate stops the project's live activation for reason (default
// "explicit"): the app gets SIGTERM and StopGrace, its persistent paths are
// saved, its sandbox deleted. It waits for that and returns the ended
// activation; a project with no live activation is ErrConflict
// "project_not_active".
func (s *Service) Deactivate(ctx context.Context, p auth.Principal, projectID, reason string) (store.Activation, error) {
	pr, _, err := s.project(ctx, p, projectID)
	if err != nil {
		return store.Activation{}, err
	}
	if reason == "" {
		reason = ReasonExplicit
	}
	if pr.ActiveActivation == "" {
		return store.Activation{}, errNotActive
	}
	return s.deactivate(ctx, pr.ID, pr.ActiveActivation, reason)
}

func (s *Service) deactivate(ctx context.Context, projectID, activationID, reason string) (store.Activation, error) {
	r := s.runOf(activationID)
	if r != nil {
		r.stop(reason)
		select {
		case <-r.done:
		case <-ctx.Done():
			return store.Activation{}, ctx.Err()
		}
		return s.cfg.Store.GetActivation(ctx, activationID)
	}
	// Driven by another replica: ask through the store (its limit checks
	// read EndReason) and wait for it to end.
	a, err := s.updateActivation(ctx, activationID, func(a *store.Activation) bool {
		if stateOf(*a).Terminal() || a.EndReason != "" {
			return false
		}
		a.EndReason = reason
		return true
	})
	if err != nil {
		return store.Activation{}, err
	}
	if stateOf(a).Terminal() {
		return store.Activation{}, errNotActive
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !stateOf(a).Terminal() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return store.Activation{}, ctx.Err()
		}
		if a, err = s.cfg.Store.GetActivation(ctx, activationID); err != nil {
			return store.Activation{}, err
		}
	}
	return a, nil
}

// GetActivation returns an activation of the caller's team.
func (s *Service) GetActivation(ctx context.Context, p auth.Principal, id string) (store.Activation, error) {
	if !sandbox.ValidID(id) {
		return store.Activation{}, store.NotFound("activation", id)
	}
	a, err := s.cfg.Store.GetActivation(ctx, id)
	if err != nil {
		return store.Activation{}, err
	}
	if !p.CanAccessTeam(a.TeamID) {
		return store.Activation{}, store.NotFound("activation", id)
	}
	return a, nil
}

// ListActivations lists a project's activations, oldest first.
func (s *Service) ListActivations(ctx context.Context, p auth.Principal, projectID string, page store.Page) ([]store.Activation, string, error) {
	pr, _, err := s.project(ctx, p, projectID)
	if err != nil {
		return nil, "", err
	}
	return s.cfg.Store.ListActivations(ctx, store.ActivationFilter{TeamID: pr.TeamID, ProjectID: pr.ID}, page)
}

// AppTarget says where to send a request to the project's app. It answers
// from memory for an activation this process drives.
func (s *Service) AppTarget(ctx context.Context, p auth.Principal, projectID string) (AppTarget, error) {
	s.mu.Lock()
	r := s.active[projectID]
	s.mu.Unlock()
	if r != nil && p.CanAccessTeam(r.teamID) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.target != nil && r.reason == "" {
			u := *r.target
			return AppTarget{URL: &u, SecretHeader: r.spec.AppSecretHeader, Secret: r.secret, ActivationID: r.id}, nil
		}
	} else if pr, _, err := s.project(ctx, p, projectID); err != nil {
		return AppTarget{}, err
	} else if err := s.drivenElsewhere(ctx, pr); err != nil {
		return AppTarget{}, err
	}
	return AppTarget{}, sandbox.Errorf(sandbox.ErrUnavailable, "project_not_active", "project %s is not active: activate it first", projectID)
}

// drivenElsewhere is the *sandbox.ElsewhereError of a project whose live
// activation another replica drives: its app runs in a sandbox of that
// replica, and the app proxy forwards the request there. nil otherwise,
// or when that cannot be told (the caller answers "not active").
func (s *Service) drivenElsewhere(ctx context.Context, pr store.Project) error {
	if pr.ActiveActivation == "" {
		return nil
	}
	a, err := s.cfg.Store.GetActivation(ctx, pr.ActiveActivation)
	if err != nil || a.Replica == s.cfg.Replica || a.SandboxID == "" {
		return nil
	}
	if _, err := s.cfg.Sandboxes.Get(ctx, a.SandboxID); errors.As(err, new(*sandbox.ElsewhereError)) {
		return err
	}
	return nil
}

// Watch streams an activation's events after afterSeq: those stored, then
// new ones as they come, until one of ready, failed or stopped (which ends
// an activate call's progress) or ctx ends; then the channel closes.
func (s *Service) Watch(ctx context.Context, p auth.Principal, activationID string, afterSeq int64) (<-chan store.Event, error) {
	if _, err := s.GetActivation(ctx, p, activationID); err != nil {
		return nil, err
	}
	wake := make(chan struct{}, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, sandbox.Errorf(sandbox.ErrUnavailable, "shutting_down", "paddock is shutting down")
	}
	if s.watchers[activationID] == nil {
		s.watchers[activationID] = map[chan struct{}]struct{}{}
	}
	s.watchers[activationID][wake] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	out := make(chan store.Event)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.watchers[activationID], wake)
			if len(s.watchers[activationID]) == 0 {
				delete(s.watchers, activationID)
			}
			s.mu.Unlock()
		}()
		seq := afterSeq
		// Other replicas' events wake nobody here: poll for them too.
		poll := time.NewTicker(time.Second)
		defer poll.Stop()
		for {
			evs, err := s.cfg.Store.ListEvents(ctx, store.EventFilter{ActivationID: activationID, AfterSeq: seq, Limit: store.MaxEventLimit})
			if err != nil {
				if ctx.Err() == nil && s.ctx.Err() == nil {
					s.log.Warn("watch activation", "activation", activationID, "err", err)
				}
				return
			}
			for _, e := range evs {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				case <-s.ctx.Done():
					return
				}
				seq = e.Seq
				if t := State(e.Type); t == StateReady || t.Terminal() {
					return
				}
			}
			if len(evs) == store.MaxEventLimit {
				continue
			}
			select {
			case <-wake:
			case <-poll.C:
			case <-ctx.Done():
				return
			case <-s.ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
