package node

import (
	"context"
	"fmt"
	"maps"
	"path"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// startTimeout bounds starting a command. Starting is detached from the
// caller's context: a client hanging up mid-start must not leave it unknown
// whether the command runs.
const startTimeout = 30 * time.Second

// Exec runs a command in a running sandbox: the one command path of the
// API, the Vercel layer and project activation. It checks req, runs the
// command in the sandbox's WorkingDir unless req names a cwd, gives it the
// sandbox's env with req.Env and then req.SecretEnv over it, starts it
// detached from ctx (or, with req.Wait, starts it and waits for its exit
// in one round trip, ctx bounding only the wait), marks the sandbox active
// and hands the command to History: its start, and its exit at once
// when it was waited for, written right after the answer (started.go). A
// failed history write is logged, not returned: the command runs either
// way, and the stop records it again.
func (m *Manager) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error) {
	if err := req.Validate(); err != nil {
		return agent.Command{}, err
	}
	e, err := m.lookup(ctx, id)
	if err != nil {
		return agent.Command{}, err
	}
	sb, client, gone := e.snapshot()
	switch {
	case gone:
		return agent.Command{}, notFound(id)
	case sb.State != sandbox.Running || client == nil:
		return agent.Command{}, notRunning(sb)
	}
	areq := commandRequest(sb, req)
	e.touch(m.cfg.Now())
	var cmd agent.Command
	if req.Wait {
		cmd, err = client.Run(ctx, areq)
		// A long command is activity until its end, not only at its start.
		e.touch(m.cfg.Now())
	} else {
		startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
		cmd, err = client.Start(startCtx, areq)
		cancel()
	}
	if err != nil {
		return agent.Command{}, fmt.Errorf("run command in sandbox %s: %w", id, err)
	}
	m.recordStarted(ctx, sb, cmd)
	return cmd, nil
}

// commandRequest is what the agent gets for req in sb. The agent knows no
// sandbox env or working dir: both come from here, so that every caller
// gets the same defaults. Env merges image < sandbox (both in sb.Env) <
// request < secrets; the agent puts its own defaults (HOME, PATH...) under
// all of them.
func commandRequest(sb sandbox.Sandbox, req sandbox.ExecRequest) agent.CommandRequest {
	cwd := sb.WorkingDir // "" leaves the agent's default, the user's home
	if req.Cwd != "" {
		cwd = path.Clean(req.Cwd)
	}
	var env map[string]string
	if n := len(sb.Env) + len(req.Env) + len(req.SecretEnv); n > 0 {
		env = make(map[string]string, n)
		maps.Copy(env, sb.Env)
		maps.Copy(env, req.Env)
		maps.Copy(env, req.SecretEnv)
	}
	return agent.CommandRequest{Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Env: env, Sudo: req.Sudo,
		TimeoutMs: req.TimeoutMs, Stdin: req.Stdin, PTY: req.PTY, Tag: req.Tag}
}

// recordStarted hands a just-started command to History, off the
// caller's path (started.go) and detached from it: a client that leaves
// must not lose the record.
func (m *Manager) recordStarted(ctx context.Context, sb sandbox.Sandbox, cmd agent.Command) {
	if m.startLog == nil {
		return
	}
	m.startLog.add(startRecord{ctx: context.WithoutCancel(ctx), sb: sb, cmd: cmd})
}
