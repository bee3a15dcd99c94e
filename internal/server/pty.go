package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Terminal sessions are commands started on a pseudo-terminal: they are in
// the command list and history, and killed, got and waited for through
// /commands/{cmd}. Their output is the command's capped log, read here
// from an offset so that a client reconnects where it left; input and
// resizes are separate POSTs, so any HTTP/1.1 client (and the port of the
// E2B protocol, whose Process service does the same) can drive one.

const defaultPTYRows, defaultPTYCols = 24, 80

func (s *Server) startPTY(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.PTYRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	size := sandbox.PTYSize{Rows: req.Rows, Cols: req.Cols}
	if size.Rows == 0 {
		size.Rows = defaultPTYRows
	}
	if size.Cols == 0 {
		size.Cols = defaultPTYCols
	}
	cmd, err := s.sb.Exec(r.Context(), id, sandbox.ExecRequest{Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd, Env: req.Env,
		Sudo: req.Sudo, TimeoutMs: req.TimeoutMs, PTY: &size, Tag: req.Tag})
	if err != nil {
		return sandboxErr(id, err)
	}
	s.log.Info("terminal started", "sandbox", id, "command", cmd.ID, "cmd", cmd.Cmd)
	writeJSON(w, http.StatusCreated, toAPICommand(id, cmd))
	return nil
}

// ptyOutput streams a terminal's output from ?offset= (default 0, the
// oldest output kept; "end": only what comes next) as NDJSON PTYOutput
// lines until its exit line. Each
// frame is flushed as it comes: a keystroke's echo is one small frame.
func (s *Server) ptyOutput(w http.ResponseWriter, r *http.Request) error {
	if id, err := sandboxID(r); err == nil {
		past, err := s.fromHistory(r.Context(), id)
		if err != nil {
			return err
		}
		if past {
			return errLogsGone(id)
		}
	}
	var offset int64
	fromEnd := false
	if v := r.URL.Query().Get("offset"); v == agent.OffsetEnd {
		fromEnd = true
	} else if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_offset", "offset %q is not a non-negative number", v)
		}
		offset = n
	}
	sbID, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.longPoll(r)
	defer cancel()
	var out *agent.OutputReader
	if fromEnd {
		out, offset, err = ac.OutputFromEnd(ctx, cmdID)
	} else {
		out, err = ac.Output(ctx, cmdID, offset, true)
	}
	if err != nil {
		return s.shutdownErr(r, commandErr(cmdID, err))
	}
	defer out.Close()

	rc := startNDJSON(w)
	enc := json.NewEncoder(w)
	line := func(l api.PTYOutput) bool { return enc.Encode(l) == nil && rc.Flush() == nil }
	for {
		f, err := out.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if r.Context().Err() != nil {
				return nil // the client left
			}
			line(api.PTYOutput{Offset: offset, Error: s.streamError("terminal output", sbID, cmdID, err)})
			return nil
		}
		offset = f.Offset
		var l api.PTYOutput
		switch f.Kind {
		case agent.FrameStdout, agent.FrameStderr:
			l = api.PTYOutput{Data: f.Data, Offset: f.Offset}
		case agent.FrameGap:
			l = api.PTYOutput{Dropped: f.Dropped, Offset: f.Offset}
		case agent.FrameExit:
			var cmd agent.Command
			if err := json.Unmarshal(f.Data, &cmd); err != nil {
				s.log.Warn("bad exit frame", "sandbox", sbID, "command", cmdID, "err", err)
				cmd = agent.Command{ID: cmdID}
			}
			c := toAPICommand(sbID, cmd)
			line(api.PTYOutput{Exit: &c, Offset: f.Offset})
			return nil
		default:
			continue
		}
		if !line(l) {
			return nil // the client is gone
		}
	}
}

// startNDJSON sends the header of an NDJSON stream that lasts as long as
// what it follows: no write deadline.
func startNDJSON(w http.ResponseWriter) *http.ResponseController {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	return rc
}

// streamError is the error line that ends a stream the server could not
// finish: a shutdown (the session or watch goes on; reconnect), or a
// failure of the agent's stream.
func (s *Server) streamError(what, sbID, id string, err error) *api.ErrorDetail {
	if s.streams.Err() != nil {
		return &api.ErrorDetail{Code: "server_shutting_down", Message: "the server is shutting down; reconnect to go on"}
	}
	s.log.Warn(what+" stream failed", "sandbox", sbID, "id", id, "err", err)
	return &api.ErrorDetail{Code: "stream_failed", Message: "the stream ended early: " + err.Error()}
}

// ptyInput sends the body to the terminal as typed input.
func (s *Server) ptyInput(w http.ResponseWriter, r *http.Request) error {
	_, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	if err := ac.Stdin(r.Context(), cmdID, r.Body, false); err != nil {
		return commandErr(cmdID, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) ptyResize(w http.ResponseWriter, r *http.Request) error {
	var size api.PTYSize
	if err := decodeJSON(w, r, &size, false); err != nil {
		return err
	}
	ps := sandbox.PTYSize{Rows: size.Rows, Cols: size.Cols}
	if !ps.Valid() {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_pty_size", "rows and cols must be within 1..%d", sandbox.MaxPTYCells)
	}
	_, cmdID, ac, err := s.commandAgent(r)
	if err != nil {
		return err
	}
	if err := ac.Resize(r.Context(), cmdID, ps); err != nil {
		return commandErr(cmdID, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// watch streams the changes below a directory of a running sandbox as
// NDJSON WatchEvents, from the moment the answer's header is sent (every
// directory is watched by then) until the client leaves or the directory
// goes. Without sudo the sandbox's user watches, with the user's access.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) error {
	id, dir, err := pathRequest(r)
	if err != nil {
		return err
	}
	recursive, err := boolQuery(r, "recursive", false)
	if err != nil {
		return err
	}
	sudo, err := boolQuery(r, "sudo", false)
	if err != nil {
		return err
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	ctx, cancel := s.longPoll(r)
	defer cancel()
	wr, err := ac.Watch(ctx, dir, recursive, sudo)
	if err != nil {
		return s.shutdownErr(r, err)
	}
	defer wr.Close()

	rc := startNDJSON(w)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		ev, err := wr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if r.Context().Err() == nil {
				_ = enc.Encode(api.WatchEvent{Error: s.streamError("watch", id, dir, err)})
				_ = rc.Flush()
			}
			return nil
		}
		out := api.WatchEvent{Type: ev.Type, Dir: ev.Dir}
		if ev.Type != agent.WatchOverflow {
			out.Name, out.Path = ev.Name, path.Join(dir, ev.Name)
		}
		if enc.Encode(out) != nil || rc.Flush() != nil {
			return nil
		}
	}
}
