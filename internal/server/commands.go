package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// agentFor returns the agent of a running sandbox.
func (s *Server) agentFor(ctx context.Context, id string) (*agent.Client, error) {
	sb, err := s.sb.Get(ctx, id)
	if err != nil {
		return nil, sandboxErr(id, err)
	}
	if sb.State != sandbox.Running {
		return nil, &sandbox.Error{Kind: sandbox.ErrNotRunning, Code: "sandbox_not_running",
			Message: fmt.Sprintf("sandbox %q is %s, not running", id, sb.State)}
	}
	ac, err := s.sb.Agent(ctx, id)
	if err != nil {
		return nil, sandboxErr(id, err)
	}
	return ac, nil
}

// commandErr gives a not-found from the agent the command-specific code.
func commandErr(id string, err error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		if c := sandbox.CodeOf(err); c == "" || c == "not_found" {
			return &sandbox.Error{Kind: sandbox.ErrNotFound, Code: "command_not_found", Message: fmt.Sprintf("command %q not found", id)}
		}
	}
	return fmt.Errorf("command %s: %w", id, err)
}

func (s *Server) runCommand(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.CommandRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	ereq := sandbox.ExecRequest{Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd, Env: req.Env, Sudo: req.Sudo,
		TimeoutMs: req.TimeoutMs, Stdin: req.Stdin, Wait: !req.Detached}
	ctx := r.Context()
	if ereq.Wait {
		// The wait lasts as long as the command, so CloseStreams ends it
		// too; the command runs on either way.
		var cancel context.CancelFunc
		ctx, cancel = s.longPoll(r)
		defer cancel()
	}
	cmd, err := s.sb.Exec(ctx, id, ereq)
	if err != nil {
		return s.shutdownErr(r, sandboxErr(id, err))
	}
	if !ereq.Wait {
		crashpoint.Hit("server/exec/started")
	}
	s.log.Info("command started", "sandbox", id, "command", cmd.ID, "cmd", req.Cmd, "detached", req.Detached)
	writeJSON(w, http.StatusCreated, toAPICommand(id, cmd))
	return nil
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	past, err := s.fromHistory(r.Context(), id)
	if err != nil {
		return err
	}
	if past {
		cmds, err := s.historyCommands(r.Context(), id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, api.CommandList{Commands: cmds})
		return nil
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	cmds, err := ac.List(r.Context())
	if err != nil {
		return fmt.Errorf("list commands of sandbox %s: %w", id, err)
	}
	out := api.CommandList{Commands: make([]api.Command, 0, len(cmds))}
	for _, c := range cmds {
		out.Commands = append(out.Commands, toAPICommand(id, c))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// commandAgent resolves {id} and {cmd} and the sandbox's agent.
func (s *Server) commandAgent(r *http.Request) (sbID, cmdID string, ac *agent.Client, err error) {
	if sbID, err = sandboxID(r); err != nil {
		return "", "", nil, err
	}
	if cmdID, err = commandID(r); err != nil {
		return "", "", nil, err
	}
	ac, err = s.agentFor(r.Context(), sbID)
	return sbID, cmdID, ac, err
}

// pastCommand answers a command of a sandbox that no longer runs from the
// history; done is false when the sandbox runs (or there is no history)
// and the agent should answer.
func (s *Server) pastCommand(w http.ResponseWriter, r *http.Request) (done bool, err error) {
	sbID, err := sandboxID(r)
	if err != nil {
		return true, err
	}
	cmdID, err := commandID(r)
	if err != nil {
		return true, err
	}
	past, err := s.fromHistory(r.Context(), sbID)
	if err != nil || !past {
		return err != nil, err
	}
	c, err := s.historyCommand(r.Context(), sbID, cmdID)
	if err != nil {
		return true, err
	}
	writeJSON(w, http.StatusOK, c)
	return true, nil
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request) error {
	if done, err := s.pastCommand(w, r); done {
		return err
	}
	sbID, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	cmd, err := ac.Get(r.Context(), cmdID)
	if err != nil {
		return commandErr(cmdID, err)
	}
	writeJSON(w, http.StatusOK, toAPICommand(sbID, cmd))
	return nil
}

func (s *Server) waitCommand(w http.ResponseWriter, r *http.Request) error {
	// A stopped sandbox's commands wait no more: answer what is known.
	if done, err := s.pastCommand(w, r); done {
		return err
	}
	sbID, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.longPoll(r)
	defer cancel()
	cmd, err := ac.Wait(ctx, cmdID)
	if err != nil {
		return s.shutdownErr(r, commandErr(cmdID, err))
	}
	writeJSON(w, http.StatusOK, toAPICommand(sbID, cmd))
	return nil
}

func (s *Server) killCommand(w http.ResponseWriter, r *http.Request) error {
	var req api.KillRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	sig, err := parseSignal(req.Signal)
	if err != nil {
		return err
	}
	sbID, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	if err := ac.Signal(r.Context(), cmdID, sig); err != nil {
		return commandErr(cmdID, err)
	}
	cmd, err := ac.Get(r.Context(), cmdID)
	if err != nil {
		return commandErr(cmdID, err)
	}
	writeJSON(w, http.StatusOK, toAPICommand(sbID, cmd))
	return nil
}

func (s *Server) commandStdin(w http.ResponseWriter, r *http.Request) error {
	closeAfter, err := boolQuery(r, "close", false)
	if err != nil {
		return err
	}
	_, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	// The body goes to the agent as it arrives: stdin can be endless.
	if err := ac.Stdin(r.Context(), cmdID, r.Body, closeAfter); err != nil {
		return commandErr(cmdID, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// commandLogs streams a command's output as NDJSON: everything the
// sandbox keeps from the start (a dropped line for what it no longer
// does), then (with follow, the default) live output until the exit line.
// Nothing is buffered beyond one frame; each frame is flushed as it comes.
func (s *Server) commandLogs(w http.ResponseWriter, r *http.Request) error {
	if id, err := sandboxID(r); err == nil {
		past, err := s.fromHistory(r.Context(), id)
		if err != nil {
			return err
		}
		if past {
			return errLogsGone(id)
		}
	}
	sbID, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	follow, err := boolQuery(r, "follow", true)
	if err != nil {
		return err
	}
	ctx, cancel := s.longPoll(r)
	defer cancel()
	out, err := ac.Output(ctx, cmdID, 0, follow)
	if err != nil {
		return s.shutdownErr(r, commandErr(cmdID, err))
	}
	defer out.Close()

	rc := http.NewResponseController(w)
	// A followed log lasts as long as the command: no write deadline.
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	enc := newLogEncoder(w)
	for {
		f, err := out.Next()
		if err == io.EOF {
			err = enc.flush()
			_ = rc.Flush()
			return nil
		}
		if err != nil {
			if r.Context().Err() != nil {
				return nil // the client left
			}
			if s.streams.Err() != nil {
				_ = enc.flush()
				_ = enc.line(api.LogLine{Error: &api.ErrorDetail{Code: "server_shutting_down",
					Message: "the server is shutting down; the command runs on, reconnect to follow it"}})
				_ = rc.Flush()
				return nil
			}
			s.log.Warn("command log stream failed", "sandbox", sbID, "command", cmdID, "err", err)
			_ = enc.flush()
			_ = enc.line(api.LogLine{Error: &api.ErrorDetail{Code: "stream_failed", Message: "the output stream ended early: " + err.Error()}})
			_ = rc.Flush()
			return nil
		}
		switch f.Kind {
		case agent.FrameStdout, agent.FrameStderr:
			err = enc.chunk(f.Kind, f.Data)
		case agent.FrameGap:
			// What is held back of a split character will not be completed
			// by the output that follows the gap.
			if err = enc.flush(); err == nil {
				err = enc.line(api.LogLine{Dropped: f.Dropped})
			}
		case agent.FrameExit:
			var cmd agent.Command
			if err = json.Unmarshal(f.Data, &cmd); err != nil {
				s.log.Warn("bad exit frame", "sandbox", sbID, "command", cmdID, "err", err)
				cmd = agent.Command{ID: cmdID}
			}
			if err = enc.flush(); err == nil {
				c := toAPICommand(sbID, cmd)
				err = enc.line(api.LogLine{Exit: &c})
			}
		}
		if err != nil {
			return nil // writing to the client failed: it is gone
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if f.Kind == agent.FrameExit {
			return nil
		}
	}
}

func toAPICommand(sandboxID string, c agent.Command) api.Command {
	return api.Command{
		ID:         c.ID,
		SandboxID:  sandboxID,
		Cmd:        c.Cmd,
		Args:       c.Args,
		Cwd:        c.Cwd,
		Sudo:       c.Sudo,
		Tag:        c.Tag,
		PTY:        apiPTYSize(c.PTY),
		Status:     c.Status,
		ExitCode:   c.ExitCode,
		Signal:     c.Signal,
		OOMKilled:  c.OOMKilled,
		Error:      c.Error,
		StartedAt:  utcOrZero(c.StartedAt),
		FinishedAt: utcOrZero(c.FinishedAt),
	}
}

func apiPTYSize(s *agent.PTYSize) *api.PTYSize {
	if s == nil {
		return nil
	}
	return &api.PTYSize{Rows: s.Rows, Cols: s.Cols}
}

// signals are the Linux signal numbers by name. They are spelled out rather
// than taken from syscall so that the server builds the same on every OS:
// the numbers are those inside the sandbox, which is always Linux.
var signals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
	"KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
	"STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
	"URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
	"PWR": 30, "SYS": 31,
}

// parseSignal accepts "SIGTERM", "TERM", "15" or nothing (SIGKILL).
func parseSignal(s api.Signal) (int, error) {
	v := strings.ToUpper(strings.TrimSpace(string(s)))
	if v == "" {
		return signals["KILL"], nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 || n > 64 {
			return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_signal", "signal number %d is out of range [1, 64]", n)
		}
		return n, nil
	}
	if n, ok := signals[strings.TrimPrefix(v, "SIG")]; ok {
		return n, nil
	}
	return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_signal", "unknown signal %q", string(s))
}
