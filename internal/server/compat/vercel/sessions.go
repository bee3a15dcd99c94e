package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

const contentTypeNDJSON = "application/x-ndjson" // exactly: the SDK compares strings

func isV1(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, Prefix+"/v1/") }

// sessionRecord finds the record owning {sid}, in the request's team and
// API generation.
func (h *Handler) sessionRecord(r *http.Request) (Record, *SessionRecord, error) {
	sid := r.PathValue("sid")
	rec, err := h.store.bySession(r.Context(), teamOf(r), sid)
	if err != nil {
		return Record{}, nil, err
	}
	want := apiV2
	if isV1(r) {
		want = apiV1
	}
	s := rec.session(sid)
	if rec.API != want || s == nil {
		return Record{}, nil, errSessionNotFound
	}
	return rec, s, nil
}

// runningSession is a session whose paddock sandbox runs, with its agent.
type runningSession struct {
	rec Record
	s   *SessionRecord
	sb  sandbox.Sandbox
	ac  *agent.Client
}

// running resolves {sid} to a running session. A session being stopped or
// snapshotted answers 422, one that ended 410: on both the SDK resumes the
// sandbox and retries.
func (h *Handler) running(r *http.Request) (runningSession, error) {
	rec, s, err := h.sessionRecord(r)
	if err != nil {
		return runningSession{}, err
	}
	if t := h.transientOf(s.ID); t != "" {
		return runningSession{}, errSessionBusy(s.ID, t)
	}
	l, err := h.live(r.Context(), s)
	if err != nil {
		return runningSession{}, err
	}
	switch {
	case !l.found:
		return runningSession{}, errSessionStopped(s.ID)
	case l.sb.State == sandbox.Stopping:
		return runningSession{}, errSessionBusy(s.ID, "stopping")
	case l.sb.State != sandbox.Running:
		return runningSession{}, errSessionStopped(s.ID)
	}
	ac, err := h.sb.Agent(r.Context(), s.ID)
	if err != nil {
		return runningSession{}, fmt.Errorf("session %s: %w", s.ID, err)
	}
	return runningSession{rec: rec, s: s, sb: l.sb, ac: ac}, nil
}

func (rs runningSession) wireCommand(r *http.Request, c agent.Command) wireCommand {
	out := wireCommand{ID: c.ID, Name: c.Cmd, Args: c.Args, Cwd: c.Cwd, StartedAt: ms(c.StartedAt)}
	if out.Args == nil {
		out.Args = []string{}
	}
	if isV1(r) {
		out.SandboxID = rs.s.ID
	} else {
		out.SessionID = rs.s.ID
	}
	if c.Done() {
		code := -1
		if c.ExitCode != nil {
			code = *c.ExitCode
		}
		out.ExitCode = &code
		if !c.FinishedAt.IsZero() {
			d := c.FinishedAt.Sub(c.StartedAt).Milliseconds()
			out.DurationMs = &d
		}
	}
	return out
}

// longPoll is a context for a request that lasts as long as a command: it
// ends with the request or with CloseStreams.
func (h *Handler) longPoll(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(h.streams, cancel)
	return ctx, func() { stop(); cancel() }
}

// runCommand is POST .../cmd. Detached (no wait) it answers {command} at
// once; with wait it streams NDJSON: the started command, its output lines
// (v2 asks with logs: true; v1 reads them from .../logs), the finished command.
func (h *Handler) runCommand(w http.ResponseWriter, r *http.Request) error {
	var req commandRequest
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	// Vercel resolves a relative cwd against the sandbox's, and runs in the
	// user's home when the image names no working directory.
	cwd := rs.rec.cwd(rs.sb)
	if req.Cwd != "" {
		if cwd, err = sandboxPath(req.Cwd, "", cwd); err != nil {
			return err
		}
	}
	cmd, err := h.sb.Exec(r.Context(), rs.s.ID, sandbox.ExecRequest{Cmd: req.Command, Args: req.Args, Cwd: cwd, Env: req.Env,
		Sudo: req.Sudo, TimeoutMs: req.Timeout})
	if err != nil {
		return fmt.Errorf("session %s: %w", rs.s.ID, err)
	}
	h.log.Info("vercel compat: command started", "sandbox", rs.s.ID, "command", cmd.ID, "cmd", req.Command, "wait", req.Wait)
	if !req.Wait {
		writeJSON(w, http.StatusOK, map[string]any{"command": rs.wireCommand(r, cmd)})
		return nil
	}
	nd := h.startNDJSON(w)
	if err := nd.line(map[string]any{"command": rs.wireCommand(r, cmd)}); err != nil {
		return nil // the client left; the command runs on
	}
	ctx, stop := h.longPoll(r)
	defer stop()
	var final agent.Command
	if req.Logs {
		var ok bool
		if final, ok = h.streamOutput(ctx, nd, rs, cmd.ID); !ok {
			return nil
		}
	} else if final, err = rs.ac.Wait(ctx, cmd.ID); err != nil {
		h.streamError(ctx, nd, rs.s.ID, err)
		return nil
	}
	_ = nd.line(map[string]any{"command": rs.wireCommand(r, final)})
	return nil
}

// ndjson writes flushed NDJSON lines.
type ndjson struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *json.Encoder
}

func (h *Handler) startNDJSON(w http.ResponseWriter) *ndjson {
	rc := http.NewResponseController(w)
	// A stream lasts as long as its command: no write deadline.
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", contentTypeNDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &ndjson{w: w, rc: rc, enc: enc}
}

func (n *ndjson) line(v any) error {
	if err := n.enc.Encode(v); err != nil {
		return err
	}
	return n.rc.Flush()
}

// streamError ends a stream whose status is already sent with an error
// line, which the SDK raises as a StreamError. ctx is the stream's
// longPoll context: cancelled by the client leaving (nobody to tell) or by
// CloseStreams (tell the client the command runs on).
func (h *Handler) streamError(ctx context.Context, nd *ndjson, sid string, err error) {
	if ctx.Err() != nil && h.streams.Err() == nil {
		return // the client left
	}
	code, msg := "stream_failed", "the output stream ended early: "+err.Error()
	if h.streams.Err() != nil {
		code, msg = "server_shutting_down", "the server is shutting down; the command runs on"
	} else {
		h.log.Warn("vercel compat: command stream failed", "sandbox", sid, "err", err)
	}
	_ = nd.line(logLine{Stream: "error", Data: errorDetail{Code: code, Message: msg}})
}

// streamOutput copies a command's output, from the start, as log lines
// until its exit frame, and returns the finished command. ok is false when
// the stream could not finish (an error line was sent, or the client left).
func (h *Handler) streamOutput(ctx context.Context, nd *ndjson, rs runningSession, cmdID string) (agent.Command, bool) {
	out, err := rs.ac.Output(ctx, cmdID, 0, true)
	if err != nil {
		h.streamError(ctx, nd, rs.s.ID, err)
		return agent.Command{}, false
	}
	defer out.Close()
	var enc textEncoder
	for {
		f, err := out.Next()
		if err == io.EOF {
			err = errors.New("output ended before the command's exit")
		}
		if err != nil {
			h.streamError(ctx, nd, rs.s.ID, err)
			return agent.Command{}, false
		}
		switch f.Kind {
		case agent.FrameStdout, agent.FrameStderr:
			for _, l := range enc.chunk(f.Kind, f.Data) {
				if nd.line(l) != nil {
					return agent.Command{}, false
				}
			}
		case agent.FrameExit:
			for _, l := range enc.flush() {
				if nd.line(l) != nil {
					return agent.Command{}, false
				}
			}
			var cmd agent.Command
			if err := json.Unmarshal(f.Data, &cmd); err != nil || cmd.ID == "" {
				h.log.Warn("vercel compat: bad exit frame", "sandbox", rs.s.ID, "command", cmdID, "err", err)
				if cmd, err = rs.ac.Get(ctx, cmdID); err != nil {
					h.streamError(ctx, nd, rs.s.ID, err)
					return agent.Command{}, false
				}
			}
			return cmd, true
		}
	}
}

// textEncoder turns output frames into log lines whose data is text, as
// the SDK requires: a chunk that ends inside a UTF-8 sequence keeps the
// tail for the stream's next chunk; bytes that are not UTF-8 at all become
// U+FFFD (Vercel's wire has no binary form).
type textEncoder struct {
	carry [2][]byte // stdout, stderr
}

func (e *textEncoder) chunk(kind byte, data []byte) []logLine {
	i, stream := 0, "stdout"
	if kind == agent.FrameStderr {
		i, stream = 1, "stderr"
	}
	buf := append(e.carry[i], data...)
	cut := incompleteTail(buf)
	e.carry[i] = append([]byte(nil), buf[cut:]...)
	if cut == 0 {
		return nil
	}
	return []logLine{{Stream: stream, Data: strings.ToValidUTF8(string(buf[:cut]), "\uFFFD")}}
}

func (e *textEncoder) flush() []logLine {
	var out []logLine
	for i, stream := range []string{"stdout", "stderr"} {
		if len(e.carry[i]) > 0 {
			out = append(out, logLine{Stream: stream, Data: strings.ToValidUTF8(string(e.carry[i]), "\uFFFD")})
			e.carry[i] = nil
		}
	}
	return out
}

// incompleteTail returns where a trailing, not yet complete UTF-8 sequence
// starts in b, or len(b).
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		c := b[i]
		switch {
		case c < utf8.RuneSelf:
			return len(b)
		case c >= 0xC0:
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// getCommand is GET .../cmd/{cmd}[?wait=true].
func (h *Handler) getCommand(w http.ResponseWriter, r *http.Request) error {
	wait, err := boolParam(r, "wait")
	if err != nil {
		return err
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	id := r.PathValue("cmd")
	var cmd agent.Command
	if wait {
		ctx, stop := h.longPoll(r)
		defer stop()
		cmd, err = rs.ac.Wait(ctx, id)
	} else {
		cmd, err = rs.ac.Get(r.Context(), id)
	}
	if err != nil {
		return commandErr(id, err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"command": rs.wireCommand(r, cmd)})
	return nil
}

func commandErr(id string, err error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		return sandbox.Errorf(sandbox.ErrNotFound, "not_found", "command %q not found", id)
	}
	return fmt.Errorf("command %s: %w", id, err)
}

// commandLogs is GET .../cmd/{cmd}/logs: the output from the start, then
// live, ending when the command does.
func (h *Handler) commandLogs(w http.ResponseWriter, r *http.Request) error {
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	id := r.PathValue("cmd")
	ctx, stop := h.longPoll(r)
	defer stop()
	if _, err := rs.ac.Get(ctx, id); err != nil {
		return commandErr(id, err)
	}
	nd := h.startNDJSON(w)
	h.streamOutput(ctx, nd, rs, id)
	return nil
}

// killCommand is POST .../cmd/{cmd}/kill (v1: .../{cmd}/kill) with {signal: n}.
func (h *Handler) killCommand(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Signal *int `json:"signal"`
	}
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	sig := 15
	if req.Signal != nil {
		sig = *req.Signal
	}
	if sig < 1 || sig > 64 {
		return badRequest("signal %d is out of range [1, 64]", sig)
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	id := r.PathValue("cmd")
	if err := rs.ac.Signal(r.Context(), id, sig); err != nil && !errors.Is(err, sandbox.ErrConflict) {
		// A conflict is a command that already ended: nothing left to signal.
		return commandErr(id, err)
	}
	cmd, err := rs.ac.Get(r.Context(), id)
	if err != nil {
		return commandErr(id, err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"command": rs.wireCommand(r, cmd)})
	return nil
}

// runningPath decodes a file request and resolves its path in {sid}'s
// running session.
func (h *Handler) runningPath(w http.ResponseWriter, r *http.Request) (runningSession, pathRequest, string, error) {
	var req pathRequest
	if _, err := decodeJSON(w, r, &req); err != nil {
		return runningSession{}, req, "", err
	}
	rs, err := h.running(r)
	if err != nil {
		return runningSession{}, req, "", err
	}
	p, err := sandboxPath(req.Path, req.Cwd, rs.rec.cwd(rs.sb))
	return rs, req, p, err
}

// mkdir is POST .../fs/mkdir {path, cwd?, recursive?}.
func (h *Handler) mkdir(w http.ResponseWriter, r *http.Request) error {
	rs, req, p, err := h.runningPath(w, r)
	if err != nil {
		return err
	}
	if req.Recursive {
		if err := rs.ac.Mkdir(r.Context(), agent.MkdirRequest{Path: p}); err != nil {
			return fmt.Errorf("mkdir %s in session %s: %w", p, rs.s.ID, err)
		}
	} else if err := h.mkdirOne(r.Context(), rs, p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// mkdirTimeout bounds the mkdir(1) that mkdirOne runs.
const mkdirTimeout = 30 * time.Second

// mkdirOne is mkdir without -p, as Vercel's fs/mkdir is unless asked to
// be recursive: an existing path or a missing parent is an error. The
// agent only has mkdir -p, so this runs mkdir(1) as the session's user.
// It is part of a file operation, not a command of the user's: it goes to
// the agent directly, not through Exec, and stays out of the history.
func (h *Handler) mkdirOne(ctx context.Context, rs runningSession, p string) error {
	ctx, cancel := context.WithTimeout(ctx, mkdirTimeout)
	defer cancel()
	cmd, err := rs.ac.Run(ctx, agent.CommandRequest{Cmd: "mkdir", Args: []string{"--", p}, Cwd: "/"})
	if err != nil {
		return fmt.Errorf("mkdir %s in session %s: %w", p, rs.s.ID, err)
	}
	if cmd.ExitCode != nil && *cmd.ExitCode == 0 {
		return nil
	}
	var stderr strings.Builder
	if out, err := rs.ac.Output(ctx, cmd.ID, 0, false); err == nil {
		defer out.Close()
		for stderr.Len() < 4096 {
			f, err := out.Next()
			if err != nil {
				break
			}
			if f.Kind == agent.FrameStderr {
				stderr.Write(f.Data)
			}
		}
	}
	msg := strings.TrimSpace(strings.ToValidUTF8(stderr.String(), "\uFFFD"))
	switch {
	case strings.Contains(msg, "File exists"):
		return sandbox.Errorf(sandbox.ErrConflict, "file_exists", "mkdir %s: the path exists", p)
	case strings.Contains(msg, "No such file"):
		return sandbox.Errorf(sandbox.ErrNotFound, "file_not_found", "mkdir %s: the parent directory does not exist", p)
	case strings.Contains(msg, "Permission denied"):
		return sandbox.Errorf(sandbox.ErrForbidden, "permission_denied", "mkdir %s: permission denied", p)
	}
	return badRequest("mkdir %s failed: %s", p, msg)
}

// uploadTypes are the Content-Types an fs/write body may carry; the agent
// detects gzip itself.
var uploadTypes = map[string]bool{
	"application/gzip": true, "application/x-gzip": true, "application/x-tar": true,
	"application/tar": true, "application/octet-stream": true,
}

// writeFiles is POST .../fs/write: a gzip tar extracted into x-cwd (the
// SDK sends "/" with entry names relative to it), as the session's user.
func (h *Handler) writeFiles(w http.ResponseWriter, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !uploadTypes[mt] {
			return badRequest("fs/write takes a gzip tar (Content-Type application/gzip), not %q", ct)
		}
	}
	dir := r.Header.Get("X-Cwd")
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) || strings.ContainsRune(dir, 0) {
		return badRequest("x-cwd must be an absolute path")
	}
	if r.ContentLength > h.maxUpload {
		return &http.MaxBytesError{Limit: h.maxUpload}
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, h.maxUpload)
	if _, err := rs.ac.WriteTar(r.Context(), path.Clean(dir), false, body); err != nil {
		return fmt.Errorf("write files in session %s: %w", rs.s.ID, err)
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// readFile is POST .../fs/read: the file's bytes, or 404.
func (h *Handler) readFile(w http.ResponseWriter, r *http.Request) error {
	rs, _, p, err := h.runningPath(w, r)
	if err != nil {
		return err
	}
	rc, info, err := rs.ac.ReadFile(r.Context(), p, false) // as the user, like the files the SDK writes
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return sandbox.Errorf(sandbox.ErrNotFound, "file_not_found", "file %q not found", p)
		}
		return fmt.Errorf("read %s in session %s: %w", p, rs.s.ID, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if info.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		h.log.Warn("vercel compat: file read cut short", "sandbox", rs.s.ID, "path", p, "err", err)
		panic(http.ErrAbortHandler) // a truncated body must not read as the whole file
	}
	return nil
}

// extendTimeout is POST .../extend-timeout {duration}.
func (h *Handler) extendTimeout(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Duration int64 `json:"duration"`
	}
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Duration <= 0 || req.Duration > int64(24*365*time.Hour/time.Millisecond) {
		return badRequest("duration must be a positive number of milliseconds")
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	if _, err := h.sb.ExtendTimeout(r.Context(), rs.s.ID, time.Duration(req.Duration)*time.Millisecond); err != nil {
		return fmt.Errorf("extend session %s: %w", rs.s.ID, err)
	}
	return h.answerSession(w, r, rs.rec, rs.s, nil)
}

// networkPolicy is POST .../network-policy: the running session's egress
// policy changes now; the sandbox's default (PATCH) is left alone.
func (h *Handler) networkPolicy(w http.ResponseWriter, r *http.Request) error {
	var req policyRequest
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	pol, err := policyFromRequest(&req)
	if err != nil {
		return err
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	if _, err := h.sb.UpdateNetworkPolicy(r.Context(), rs.s.ID, *toSandboxPolicy(pol)); err != nil {
		return fmt.Errorf("network policy of session %s: %w", rs.s.ID, err)
	}
	return h.answerSession(w, r, rs.rec, rs.s, nil)
}

// answerSession answers {session} (v2) or {sandbox} (v1), plus extra.
func (h *Handler) answerSession(w http.ResponseWriter, r *http.Request, rec Record, s *SessionRecord, extra map[string]any) error {
	l, err := h.live(r.Context(), s)
	if err != nil {
		return err
	}
	ws := h.wireSessionOf(r.Context(), &rec, l)
	out := map[string]any{}
	if isV1(r) {
		out["sandbox"] = v1Sandbox(ws)
	} else {
		out["session"] = ws
	}
	maps.Copy(out, extra)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// stopSession is POST .../stop. A persistent v2 sandbox is snapshotted as
// it stops, and resumes from that snapshot.
func (h *Handler) stopSession(w http.ResponseWriter, r *http.Request) error {
	rec, s, err := h.sessionRecord(r)
	if err != nil {
		return err
	}
	snap := rec.Persistent && rec.API == apiV2 && s == rec.current()
	res, stepErr := h.stop(r.Context(), &rec, s, snap, "automatic")
	rec, err = h.record(r.Context(), rec, res)
	if stepErr != nil {
		return stepErr
	}
	if err != nil {
		return err
	}
	if s = rec.session(res.sid); s == nil {
		return errSessionNotFound
	}
	extra := map[string]any{}
	if !isV1(r) {
		l, err := h.live(r.Context(), s)
		if err != nil {
			return err
		}
		ws := h.wireSessionOf(r.Context(), &rec, l)
		extra["sandbox"] = h.wireSandboxOf(&rec, &ws)
		if res.snap != nil {
			if sr, snap, err := h.sessionSnapshot(r.Context(), rec, s); err == nil {
				extra["snapshot"] = wireSnapshotOf(snap, sr, false)
			}
		}
	}
	return h.answerSession(w, r, rec, s, extra)
}

// sessionSnapshot returns the snapshot recorded for session s: the one
// this request took, or the one another writer took first.
func (h *Handler) sessionSnapshot(ctx context.Context, rec Record, s *SessionRecord) (SnapshotRecord, *image.Snapshot, error) {
	if s.SnapshotID == "" {
		return SnapshotRecord{}, nil, errSessionStopped(s.ID)
	}
	sr, err := h.store.getSnapshot(ctx, rec.Team, s.SnapshotID)
	if err != nil {
		return SnapshotRecord{}, nil, err
	}
	snap, err := h.snaps.GetSnapshot(ctx, sr.ID)
	if err != nil {
		return SnapshotRecord{}, nil, err
	}
	return sr, snap, nil
}

// snapshotSession is POST .../snapshot: the session stops and its
// filesystem becomes a snapshot, which the sandbox then resumes from.
func (h *Handler) snapshotSession(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Expiration *int64 `json:"expiration"`
	}
	if _, err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Expiration != nil {
		return unsupportedOption("expiration: paddock's snapshots expire after the store's TTL from last use")
	}
	if h.snaps == nil {
		return errNoSnapshots
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	res, stepErr := h.stop(r.Context(), &rs.rec, rs.s, true, "manual")
	rec, err := h.record(r.Context(), rs.rec, res)
	if stepErr != nil {
		return stepErr
	}
	if err != nil {
		return err
	}
	s := rec.session(res.sid)
	if s == nil || res.last == nil {
		return errSessionStopped(res.sid) // it ended before it could be snapshotted
	}
	sr, snap, err := h.sessionSnapshot(r.Context(), rec, s)
	if err != nil {
		return err
	}
	return h.answerSession(w, r, rec, s, map[string]any{"snapshot": wireSnapshotOf(snap, sr, isV1(r))})
}
