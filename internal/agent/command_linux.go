//go:build linux

package agent

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

const (
	// drainTimeout bounds how long output is collected after the command's
	// main process exits: background grandchildren may hold the pipes open.
	drainTimeout = 250 * time.Millisecond
	// readChunk is the largest frame payload we produce (≤ MaxFrame).
	readChunk   = 32 << 10
	frameHeader = 5
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// command is one started (or failed) command and its output log.
type command struct {
	id    string
	done  chan struct{} // closed once the exit frame is stored
	exit  chan unix.WaitStatus
	store *logStore
	out   *cmdLog

	mu       sync.Mutex
	state    Command  // guarded by mu
	stdin    *os.File // guarded by mu: write end of stdin, nil if none or closed
	pty      *os.File // guarded by mu: the terminal's master side, nil if none or finished
	timedOut bool     // guarded by mu

	stdinMu sync.Mutex // serializes stdin writers

	// hidden: a warm-up, never listed nor reachable by id (see handleWarm).
	hidden bool
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "cmd-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:12]
}

// appendFrame stores one frame; buf has frameHeader spare bytes in front
// of the payload so the header and data go out in one write.
func (c *command) appendFrame(kind byte, buf []byte) {
	buf[0] = kind
	binary.BigEndian.PutUint32(buf[1:frameHeader], uint32(len(buf)-frameHeader))
	c.store.append(c.out, buf)
}

func (c *command) snapshot() Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	st.Args = slices.Clone(st.Args)
	if st.PTY != nil {
		size := *st.PTY
		st.PTY = &size
	}
	return st
}

// finish records the final state, stores the exit frame and wakes every
// follower and waiter.
func (c *command) finish(update func(*Command)) {
	c.mu.Lock()
	update(&c.state)
	c.state.FinishedAt = time.Now().UTC()
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
	}
	c.pty = nil // closed by supervise once drained
	final := c.state
	c.mu.Unlock()

	data, _ := json.Marshal(final)
	buf := make([]byte, frameHeader+len(data))
	buf[0] = FrameExit
	binary.BigEndian.PutUint32(buf[1:frameHeader], uint32(len(data)))
	copy(buf[frameHeader:], data)
	c.store.finish(c.out, buf)
	close(c.done)
}

func (s *Server) lookup(id string) (*command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cmds[id]
	if !ok {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "command_not_found", "command %q not found", id)
	}
	return c, nil
}

func invalidCommand(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_command", format, args...)
}

// validateRequest rejects malformed requests (400); a well-formed request
// that cannot start becomes a failed command instead.
func validateRequest(req *CommandRequest) error {
	if req.Cmd == "" && req.PTY == nil {
		return invalidCommand("cmd is empty")
	}
	if req.PTY != nil && !req.PTY.Valid() {
		return invalidCommand("pty size %dx%d is outside 1..%d", req.PTY.Rows, req.PTY.Cols, MaxPTYCells)
	}
	if len(req.Tag) > MaxTagBytes || strings.ContainsRune(req.Tag, 0) {
		return invalidCommand("tag is longer than %d bytes or contains NUL", MaxTagBytes)
	}
	if strings.ContainsRune(req.Cmd, 0) {
		return invalidCommand("cmd contains a NUL byte")
	}
	for _, a := range req.Args {
		if strings.ContainsRune(a, 0) {
			return invalidCommand("an argument contains a NUL byte")
		}
	}
	if req.Cwd != "" && (!filepath.IsAbs(req.Cwd) || strings.ContainsRune(req.Cwd, 0)) {
		return invalidCommand("cwd %q must be an absolute path", req.Cwd)
	}
	// The host checked already (node's Exec); the agent answers anyone on
	// its socket, so it checks again, the same way.
	if err := sandbox.ValidateEnv(req.Env); err != nil {
		return invalidCommand("%s", err)
	}
	if req.TimeoutMs < 0 {
		return invalidCommand("timeoutMs must not be negative")
	}
	return nil
}

// environ returns the command's environment, defaults overlaid by req.Env,
// sorted so it is deterministic.
func (s *Server) environ(req *CommandRequest) map[string]string {
	env := map[string]string{
		"HOME":  s.user.Home,
		"SHELL": "/bin/sh",
		"PATH":  defaultPath,
	}
	// A uid the image's passwd does not list has no name to give.
	if s.user.Name != "" {
		env["USER"], env["LOGNAME"] = s.user.Name, s.user.Name
	}
	if req.Sudo {
		env["HOME"], env["USER"], env["LOGNAME"] = "/root", "root", "root"
	}
	if fi, err := os.Stat("/bin/bash"); err == nil && !fi.IsDir() {
		env["SHELL"] = "/bin/bash"
	}
	if req.PTY != nil {
		env["TERM"] = "xterm-256color"
	}
	maps.Copy(env, req.Env)
	return env
}

// startError is why a well-formed command could not start.
type startError struct {
	code int // 127 not found, 126 not executable
	msg  string
}

// lookPath resolves name like a shell would for a process with the given
// credentials and environment. Root's check only needs any x bit.
func lookPath(name, cwd, pathEnv string, uid, gid uint32, groups []uint32) (string, *startError) {
	check := func(p string) *startError {
		fi, err := os.Stat(p)
		if err != nil {
			return &startError{127, fmt.Sprintf("%s: not found", name)}
		}
		if fi.IsDir() {
			return &startError{126, fmt.Sprintf("%s: is a directory", name)}
		}
		if !executableBy(fi, uid, gid, groups) {
			return &startError{126, fmt.Sprintf("%s: permission denied", name)}
		}
		return nil
	}
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		return p, check(p)
	}
	var first *startError
	for _, dir := range filepath.SplitList(pathEnv) {
		// Relative PATH entries are how "." attacks work; skip them as
		// exec.LookPath's ErrDot does.
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		serr := check(p)
		if serr == nil {
			return p, nil
		}
		if first == nil || (first.code == 127 && serr.code == 126) {
			first = serr
		}
	}
	if first == nil || first.code == 127 {
		return "", &startError{127, fmt.Sprintf("%s: command not found", name)}
	}
	return "", first
}

func executableBy(fi os.FileInfo, uid, gid uint32, groups []uint32) bool {
	mode := fi.Mode()
	if !mode.IsRegular() {
		return false
	}
	perm := uint32(mode.Perm())
	if uid == 0 {
		return perm&0o111 != 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return perm&0o111 != 0
	}
	switch {
	case st.Uid == uid:
		return perm&0o100 != 0
	case st.Gid == gid || slices.Contains(groups, st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	var req CommandRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, invalidCommand("decode command request: %v", err))
		return
	}
	if err := validateRequest(&req); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.start(req, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.URL.Query().Get("wait") == "true" {
		// Start and wait in one round trip; a client that leaves ends
		// only the wait, never the command.
		select {
		case <-c.done:
		case <-r.Context().Done():
			return
		}
	}
	writeJSON(w, http.StatusCreated, c.snapshot())
}

// warmTimeout bounds a warm-up: the agent binary exits before its main.
const warmTimeout = 10 * time.Second

// handleWarm runs the agent's own binary, which exits at once (WarmArg;
// ServerConfig.WarmArgs), as a command of the sandbox user, to completion, and answers 204. It
// exists for pooled sandboxes: the first command of a fresh agent costs
// about 3 ms more than the next (the fork, reap and output paths of a
// process that never ran them fault their code and data in, at ~30 µs a
// page fault on a VM), and a warm-up at refill time takes that off the
// claimer's first command. It runs no code of the image, is not listed
// and leaves no output.
func (s *Server) handleWarm(w http.ResponseWriter, r *http.Request) {
	c, err := s.start(CommandRequest{Cmd: s.cfg.WarmArgs[0], Args: s.cfg.WarmArgs[1:], Cwd: "/", TimeoutMs: warmTimeout.Milliseconds()}, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	select {
	case <-c.done:
	case <-r.Context().Done():
		return
	}
	if st := c.snapshot(); st.Status != StatusExited || st.ExitCode == nil || *st.ExitCode != 0 {
		code := -1
		if st.ExitCode != nil {
			code = *st.ExitCode
		}
		s.writeError(w, r, fmt.Errorf("warm-up %s: %s (exit code %d) %s", s.cfg.WarmArgs[0], st.Status, code, st.Error))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// start creates the command's log and forks it. A command that cannot
// start is still registered, as failed, with an exit frame. A hidden one
// is supervised and reaped as any other, but never listed nor found by id.
func (s *Server) start(req CommandRequest, hidden bool) (*command, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	uid, gid, home, groups := s.user.UID, s.user.GID, s.user.Home, s.user.Groups
	if req.Sudo {
		uid, gid, home, groups = 0, 0, "/root", nil
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = home
		// An image's passwd may name a home it lacks (nobody's
		// /nonexistent): start in / then, as Docker would.
		if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
			cwd = "/"
		}
	}
	env := s.environ(&req)
	if req.PTY != nil && req.Cmd == "" {
		// The user's shell as a login shell, as a terminal login starts it.
		req.Cmd, req.Args = env["SHELL"], []string{"-l"}
	}

	c := &command{
		id:     newID(),
		done:   make(chan struct{}),
		exit:   make(chan unix.WaitStatus, 1),
		store:  s.logs,
		hidden: hidden,
		state: Command{
			Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Sudo: req.Sudo, Tag: req.Tag,
			Status: StatusRunning, StartedAt: time.Now().UTC(),
		},
	}
	c.state.ID = c.id
	if req.PTY != nil {
		size := *req.PTY
		c.state.PTY = &size
	}
	c.out = s.logs.newLog(c.id)

	fail := func(serr *startError) (*command, error) {
		s.register(c, 0)
		code := serr.code
		c.finish(func(st *Command) {
			st.Status, st.ExitCode, st.Error = StatusFailed, &code, serr.msg
		})
		return c, nil
	}
	if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
		return fail(&startError{126, fmt.Sprintf("cwd %s: not an accessible directory", cwd)})
	}
	path, serr := lookPath(req.Cmd, cwd, env["PATH"], uid, gid, groups)
	if serr != nil {
		return fail(serr)
	}

	sio, err := s.openStdio(c, req, uid)
	if err != nil {
		return nil, err
	}
	envList := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envList = append(envList, k+"="+env[k])
	}
	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   envList,
		Files: sio.files(),
		Sys: &syscall.SysProcAttr{
			// A new session: the command's kill(0, ...) reaches only its
			// own group, never the agent.
			Setsid:     true,
			Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: append([]uint32{}, groups...)},
			// On a terminal, that session's controlling terminal is it
			// (fd 0 in the child), so ^C and SIGWINCH reach the command.
			Setctty: req.PTY != nil,
			Ctty:    0,
		},
	}
	oomBefore, oomOK := s.oomKills()

	// The lock spans fork and registration so the reaper, which looks
	// pids up under it, cannot reap a fast child before we know it.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sio.closeChild()
		sio.closeOurs(c)
		return nil, sandbox.Errorf(sandbox.ErrUnavailable, "agent_closing", "agent is shutting down")
	}
	pid, err := syscall.ForkExec(path, append([]string{req.Cmd}, req.Args...), attr)
	if err == nil {
		s.registerLocked(c, pid)
	}
	s.mu.Unlock()
	sio.closeChild()
	if err != nil {
		sio.closeOurs(c)
		code := 126
		if errors.Is(err, unix.ENOENT) {
			code = 127
		}
		return fail(&startError{code, fmt.Sprintf("%s: %v", req.Cmd, err)})
	}
	// The driver may protect the agent from the OOM killer; children must
	// not inherit that. Raising the score needs no privilege. An agent
	// whose own score is not below 0 has nothing to undo (most hosts: the
	// driver lowers it only with CAP_SYS_RESOURCE), so its commands skip
	// the write and the warning it logged whenever the command was
	// already gone or had become another user's.
	if s.oomAdj < 0 {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte("0"), 0); err != nil {
			s.log.Warn("reset oom_score_adj", "command", c.id, "pid", pid, "err", err)
		}
	}
	s.log.Info("command started", "command", c.id, "pid", pid, "cmd", req.Cmd, "sudo", req.Sudo, "pty", req.PTY != nil)

	s.wg.Add(1)
	go s.supervise(c, pid, time.Duration(req.TimeoutMs)*time.Millisecond, sio.outputs, oomBefore, oomOK)
	return c, nil
}

func (s *Server) register(c *command, pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.registerLocked(c, pid)
}

func (s *Server) registerLocked(c *command, pid int) {
	if !c.hidden {
		s.cmds[c.id] = c
		s.order = append(s.order, c.id)
	}
	if pid > 0 {
		c.state.PID = pid
		s.running[pid] = c
	}
}

// supervise owns one command from fork to exit frame.
func (s *Server) supervise(c *command, pid int, timeout time.Duration, outputs []output, oomBefore int64, oomOK bool) {
	defer s.wg.Done()
	var readers sync.WaitGroup
	for _, p := range outputs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.pump(p.f, p.kind)
		}()
	}
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	var ws unix.WaitStatus
wait:
	for {
		select {
		case ws = <-c.exit:
			break wait
		case <-timer:
			timer = nil
			c.mu.Lock()
			c.timedOut = true
			c.mu.Unlock()
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
	}
	if c.timedOut {
		killSession(pid)
	}

	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		// Grandchildren still hold the pipes: stop reading, keep what we have.
		for _, o := range outputs {
			o.f.SetReadDeadline(time.Now())
		}
		<-drained
	}
	for _, o := range outputs {
		o.f.Close()
	}

	oomAfter, oomAfterOK := s.oomKills()
	c.finish(func(st *Command) {
		switch {
		case ws.Exited():
			code := ws.ExitStatus()
			st.Status, st.ExitCode = StatusExited, &code
		case ws.Signaled():
			sig := ws.Signal()
			code := 128 + int(sig)
			st.Status, st.ExitCode, st.Signal = StatusKilled, &code, unix.SignalName(sig)
			if sig == unix.SIGKILL && oomOK && oomAfterOK && oomAfter > oomBefore {
				st.OOMKilled = true
			}
		}
		if c.timedOut {
			st.Status = StatusTimedOut
		}
	})
	st := c.snapshot()
	s.log.Info("command finished", "command", c.id, "status", st.Status, "exit_code", st.ExitCode, "oom_killed", st.OOMKilled)
}

// Bounds of killSession.
const (
	sessionKillEvery = 10 * time.Millisecond
	sessionKillQuiet = 10 // consecutive empty rounds that end it
	sessionKillFor   = 10 * time.Second
)

// killSession kills what is left of a timed-out command, whose process is
// the leader of session sid, until the session has stayed empty for
// sessionKillQuiet rounds (or sessionKillFor passes): each round kills its
// process group and every process of the session found in /proc. In
// gVisor's sentry a process forked while kill(-pgid) runs can escape it
// (Linux's kill and fork exclude each other), and in a fork bomb those
// survivors hold the sandbox at its pids limit; a clone still in flight
// shows up after an empty round, hence the quiet period. Under Linux the
// first round finds the session empty.
func killSession(sid int) {
	deadline := time.Now().Add(sessionKillFor)
	for quiet := 0; quiet < sessionKillQuiet && time.Now().Before(deadline); {
		found := unix.Kill(-sid, unix.SIGKILL) == nil
		for _, pid := range sessionMembers(sid) {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				found = true
			}
		}
		if found {
			quiet = 0
		} else {
			quiet++
		}
		time.Sleep(sessionKillEvery)
	}
}

// sessionMembers lists the live processes of session sid from /proc.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...
		_, rest, ok := strings.Cut(string(data), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 4 || f[0] == "Z" {
			continue
		}
		if s, err := strconv.Atoi(f[3]); err == nil && s == sid {
			out = append(out, pid)
		}
	}
	return out
}

// pumpBufs recycles pump buffers across commands: appendFrame copies the
// data out synchronously, and fresh memory is costly to fault in.
var pumpBufs = sync.Pool{New: func() any { return new([frameHeader + readChunk]byte) }}

// pump copies one pipe into the log as frames until EOF or a deadline.
func (c *command) pump(f *os.File, kind byte) {
	arr := pumpBufs.Get().(*[frameHeader + readChunk]byte)
	defer pumpBufs.Put(arr)
	buf := arr[:]
	for {
		n, err := f.Read(buf[frameHeader:])
		if n > 0 {
			c.appendFrame(kind, buf[:frameHeader+n])
		}
		if err != nil {
			return
		}
	}
}

// reap is the only caller of wait4. As PID 1 it collects every child so
// orphans never pile up as zombies; statuses of commands go to them.
func (s *Server) reap() {
	defer s.wg.Done()
	for {
		s.reapOnce()
		select {
		case <-s.sigchld:
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *Server) reapOnce() {
	if !s.cfg.ReapAll {
		s.mu.Lock()
		defer s.mu.Unlock()
		for pid, c := range s.running {
			var ws unix.WaitStatus
			if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
				delete(s.running, pid)
				c.exit <- ws
			}
		}
		return
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		s.mu.Lock()
		if c, ok := s.running[pid]; ok {
			delete(s.running, pid)
			c.exit <- ws
		}
		s.mu.Unlock()
	}
}

// oomKills reads the sandbox cgroup's OOM kill counter (see oomCounter).
// With a memory limit of the agent's own, its kills count too.
func (s *Server) oomKills() (int64, bool) {
	n, ok := s.oom.read()
	if s.guard != nil {
		return n + s.guard.kills.Load(), true
	}
	return n, ok
}

func (s *Server) handleList(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	cmds := make([]*command, 0, len(s.order))
	for _, id := range s.order {
		cmds = append(cmds, s.cmds[id])
	}
	s.mu.Unlock()
	out := make([]Command, 0, len(cmds))
	for _, c := range cmds {
		out = append(out, c.snapshot())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c.snapshot())
}

func (s *Server) handleWait(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	select {
	case <-c.done:
		writeJSON(w, http.StatusOK, c.snapshot())
	case <-r.Context().Done():
	}
}

func (s *Server) handleSignal(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var body struct {
		Signal int `json:"signal"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_signal", "decode signal request: %v", err))
		return
	}
	if body.Signal < 1 || body.Signal > 64 {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_signal", "signal %d out of range 1..64", body.Signal))
		return
	}
	// Checked under s.mu, which the reaper holds while it retires a pid: a
	// reaped pid may be reused, so never signal a group we no longer own.
	s.mu.Lock()
	pid := c.snapshotPIDLocked()
	if _, running := s.running[pid]; !running || pid == 0 {
		s.mu.Unlock()
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrConflict, "command_finished", "command %s is not running", c.id))
		return
	}
	err = unix.Kill(-pid, unix.Signal(body.Signal))
	s.mu.Unlock()
	if err != nil && !errors.Is(err, unix.ESRCH) {
		s.writeError(w, r, fmt.Errorf("signal command %s: %w", c.id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *command) snapshotPIDLocked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.PID
}

func (s *Server) handleStdin(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	closeAfter, _ := strconv.ParseBool(r.URL.Query().Get("close"))
	if closeAfter && c.snapshot().PTY != nil {
		// Closing the master would hang the terminal up; a shell reads
		// end of input from ^D instead.
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "pty_stdin_close", "a terminal's input is not closed: send ^D (0x04) for end of input"))
		return
	}
	c.stdinMu.Lock()
	defer c.stdinMu.Unlock()
	c.mu.Lock()
	f := c.stdin
	c.mu.Unlock()
	if f == nil {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrConflict, "stdin_closed", "command %s has no open stdin", c.id))
		return
	}
	// A command that never reads would block the copy forever: the
	// request's end unblocks it through a write deadline.
	_ = f.SetWriteDeadline(time.Time{})
	stop := context.AfterFunc(r.Context(), func() { _ = f.SetWriteDeadline(time.Now()) })
	_, err = io.Copy(f, r.Body)
	stop()
	if err != nil {
		if errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EPIPE) {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrConflict, "stdin_closed", "command %s closed its stdin", c.id))
			return
		}
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "stdin_failed", "copy to stdin of %s: %v", c.id, err))
		return
	}
	if closeAfter {
		c.mu.Lock()
		if c.stdin == f {
			c.stdin.Close()
			c.stdin = nil
		}
		c.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleOutput(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var off int64
	if v := q.Get("offset"); v == OffsetEnd {
		off = s.logs.outputEnd(c.out)
	} else if v != "" {
		if off, err = strconv.ParseInt(v, 10, 64); err != nil {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_offset", "offset %q is not a number", v))
			return
		}
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	ok, err := s.logs.validOffset(c.out, off)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_offset", "offset %d is not a frame boundary", off))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderOutputOffset, strconv.FormatInt(off, 10))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	// The header goes at once: a reader from the end (or of a command
	// yet to print) has its stream before any output.
	flush()
	for {
		st := s.logs.next(c.out, off)
		switch {
		case st.gapTo > 0:
			var gap [frameHeader + 8]byte
			gap[0] = FrameGap
			binary.BigEndian.PutUint32(gap[1:frameHeader], 8)
			binary.BigEndian.PutUint64(gap[frameHeader:], uint64(st.gapTo))
			if _, err := w.Write(gap[:]); err != nil {
				return
			}
			off = st.gapTo
		case st.seg != "":
			n, err := s.copySegment(w, st)
			off += n
			if err != nil {
				return // the client went away, or the segment is unreadable
			}
			flush()
		case st.exit != nil:
			_, _ = w.Write(st.exit)
			return
		case st.done || !follow:
			return
		default:
			select {
			case <-st.changed:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// copySegment sends the step's part of a segment. A segment dropped since
// next looked is simply not sent: the next step skips its bytes with a gap.
// Opened, it stays readable even if dropped meanwhile.
func (s *Server) copySegment(w io.Writer, st readStep) (int64, error) {
	f, err := os.Open(filepath.Join(s.logs.dir, st.seg))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		s.log.Warn("open command log", "segment", st.seg, "err", err)
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, io.NewSectionReader(f, st.from-st.segBase, st.to-st.from))
}
