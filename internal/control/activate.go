package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

const (
	// logTailBytes is how much of a failed command's output an event keeps.
	logTailBytes = 8 << 10
	// lifetimeMargin is added to a project's MaxLifetime for its sandbox's
	// own timeout, so that the lifetime check (which saves state) stops the
	// app before the node's timeout (which cannot) does.
	lifetimeMargin = 2 * time.Minute
	// The health check probes after firstProbeWait, doubling the wait up
	// to maxProbeWait: most apps come up within a few hundred milliseconds,
	// and a refused connection costs next to nothing.
	firstProbeWait = 10 * time.Millisecond
	maxProbeWait   = 250 * time.Millisecond
	probeTimeout   = 2 * time.Second
	// killWait bounds the wait for an app after SIGKILL.
	killWait = 5 * time.Second
	// opTimeout bounds single store and sandbox calls of background work.
	opTimeout = time.Minute
)

// live reports whether an activation in state s holds its project.
// activateCall is one in-process Activate of a project that concurrent
// callers share.
type activateCall struct {
	done chan struct{}
	act  store.Activation
	err  error
}

// run is an activation this process drives: from provisioning through
// ready to its end. Its goroutine (drive) is the only one that changes the
// sandbox; others ask it to stop through stop().
type run struct {
	id, projectID, teamID string
	spec                  *specDoc
	secret                string // the app secret, in memory only
	createdAt             time.Time
	// waiter is the activation's place in admission's queue; nil without
	// admission. The drive waits on it before provisioning.
	waiter *admission.Waiter

	// ctx ends when a stop is requested or the Service closes; every step
	// of the drive runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when drive returns

	mu sync.Mutex // guards the fields below
	// reason is why a stop was requested ("" if none).
	reason    string
	sandboxID string
	cmdID     string   // the app's command
	target    *url.URL // set once ready
	readyAt   time.Time
	activity  time.Time // last Touch, in memory
}

// stop asks the drive to end the activation for reason; the first reason
// wins. It does not wait: see done.
func (r *run) stop(reason string) {
	r.mu.Lock()
	if r.reason == "" {
		r.reason = reason
	}
	r.mu.Unlock()
	r.cancel()
}

func (r *run) stopReason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason
}

// errNotActive is returned by deactivate for a project with no live
// activation.
var errNotActive = sandbox.Errorf(sandbox.ErrConflict, "project_not_active", "the project is not active")

// Activate returns the project's live activation, or starts a new one and
// returns it queued; the Service drives it in the background (see Watch).
func (s *Service) Activate(ctx context.Context, p auth.Principal, projectID string) (store.Activation, error) {
	if _, _, err := s.project(ctx, p, projectID); err != nil {
		return store.Activation{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.Activation{}, sandbox.Errorf(sandbox.ErrUnavailable, "shutting_down", "paddock is shutting down")
	}
	if c, ok := s.inflight[projectID]; ok {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.act, c.err
		case <-ctx.Done():
			return store.Activation{}, ctx.Err()
		}
	}
	c := &activateCall{done: make(chan struct{})}
	s.inflight[projectID] = c
	s.mu.Unlock()

	// The call continues if its first caller goes away: others may share it.
	c.act, c.err = s.activate(context.WithoutCancel(ctx), projectID)
	s.mu.Lock()
	delete(s.inflight, projectID)
	s.mu.Unlock()
	close(c.done)
	return c.act, c.err
}

func (s *Service) activate(ctx context.Context, projectID string) (store.Activation, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for {
		pr, err := s.cfg.Store.GetProject(ctx, "", projectID)
		if err != nil {
			return store.Activation{}, err
		}
		if pr.ActiveActivation != "" {
			a, err := s.cfg.Store.GetActivation(ctx, pr.ActiveActivation)
			switch {
			case err == nil && stateOf(a).Live() && a.EndReason == "":
				return a, nil
			case err == nil && !stateOf(a).Terminal():
				// Its state is being saved: the new activation must restore it.
				if r := s.runOf(a.ID); r != nil {
					select {
					case <-r.done:
						continue
					case <-ctx.Done():
						return store.Activation{}, ctx.Err()
					}
				}
				return store.Activation{}, sandbox.Errorf(sandbox.ErrConflict, "project_deactivating",
					"the project's last activation is still saving its state; try again shortly")
			case err != nil && !errors.Is(err, sandbox.ErrNotFound):
				return store.Activation{}, err
			}
			// Ended (or dangling): the project is free.
		}
		if s.cfg.Budget != nil {
			if err := s.cfg.Budget(ctx, pr.TeamID); err != nil {
				return store.Activation{}, err
			}
		}
		doc, err := decodeSpec(pr.Spec)
		if err != nil {
			return store.Activation{}, err
		}
		secret, err := s.seal.open(pr.ID, doc.AppSecret)
		if err != nil {
			return store.Activation{}, err
		}
		// A place in the team's queue first: a full queue refuses the
		// activation before it exists (429 with Retry-After).
		var w *admission.Waiter
		if s.cfg.Admission != nil {
			w, err = s.cfg.Admission.Enqueue(ctx, admission.Request{Team: pr.TeamID, VCPUs: doc.Resources.VCPUs,
				MemoryMB: doc.Resources.MemoryMB, Deadline: admission.Deadline(ctx)})
			if err != nil {
				return store.Activation{}, err
			}
		}
		cancelWait := func() {
			if w != nil {
				w.Cancel(ctx)
			}
		}
		now := s.now()
		a := store.Activation{ID: "act-" + randomHex(8), ProjectID: pr.ID, TeamID: pr.TeamID, State: string(StateQueued),
			CreatedAt: now, LastActivityAt: now, Replica: s.cfg.Replica, Version: 1}
		if err := s.cfg.Store.CreateActivation(ctx, a); err != nil {
			cancelWait()
			return store.Activation{}, err
		}
		pr.ActiveActivation = a.ID
		if _, err := s.cfg.Store.UpdateProject(ctx, pr); err != nil {
			// Another replica (or an update) got there first: retire ours
			// and look again; most likely we share theirs.
			s.updateActivation(ctx, a.ID, func(a *store.Activation) bool {
				if moveTo(a, StateStopped) != nil {
					return false
				}
				a.EndReason, a.EndedAt = "superseded", s.now()
				return true
			})
			cancelWait()
			if sandbox.CodeOf(err) == "stale_version" {
				continue
			}
			return store.Activation{}, err
		}
		if a, err = s.cfg.Store.GetActivation(ctx, a.ID); err != nil {
			cancelWait()
			return store.Activation{}, err
		}
		r := s.newRun(a, doc, string(secret))
		r.waiter = w
		s.event(ctx, a, string(StateQueued), "", nil)
		crashpoint.Hit("control/activate/queued")
		s.log.Info("activation queued", "project", pr.ID, "team", pr.TeamID, "activation", a.ID)
		s.goDrive(r, false)
		return a, nil
	}
}

func (s *Service) newRun(a store.Activation, doc *specDoc, secret string) *run {
	ctx, cancel := context.WithCancel(s.ctx)
	r := &run{id: a.ID, projectID: a.ProjectID, teamID: a.TeamID, spec: doc, secret: secret,
		createdAt: a.CreatedAt, ctx: ctx, cancel: cancel, done: make(chan struct{}), sandboxID: a.SandboxID}
	s.mu.Lock()
	s.runs[a.ID] = r
	s.active[a.ProjectID] = r
	s.mu.Unlock()
	return r
}

func (s *Service) runOf(activationID string) *run {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[activationID]
}

// goDrive starts r's goroutine; adopted runs (re-adopted at Start, ready
// already) skip straight to watching the app.
func (s *Service) goDrive(r *run, adopted bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.forget(r)
		s.finish(r, s.log.With("activation", r.id), StateFailed, "", "interrupted: paddock is shutting down", "")
		close(r.done)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		defer s.forget(r)
		s.drive(r, adopted)
	}()
}

// forget drops a run that has ended from the Service's maps.
func (s *Service) forget(r *run) {
	r.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.runs, r.id)
	if s.active[r.projectID] == r {
		delete(s.active, r.projectID)
	}
	delete(s.touched, r.id)
}

// stepError is a failed step: what the activation's error says, with the
// log tail of the command that failed, if any.
type stepError struct {
	code, msg, tail string
	// retryAfter is set when admission refused the activation: the failed
	// event carries it, and a caller waiting for the end gets a 429.
	retryAfter time.Duration
}

func (e *stepError) Error() string { return e.code + ": " + e.msg }

func fail(code, format string, args ...any) *stepError {
	return &stepError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (s *Service) drive(r *run, adopted bool) {
	log := s.log.With("project", r.projectID, "team", r.teamID, "activation", r.id)
	if !adopted {
		if err := s.bringUp(r, log); err != nil {
			switch {
			case s.ctx.Err() != nil:
				// Shutting down: a half-made activation cannot be resumed.
				log.Info("activation interrupted by shutdown", "err", err)
				s.finish(r, log, StateFailed, "", "interrupted: paddock is shutting down", "")
			case r.stopReason() != "":
				s.finish(r, log, StateStopped, r.stopReason(), "", "")
			default:
				var se *stepError
				if !errors.As(err, &se) {
					se = &stepError{code: "activation_failed", msg: err.Error()}
				}
				log.Warn("activation failed", "code", se.code, "err", se.msg)
				s.finishWith(r, log, StateFailed, "", se.code+": "+se.msg, se.tail, se.data())
			}
			return
		}
	}
	s.watchApp(r, log)
}

// bringUp runs an activation from provisioning to ready.
func (s *Service) bringUp(r *run, log *slog.Logger) error {
	ctx := r.ctx
	doc := r.spec
	secrets, err := s.seal.openSecrets(r.projectID, doc.Secrets)
	if err != nil {
		return fail("secrets_unreadable", "%v", err)
	}

	// queued: until the team and the host have room
	var ticket *admission.Ticket
	if r.waiter != nil {
		t, err := r.waiter.Wait(ctx, func(pos int) {
			s.eventFor(s.ctx, r, string(StateQueued), "", map[string]string{"position": strconv.Itoa(pos)})
		})
		if err != nil {
			var ae *admission.Error
			if errors.As(err, &ae) {
				return &stepError{code: sandbox.CodeOf(err), msg: errMessage(err),
					retryAfter: ae.RetryAfter()}
			}
			return err
		}
		ticket = t
		// The slot goes back unless a sandbox was made with it (Bind below).
		defer ticket.Release(s.ctx)
	}

	// provisioning
	if err := s.setState(ctx, r, StateProvisioning, nil); err != nil {
		return err
	}
	req := sandbox.CreateRequest{Image: doc.Source.Image, Resources: doc.Resources, Timeout: doc.maxLifetime() + lifetimeMargin,
		Env: doc.Env, Ports: []sandbox.Port{{Port: doc.AppPort}}, TeamID: r.teamID, ProjectID: r.projectID,
		Labels: doc.Labels, Runtime: doc.Runtime}
	if req.Source, err = doc.gitSource(s.seal, r.projectID); err != nil {
		return fail("secrets_unreadable", "%v", err)
	}
	// Create outlives a stop request: a half-made sandbox must be known to be deleted.
	sb, err := s.cfg.Sandboxes.Create(context.WithoutCancel(ctx), req)
	crashpoint.Hit("control/activate/provisioned")
	// A create that fails may leave a failed sandbox's record: delete it too.
	r.mu.Lock()
	r.sandboxID = sb.ID
	r.mu.Unlock()
	if err != nil {
		return fail("provision_failed", "%s", errMessage(err))
	}
	if ticket != nil {
		// The sandbox holds the slot now, until it ends.
		_ = ticket.Bind(s.ctx, sb)
	}
	if _, err := s.updateActivation(s.ctx, r.id, func(a *store.Activation) bool {
		a.SandboxID, a.ImageDigest = sb.ID, sb.ImageDigest
		return true
	}); err != nil {
		return err
	}
	if !sb.Address.IsValid() {
		return fail("no_network", "sandbox %s has no network address: paddock runs without sandbox networking", sb.ID)
	}
	ag, err := s.cfg.Sandboxes.Agent(ctx, sb.ID)
	if err != nil {
		return fail("provision_failed", "sandbox agent: %v", err)
	}
	// Exec gives every command the sandbox's env (the image's under the
	// project's); the secrets go over it as env that is never recorded,
	// neither with the sandbox nor in the command history.
	secretEnv := maps.Clone(secrets)
	if secretEnv == nil {
		secretEnv = map[string]string{}
	}
	secretEnv[doc.AppSecretEnv] = r.secret
	workDir := "" // the sandbox's WorkingDir
	if doc.Source.Git != nil && doc.Source.Git.Dir != "" {
		workDir = doc.Source.Git.Dir
	}

	// restoring
	if len(doc.PersistentPaths) > 0 {
		if err := s.setState(ctx, r, StateRestoring, nil); err != nil {
			return err
		}
		if err := s.restore(ctx, r, ag, log); err != nil {
			return err
		}
	}

	// installing
	if doc.Install != "" {
		if err := s.setState(ctx, r, StateInstalling, nil); err != nil {
			return err
		}
		cmd, err := s.cfg.Sandboxes.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "sh", Args: []string{"-c", doc.Install}, Cwd: workDir, SecretEnv: secretEnv})
		if err != nil {
			return fail("install_failed", "start install: %s", errMessage(err))
		}
		if cmd, err = ag.Wait(ctx, cmd.ID); err != nil {
			return fmt.Errorf("wait for install: %w", err)
		}
		if cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			tail, _ := ag.Tail(s.ctx, cmd.ID, logTailBytes)
			return &stepError{code: "install_failed", msg: "install " + exitDesc(cmd), tail: tail}
		}
	}

	// starting
	start := sandbox.ExecRequest{Cmd: "sh", Args: []string{"-c", doc.Start}, Cwd: workDir, SecretEnv: secretEnv}
	if doc.Start == "" {
		// The command of the image the sandbox runs (by digest): the ref
		// may have moved since the create.
		argv, err := s.cfg.Sandboxes.ImageCommand(r.teamID, imageOf(sb))
		if err != nil {
			return fail("no_start_command", "image command: %s", errMessage(err))
		}
		if len(argv) == 0 {
			return fail("no_start_command", "the project has no start command and its image no entrypoint or cmd")
		}
		start.Cmd, start.Args = argv[0], argv[1:]
	}
	cmd, err := s.cfg.Sandboxes.Exec(ctx, sb.ID, start)
	if err != nil {
		return fail("start_failed", "start app: %s", errMessage(err))
	}
	r.mu.Lock()
	r.cmdID = cmd.ID
	r.mu.Unlock()
	if err := s.setState(ctx, r, StateStarting, map[string]string{"commandId": cmd.ID}); err != nil {
		return err
	}
	crashpoint.Hit("control/activate/starting")

	// health check
	target := &url.URL{Scheme: "http", Host: netip.AddrPortFrom(sb.Address, uint16(doc.AppPort)).String()}
	if err := s.waitHealthy(ctx, r, ag, cmd.ID, target); err != nil {
		return err
	}

	// ready
	now := s.now()
	r.mu.Lock()
	r.target, r.readyAt, r.activity = target, now, now
	r.mu.Unlock()
	var terr error
	a, err := s.updateActivation(s.ctx, r.id, func(a *store.Activation) bool {
		if terr = moveTo(a, StateReady); terr != nil {
			return false
		}
		a.ReadyAt, a.LastActivityAt = now, now
		return true
	})
	if err == nil {
		err = terr
	}
	if err != nil {
		return err
	}
	s.event(s.ctx, a, string(StateReady), "", nil)
	log.Info("activation ready", "sandbox", sb.ID, "took", now.Sub(r.createdAt).String())
	return nil
}

// imageOf names the image a sandbox runs: its digest, or its ref for the
// host image.
func imageOf(sb sandbox.Sandbox) string {
	if sb.ImageDigest != "" {
		return sb.ImageDigest
	}
	return sb.Image
}

// waitHealthy polls the app's health path until it answers 2xx, the app
// exits, or HealthTimeout passes. A redirect is not followed: it counts as
// "not healthy yet", like any other status but 2xx.
func (s *Service) waitHealthy(ctx context.Context, r *run, ag Agent, cmdID string, target *url.URL) error {
	limit := r.spec.healthTimeout(s.cfg.HealthTimeout)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client, err := probeClient(target.Host)
	if err != nil {
		return fail("app_unhealthy", "%v", err)
	}
	defer client.CloseIdleConnections()
	u := target.String() + r.spec.HealthPath
	var last string
	wait := firstProbeWait
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		if cmd, err := ag.Get(ctx, cmdID); err == nil && cmd.Done() {
			tail, _ := ag.Tail(s.ctx, cmdID, logTailBytes)
			return &stepError{code: "app_exited", msg: "the app " + exitDesc(cmd) + " before it was healthy", tail: tail}
		}
		status, err := probe(ctx, client, u, r.spec.AppSecretHeader, r.secret)
		switch {
		case err == nil && status >= 200 && status < 300:
			return nil
		case err != nil:
			last = err.Error()
		case status >= 300 && status < 400:
			last = "status " + strconv.Itoa(status) + " (redirects are not followed)"
		default:
			last = "status " + strconv.Itoa(status)
		}
		timer.Reset(wait)
		wait = min(2*wait, maxProbeWait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			tail, _ := ag.Tail(s.ctx, cmdID, logTailBytes)
			return &stepError{code: "app_unhealthy", tail: tail,
				msg: fmt.Sprintf("%s did not answer 2xx within %s (last: %s)", r.spec.HealthPath, limit, last)}
		}
	}
}

// probeClient is the client of one activation's health checks. It runs on
// the host, outside the sandbox's egress policy, and sends the app secret:
// so it dials the app's own address and port whatever a URL says, never
// follows a redirect (a 3xx is the answer), and uses no proxy.
func probeClient(target string) (*http.Client, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, fmt.Errorf("health check target %q: %w", target, err)
	}
	d := &net.Dialer{Timeout: probeTimeout}
	d.SetMultipathTCP(false)
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr != ap.String() {
					return nil, fmt.Errorf("health check dials only the app at %s, not %s", ap, addr)
				}
				return d.DialContext(ctx, "tcp", ap.String())
			},
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// probe GETs u once with the app secret and returns the status.
func probe(ctx context.Context, client *http.Client, u, header, secret string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(header, secret)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func exitDesc(cmd agent.Command) string {
	switch {
	case cmd.Status == agent.StatusFailed:
		return "could not start: " + cmd.Error
	case cmd.Signal != "":
		return "was killed by " + cmd.Signal
	case cmd.ExitCode != nil:
		return "exited with code " + strconv.Itoa(*cmd.ExitCode)
	}
	return "ended (" + cmd.Status + ")"
}

// watchApp follows a ready app until it exits, its sandbox goes away, or a
// stop is requested, and then ends the activation.
func (s *Service) watchApp(r *run, log *slog.Logger) {
	r.mu.Lock()
	sbID, cmdID := r.sandboxID, r.cmdID
	r.mu.Unlock()
	for {
		if r.ctx.Err() != nil {
			break
		}
		var cmd agent.Command
		ag, err := s.cfg.Sandboxes.Agent(r.ctx, sbID)
		if err == nil {
			cmd, err = ag.Wait(r.ctx, cmdID)
		}
		if r.ctx.Err() != nil {
			break
		}
		// The sandbox first: when it stops (its timeout, an admin) the app
		// dies with it, which is not the app's crash.
		sb, gerr := s.cfg.Sandboxes.Get(r.ctx, sbID)
		if gerr == nil && sb.State != sandbox.Running || errors.Is(gerr, sandbox.ErrNotFound) {
			log.Warn("sandbox went away", "err", err)
			s.teardown(r, log, nil, false)
			s.finish(r, log, StateStopped, ReasonSandboxGone, "", "")
			return
		}
		if err == nil && cmd.Done() {
			tail, _ := ag.Tail(s.ctx, cmdID, logTailBytes)
			log.Warn("app exited", "how", exitDesc(cmd))
			s.teardown(r, log, ag, true)
			s.finish(r, log, StateFailed, "", "app_crashed: the app "+exitDesc(cmd), tail)
			return
		}
		// A passing agent error: look again shortly.
		select {
		case <-r.ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if s.ctx.Err() != nil {
		return // shutting down: the app keeps running and Start re-adopts it
	}
	reason := r.stopReason()
	ag, err := s.cfg.Sandboxes.Agent(s.ctx, sbID)
	if err != nil {
		ag = nil
	}
	if a, err := s.updateActivation(s.ctx, r.id, func(a *store.Activation) bool {
		if moveTo(a, StateDeactivating) != nil {
			return false
		}
		a.EndReason = reason
		return true
	}); err == nil && stateOf(a) == StateDeactivating {
		s.event(s.ctx, a, string(StateDeactivating), "", map[string]string{"reason": reason})
	}
	s.teardown(r, log, ag, reason != ReasonDeleted)
	s.finish(r, log, StateStopped, reason, "", "")
}

// teardown stops the app (SIGTERM, StopGrace, SIGKILL), saves the
// persistent paths if save and the agent answers, and deletes the sandbox.
func (s *Service) teardown(r *run, log *slog.Logger, ag Agent, save bool) {
	r.mu.Lock()
	sbID, cmdID := r.sandboxID, r.cmdID
	r.mu.Unlock()
	ctx := s.ctx
	if ag != nil && cmdID != "" {
		if cmd, err := ag.Get(ctx, cmdID); err == nil && !cmd.Done() {
			ag.Signal(ctx, cmdID, 15)
			wctx, cancel := context.WithTimeout(ctx, s.cfg.StopGrace)
			cmd, err = ag.Wait(wctx, cmdID)
			cancel()
			if err != nil || !cmd.Done() {
				ag.Signal(ctx, cmdID, 9)
				wctx, cancel := context.WithTimeout(ctx, killWait)
				ag.Wait(wctx, cmdID)
				cancel()
			}
		}
	}
	if save && ag != nil && len(r.spec.PersistentPaths) > 0 {
		if err := s.save(ctx, r, ag, log); err != nil {
			log.Warn("state not saved", "err", err)
			s.eventFor(ctx, r, string(StateDeactivating), "state not saved: "+err.Error(), nil)
		}
	}
	s.removeSandbox(sbID, log)
}

func (s *Service) removeSandbox(id string, log *slog.Logger) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
	defer cancel()
	if err := s.cfg.Sandboxes.Delete(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		log.Warn("delete sandbox", "sandbox", id, "err", err)
	}
}

// finish ends an activation: its sandbox deleted (if bring-up left one),
// the project freed, the final state and event written.
func (s *Service) finish(r *run, log *slog.Logger, state State, reason, errMsg, tail string) {
	s.finishWith(r, log, state, reason, errMsg, tail, nil)
}

// data is what a failed step adds to the failed event: the code, and the
// Retry-After of an admission refusal.
func (e *stepError) data() map[string]string {
	d := map[string]string{"code": e.code}
	if e.retryAfter > 0 {
		d["retryAfterMs"] = strconv.FormatInt(e.retryAfter.Milliseconds(), 10)
	}
	return d
}

// finishWith is finish with extra data on the final event.
func (s *Service) finishWith(r *run, log *slog.Logger, state State, reason, errMsg, tail string, extra map[string]string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), opTimeout)
	defer cancel()
	r.mu.Lock()
	sbID := r.sandboxID
	r.mu.Unlock()
	s.removeSandbox(sbID, log)
	if _, err := s.updateProject(ctx, r.projectID, func(p *store.Project) bool {
		if p.ActiveActivation != r.id {
			return false
		}
		p.ActiveActivation = ""
		return true
	}); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		log.Warn("free project", "err", err)
	}
	var terr error
	a, err := s.updateActivation(ctx, r.id, func(a *store.Activation) bool {
		if terr = moveTo(a, state); terr != nil {
			return false // ended already (an orphan sweep on another replica, say)
		}
		a.EndReason, a.Error, a.LogTail, a.EndedAt = reason, errMsg, tail, s.now()
		return true
	})
	if err == nil {
		err = terr
	}
	if err != nil {
		log.Warn("record activation end", "err", err)
		return
	}
	data := maps.Clone(extra)
	if tail != "" {
		if data == nil {
			data = map[string]string{}
		}
		data["logTail"] = tail
	}
	if reason != "" {
		if data == nil {
			data = map[string]string{}
		}
		data["reason"] = reason
	}
	s.event(ctx, a, string(state), errMsg, data)
	log.Info("activation ended", "state", string(state), "reason", reason)
}

// setState moves the activation to state and records the event.
func (s *Service) setState(ctx context.Context, r *run, state State, data map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var terr error
	a, err := s.updateActivation(s.ctx, r.id, func(a *store.Activation) bool {
		terr = moveTo(a, state)
		return terr == nil
	})
	if err == nil {
		err = terr
	}
	if err != nil {
		return fmt.Errorf("record %s: %w", state, err)
	}
	s.event(s.ctx, a, string(state), "", data)
	return nil
}

func (s *Service) eventFor(ctx context.Context, r *run, typ, msg string, data map[string]string) {
	r.mu.Lock()
	sbID := r.sandboxID
	r.mu.Unlock()
	s.event(ctx, store.Activation{ID: r.id, ProjectID: r.projectID, TeamID: r.teamID, SandboxID: sbID}, typ, msg, data)
}

// event appends an activation's event and wakes its watchers.
func (s *Service) event(ctx context.Context, a store.Activation, typ, msg string, data map[string]string) {
	e := store.Event{Time: s.now(), TeamID: a.TeamID, ProjectID: a.ProjectID,
		ActivationID: a.ID, SandboxID: a.SandboxID, Type: typ, Message: msg, Data: data}
	var err error
	if s.cfg.Events != nil {
		_, err = s.cfg.Events.Publish(ctx, e)
	} else {
		_, err = s.cfg.Store.AppendEvent(ctx, e)
	}
	if err != nil {
		s.log.Warn("append event", "activation", a.ID, "type", typ, "err", err)
	}
	s.mu.Lock()
	for ch := range s.watchers[a.ID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}
