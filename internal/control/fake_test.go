package control

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeSandboxes is a Sandboxes whose sandboxes are in memory and whose
// commands are a tiny script language (see fakeAgent.Start); apps it
// "serves" are real HTTP servers on loopback, so the health check and the
// app target are exercised for real.
type fakeSandboxes struct {
	mu        sync.Mutex
	n         int
	sbs       map[string]*fakeSB
	creates   []sandbox.CreateRequest
	execs     []sandbox.ExecRequest // every Exec, in order
	createErr error
	imageCmd  []string
}

type fakeSB struct {
	sb    sandbox.Sandbox
	agent *fakeAgent
}

func newFakeSandboxes() *fakeSandboxes { return &fakeSandboxes{sbs: map[string]*fakeSB{}} }

var _ Sandboxes = (*fakeSandboxes)(nil)

func (f *fakeSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	f.n++
	sb := sandbox.Sandbox{ID: fmt.Sprintf("sb-%d", f.n), State: sandbox.Running, Image: req.Image, Env: req.Env,
		Address: netip.MustParseAddr("127.0.0.1"), TeamID: req.TeamID, ProjectID: req.ProjectID, CreatedAt: time.Now()}
	if f.createErr != nil {
		// Like node: the failed sandbox's record stays until deleted.
		sb.State = sandbox.Failed
	}
	f.sbs[sb.ID] = &fakeSB{sb: sb, agent: &fakeAgent{env: req.Env, cmds: map[string]*fakeCmd{}, files: map[string][]byte{}, dirs: map[string]bool{}}}
	return sb, f.createErr
}

func (f *fakeSandboxes) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sbs[id]
	if !ok {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no %s", id)
	}
	return s.sb, nil
}

func (f *fakeSandboxes) Stop(ctx context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	s, ok := f.sbs[id]
	f.mu.Unlock()
	if !ok {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no %s", id)
	}
	f.mu.Lock()
	s.sb.State = sandbox.Stopped
	sb := s.sb
	f.mu.Unlock()
	s.agent.killAll()
	return sb, nil
}

func (f *fakeSandboxes) Delete(ctx context.Context, id string) error {
	if _, err := f.Stop(ctx, id); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.sbs, id)
	f.mu.Unlock()
	return nil
}

// List returns every sandbox in one page, oldest first.
func (f *fakeSandboxes) List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []sandbox.Sandbox{}
	for _, s := range f.sbs {
		out = append(out, s.sb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, "", nil
}

func (f *fakeSandboxes) Agent(ctx context.Context, id string) (Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sbs[id]
	if !ok || s.sb.State != sandbox.Running {
		return nil, sandbox.Errorf(sandbox.ErrNotRunning, "sandbox_not_running", "%s not running", id)
	}
	return s.agent, nil
}

// Exec starts the command on the sandbox's fake agent, which adds the
// sandbox's env itself; the rest is node's Exec in small.
func (f *fakeSandboxes) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error) {
	if err := req.Validate(); err != nil {
		return agent.Command{}, err
	}
	f.mu.Lock()
	s, ok := f.sbs[id]
	var sb sandbox.Sandbox
	if ok {
		f.execs = append(f.execs, req)
		sb = s.sb
	}
	f.mu.Unlock()
	if !ok || sb.State != sandbox.Running {
		return agent.Command{}, sandbox.Errorf(sandbox.ErrNotRunning, "sandbox_not_running", "%s not running", id)
	}
	env := maps.Clone(req.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, req.SecretEnv)
	cwd := req.Cwd
	if cwd == "" {
		cwd = sb.WorkingDir
	}
	return s.agent.Start(ctx, agent.CommandRequest{Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Env: env, Sudo: req.Sudo, TimeoutMs: req.TimeoutMs})
}

func (f *fakeSandboxes) ImageCommand(team, ref string) ([]string, error) { return f.imageCmd, nil }

// live returns the IDs of sandboxes that exist.
func (f *fakeSandboxes) live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.sbs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (f *fakeSandboxes) createCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.creates)
}

func (f *fakeSandboxes) agentOf(id string) *fakeAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.sbs[id]; ok {
		return s.agent
	}
	return nil
}

// fakeAgent runs scripts: "serve PORT" serves /status on 127.0.0.1:PORT
// (200 with the right secret header, else 401) until signalled; "redirect
// PORT URL" answers every request on 127.0.0.1:PORT with 302 to URL;
// "stubborn PORT" serves but ignores SIGTERM; "exit N MSG" prints MSG and
// exits N; "hang" runs until signalled. Files live in memory.
type fakeAgent struct {
	env map[string]string

	mu    sync.Mutex
	n     int
	cmds  map[string]*fakeCmd
	files map[string][]byte // absolute path → content
	dirs  map[string]bool
}

type fakeCmd struct {
	mu       sync.Mutex
	cmd      agent.Command
	out      bytes.Buffer
	done     chan struct{}
	srv      *http.Server
	stubborn bool
	reqEnv   map[string]string
}

func (c *fakeCmd) exit(code int, sig string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd.Done() {
		return
	}
	if c.srv != nil {
		c.srv.Close()
	}
	c.cmd.ExitCode, c.cmd.Signal, c.cmd.FinishedAt = &code, sig, time.Now()
	c.cmd.Status = agent.StatusExited
	if sig != "" {
		c.cmd.Status = agent.StatusKilled
	}
	close(c.done)
}

func (a *fakeAgent) Start(ctx context.Context, req agent.CommandRequest) (agent.Command, error) {
	a.mu.Lock()
	a.n++
	id := "cmd-" + strconv.Itoa(a.n)
	c := &fakeCmd{cmd: agent.Command{ID: id, Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd, Status: agent.StatusRunning, StartedAt: time.Now()},
		done: make(chan struct{}), reqEnv: req.Env}
	a.cmds[id] = c
	a.mu.Unlock()
	script := strings.Join(req.Args, " ")
	if req.Cmd == "sh" && len(req.Args) == 2 {
		script = req.Args[1]
	} else {
		script = strings.Join(append([]string{req.Cmd}, req.Args...), " ")
	}
	f := strings.Fields(script)
	env := map[string]string{}
	for k, v := range a.env {
		env[k] = v
	}
	for k, v := range req.Env {
		env[k] = v
	}
	switch {
	case len(f) >= 2 && f[0] == "exit":
		code, _ := strconv.Atoi(f[1])
		c.out.WriteString(strings.Join(f[2:], " ") + "\n")
		c.exit(code, "")
	case len(f) == 2 && (f[0] == "serve" || f[0] == "stubborn"):
		ln, err := net.Listen("tcp", "127.0.0.1:"+f[1])
		if err != nil {
			c.out.WriteString(err.Error())
			c.exit(1, "")
			break
		}
		secret := env[DefaultAppSecretEnv]
		c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(DefaultAppSecretHeader) != secret {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "ok")
		})}
		c.stubborn = f[0] == "stubborn"
		go c.srv.Serve(ln)
		c.out.WriteString("listening\n")
	case len(f) == 3 && f[0] == "redirect":
		ln, err := net.Listen("tcp", "127.0.0.1:"+f[1])
		if err != nil {
			c.out.WriteString(err.Error())
			c.exit(1, "")
			break
		}
		c.srv = &http.Server{Handler: http.RedirectHandler(f[2], http.StatusFound)}
		go c.srv.Serve(ln)
		c.out.WriteString("redirecting\n")
	case len(f) == 1 && f[0] == "hang":
		c.out.WriteString("hanging\n")
	default:
		c.out.WriteString("unknown script " + script)
		c.exit(127, "")
	}
	return c.snapshot(), nil
}

func (c *fakeCmd) snapshot() agent.Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd
}

func (a *fakeAgent) cmd(id string) (*fakeCmd, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cmds[id]
	if !ok {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "command_not_found", "no %s", id)
	}
	return c, nil
}

func (a *fakeAgent) Get(ctx context.Context, id string) (agent.Command, error) {
	c, err := a.cmd(id)
	if err != nil {
		return agent.Command{}, err
	}
	return c.snapshot(), nil
}

func (a *fakeAgent) Wait(ctx context.Context, id string) (agent.Command, error) {
	c, err := a.cmd(id)
	if err != nil {
		return agent.Command{}, err
	}
	select {
	case <-c.done:
		return c.snapshot(), nil
	case <-ctx.Done():
		return agent.Command{}, ctx.Err()
	}
}

func (a *fakeAgent) Signal(ctx context.Context, id string, sig int) error {
	c, err := a.cmd(id)
	if err != nil {
		return err
	}
	if sig == 15 && c.stubborn {
		return nil
	}
	c.exit(128+sig, map[int]string{9: "SIGKILL", 15: "SIGTERM"}[sig])
	return nil
}

func (a *fakeAgent) Tail(ctx context.Context, id string, max int) (string, error) {
	c, err := a.cmd(id)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.out.Bytes()
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b), nil
}

func (a *fakeAgent) Mkdir(ctx context.Context, req agent.MkdirRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dirs[req.Path] = true
	return nil
}

func (a *fakeAgent) WriteTar(ctx context.Context, dir string, sudo bool, r io.Reader) (agent.WriteResult, error) {
	var res agent.WriteResult
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if !local(strings.TrimSuffix(hdr.Name, "/")) {
			return res, sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "bad entry %q", hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return res, err
		}
		a.writeFile(dir+"/"+hdr.Name, b)
		res.Files++
		res.Bytes += int64(len(b))
	}
}

func (a *fakeAgent) writeFile(p string, b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.files[p] = b
}

func (a *fakeAgent) readFile(p string) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.files[p]
	return b, ok
}

func (a *fakeAgent) ReadArchive(ctx context.Context, p string) (io.ReadCloser, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	found := a.dirs[p]
	var names []string
	for name := range a.files {
		if rest, ok := strings.CutPrefix(name, p+"/"); ok {
			names = append(names, rest)
		}
	}
	sort.Strings(names)
	for _, rest := range names {
		found = true
		b := a.files[p+"/"+rest]
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rest, Size: int64(len(b)), Mode: 0o644})
		tw.Write(b)
	}
	// Hostile entries the saver must drop.
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc/shadow"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Size: 0})
	tw.Close()
	if !found {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "file_not_found", "no %s", p)
	}
	return io.NopCloser(&buf), nil
}

func (a *fakeAgent) killAll() {
	a.mu.Lock()
	cmds := make([]*fakeCmd, 0, len(a.cmds))
	for _, c := range a.cmds {
		cmds = append(cmds, c)
	}
	a.mu.Unlock()
	for _, c := range cmds {
		c.exit(137, "SIGKILL")
	}
}

// crash ends a sandbox's app as if it had died on its own.
func (a *fakeAgent) crash(out string) {
	a.mu.Lock()
	var app *fakeCmd
	for _, c := range a.cmds {
		if c.srv != nil {
			app = c
		}
	}
	a.mu.Unlock()
	app.mu.Lock()
	app.out.WriteString(out)
	app.mu.Unlock()
	app.exit(2, "")
}
