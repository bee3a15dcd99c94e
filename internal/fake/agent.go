package fake

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
)

// Agent speaks the agent protocol (internal/agent/protocol.go) on a unix
// socket well enough for the host side's tests: ping, commands whose output
// and exit a Script (or the test) writes frame by frame, signals, stdin,
// tar writes, file and archive reads, mkdir and ports. It records every
// request that changes something, for the test to check.
type Agent struct {
	sock   string
	client *agent.Client
	script Script
	now    func() time.Time
	tail   []tar.Header

	mu      sync.Mutex // guards the fields below
	ping    string     // the ping answer (JSON)
	cmds    map[string]*command
	order   []string // command ids, oldest first
	seq     int
	started []agent.CommandRequest
	signals []int
	writes  []TarWrite
	mkdirs  []agent.MkdirRequest
	files   map[string]File   // absolute path → file
	dirs    map[string]bool   // directories made by mkdir
	links   map[string]string // symlink path → target
	listing []agent.Entry     // every listing's answer when set
	reads   []string          // "<url path> <path> sudo=<sudo>" of each file or archive read
	changed chan struct{}     // closed and replaced on every change
	refused map[string]bool   // route patterns that answer 500
	warmed  int               // warm-ups asked for (POST /v1/warm)
}

// AgentConfig sets up an Agent.
type AgentConfig struct {
	// Script decides what each started command does; nil: Echo.
	Script Script
	// Now stamps commands' start and end; nil: time.Now.
	Now func() time.Time
	// ArchiveTail are entries (without content) every archive read ends
	// with: hostile ones, for tests of what a reader drops.
	ArchiveTail []tar.Header
}

// File is a file the Agent holds.
type File struct {
	Data []byte
	Mode uint32
}

// TarWrite is one tar upload the Agent took.
type TarWrite struct {
	Dir     string
	Sudo    bool
	Entries map[string]string // name → content ("" for directories)
	Modes   map[string]int64
}

type command struct {
	cmd      agent.Command
	log      []byte // encoded frames
	stdin    bytes.Buffer
	closed   bool               // stdin closed
	onSignal func(sig int) bool // false: the command ignores sig
	onEnd    func()             // runs once when it ends
}

// Script is what a command does when it starts: it may write output and
// exit at once, or leave the command running until a signal, the test
// (Agent.Finish) or its own goroutine ends it.
type Script func(c *Cmd)

// Cmd is a started command as its Script sees it.
type Cmd struct {
	a    *Agent
	ID   string
	Req  agent.CommandRequest
	Wait bool // the client waits for the end (agent.Client.Run)
}

// Emit appends an output frame.
func (c *Cmd) Emit(kind byte, data []byte) { c.a.Emit(c.ID, kind, data) }

// Exit ends the command with code.
func (c *Cmd) Exit(code int) { c.a.Finish(c.ID, agent.StatusExited, code, "") }

// OnSignal sets what a signal does before the command is killed by it:
// f returns false to ignore the signal.
func (c *Cmd) OnSignal(f func(sig int) bool) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	c.a.cmds[c.ID].onSignal = f
}

// OnEnd sets what runs once when the command ends, however it ends.
func (c *Cmd) OnEnd(f func()) {
	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	c.a.cmds[c.ID].onEnd = f
}

// Echo is the default Script: "echo" prints its args and exits 0, "fail"
// prints "boom" to stderr and exits 3, anything else runs until it is
// signalled or the test finishes it.
func Echo(c *Cmd) {
	switch c.Req.Cmd {
	case "echo":
		c.Emit(agent.FrameStdout, []byte(strings.Join(c.Req.Args, " ")+"\n"))
		c.Exit(0)
	case "fail":
		c.Emit(agent.FrameStderr, []byte("boom\n"))
		c.Exit(3)
	}
}

// StartAgent serves a new Agent on a unix socket until the test ends.
func StartAgent(t testing.TB, cfg AgentConfig) *Agent {
	t.Helper()
	// Socket paths are limited to ~108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "pfake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &Agent{sock: filepath.Join(dir, "agent.sock"), script: cfg.Script, now: cfg.Now, tail: cfg.ArchiveTail,
		cmds: map[string]*command{}, files: map[string]File{}, dirs: map[string]bool{}, links: map[string]string{}, changed: make(chan struct{})}
	if a.script == nil {
		a.script = Echo
	}
	if a.now == nil {
		a.now = time.Now
	}
	ln, err := net.Listen("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			refused := a.refused[pattern]
			a.mu.Unlock()
			if refused {
				agentError(w, http.StatusInternalServerError, "internal", "refused by the test")
				return
			}
			h(w, r)
		})
	}
	handle("GET /v1/ping", a.servePing)
	handle("POST /v1/commands", a.start)
	handle("POST /v1/warm", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		a.warmed++
		a.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	handle("GET /v1/commands", a.list)
	handle("GET /v1/commands/{id}", a.get)
	handle("GET /v1/commands/{id}/wait", a.wait)
	handle("GET /v1/commands/{id}/output", a.output)
	handle("POST /v1/commands/{id}/signal", a.signal)
	handle("POST /v1/commands/{id}/stdin", a.stdin)
	handle("POST /v1/commands/{id}/resize", a.resize)
	handle("GET /v1/watch", a.watch)
	handle("PUT /v1/files", a.writeTar)
	handle("GET /v1/files", a.readFile)
	handle("GET /v1/archive", a.readArchive)
	handle("POST /v1/mkdir", a.mkdir)
	handle("GET /v1/list", a.listDir)
	handle("GET /v1/ports", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, []agent.ListeningPort{{Port: 3000, Address: "0.0.0.0"}})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln) //nolint:errcheck // owned: ends with Close in the cleanup
	a.client = agent.UnixClient(a.sock)
	t.Cleanup(func() {
		a.client.Close()
		hs.Close()
		a.endAll()
	})
	return a
}

// Warmed is how many warm-ups (agent.Client.Warm) the Agent was asked for.
func (a *Agent) Warmed() int { a.mu.Lock(); defer a.mu.Unlock(); return a.warmed }

// Socket is the path of the agent's unix socket.
func (a *Agent) Socket() string { return a.sock }

// Client is a client of the agent, closed when the test ends.
func (a *Agent) Client() *agent.Client { return a.client }

// Refuse makes a route (a pattern as the agent's mux has it: "GET
// /v1/commands", "GET /v1/commands/{id}/output") answer 500 from now on.
func (a *Agent) Refuse(pattern string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused == nil {
		a.refused = map[string]bool{}
	}
	a.refused[pattern] = true
}

// SetPing sets the ping answer (JSON); "" answers a plain agent.
func (a *Agent) SetPing(body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ping = body
}

func (a *Agent) servePing(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	body := a.ping
	a.mu.Unlock()
	if body == "" {
		body = `{"version":"fake","pid":1}`
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, body) //nolint:errcheck
}

// AddCommand puts a command in place as it is, as one an earlier paddock
// started (it is listed, its output is empty).
func (a *Agent) AddCommand(cmd agent.Command) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cmds[cmd.ID] = &command{cmd: cmd}
	a.order = append(a.order, cmd.ID)
	a.notifyLocked()
}

// Emit appends an output frame to a command's log.
func (a *Agent) Emit(id string, kind byte, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.cmds[id]
	c.log = append(c.log, frame(kind, data)...)
	a.notifyLocked()
}

// Finish ends a command and appends its exit frame; a command that ended
// already stays as it ended.
func (a *Agent) Finish(id, status string, code int, signal string) {
	a.mu.Lock()
	end := a.finishLocked(id, status, code, signal)
	a.mu.Unlock()
	if end != nil {
		end()
	}
}

// finishLocked ends a command and returns its OnEnd, for the caller to run
// once it let go of mu.
func (a *Agent) finishLocked(id, status string, code int, signal string) func() {
	c := a.cmds[id]
	if c.cmd.Done() {
		return nil
	}
	c.cmd.Status, c.cmd.ExitCode, c.cmd.Signal = status, &code, signal
	c.cmd.FinishedAt = a.now()
	data, _ := json.Marshal(c.cmd)
	c.log = append(c.log, frame(agent.FrameExit, data)...)
	a.notifyLocked()
	end := c.onEnd
	c.onEnd = nil
	return end
}

// KillAll ends every running command with SIGKILL, as stopping the
// sandbox does.
func (a *Agent) KillAll() {
	a.mu.Lock()
	var ends []func()
	for _, id := range a.order {
		if end := a.finishLocked(id, agent.StatusKilled, 137, "SIGKILL"); end != nil {
			ends = append(ends, end)
		}
	}
	a.mu.Unlock()
	for _, end := range ends {
		end()
	}
}

// endAll runs the OnEnd of every command still running, when the test
// ends, so that what scripts started stops.
func (a *Agent) endAll() {
	a.mu.Lock()
	var ends []func()
	for _, c := range a.cmds {
		if c.onEnd != nil {
			ends = append(ends, c.onEnd)
			c.onEnd = nil
		}
	}
	a.mu.Unlock()
	for _, end := range ends {
		end()
	}
}

// Command returns a command as the agent knows it, with what was written
// to its stdin and whether stdin was closed.
func (a *Agent) Command(id string) (cmd agent.Command, stdin string, closed, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cmds[id]
	if !ok {
		return agent.Command{}, "", false, false
	}
	return c.cmd, c.stdin.String(), c.closed, true
}

// Output is what a command wrote to stdout and stderr so far, as written.
func (a *Agent) Output(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cmds[id]
	if !ok {
		return ""
	}
	var out []byte
	for b := c.log; len(b) >= 5; {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if b[0] == agent.FrameStdout || b[0] == agent.FrameStderr {
			out = append(out, b[5:5+n]...)
		}
		b = b[5+n:]
	}
	return string(out)
}

// Commands returns every command, oldest first.
func (a *Agent) Commands() []agent.Command {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]agent.Command, 0, len(a.order))
	for _, id := range a.order {
		out = append(out, a.cmds[id].cmd)
	}
	return out
}

// cloneLocked returns a copy of *s, read under mu.
func cloneLocked[T any](mu *sync.Mutex, s *[]T) []T {
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(*s)
}

// Started returns the requests of every command started, in order.
func (a *Agent) Started() []agent.CommandRequest { return cloneLocked(&a.mu, &a.started) }

// Signals returns every signal sent, in order.
func (a *Agent) Signals() []int { return cloneLocked(&a.mu, &a.signals) }

// Writes returns every tar upload, in order.
func (a *Agent) Writes() []TarWrite { return cloneLocked(&a.mu, &a.writes) }

// Mkdirs returns every mkdir request, in order.
func (a *Agent) Mkdirs() []agent.MkdirRequest { return cloneLocked(&a.mu, &a.mkdirs) }

// Reads returns "<url path> <path> sudo=<sudo>" of every file and archive
// read, in order.
func (a *Agent) Reads() []string { return cloneLocked(&a.mu, &a.reads) }

// Mutations counts the requests that changed something: commands started,
// signals, uploads and mkdirs.
func (a *Agent) Mutations() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.started) + len(a.signals) + len(a.writes) + len(a.mkdirs)
}

// PutFile puts a file in place at p (absolute).
func (a *Agent) PutFile(p string, data []byte, mode uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.files[p] = File{Data: data, Mode: mode}
}

// PutSymlink puts a symlink at p (absolute) pointing at target; a listing
// shows it, nothing follows it.
func (a *Agent) PutSymlink(p, target string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.links[p] = target
}

// SetListing makes every directory listing answer entries, whatever was
// asked (a hostile agent's answer); nil goes back to listing what the
// Agent holds.
func (a *Agent) SetListing(entries []agent.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.listing = entries
}

// ReadFile returns the file at p.
func (a *Agent) ReadFile(p string) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, ok := a.files[p]
	return f.Data, ok
}

func agentError(w http.ResponseWriter, status int, code, msg string) {
	var body agent.ErrorBody
	body.Error.Code, body.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body) //nolint:errcheck
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v) //nolint:errcheck
}

// notifyLocked wakes every waiter; the caller holds mu.
func (a *Agent) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

func frame(kind byte, data []byte) []byte {
	b := make([]byte, 5, 5+len(data))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:], uint32(len(data)))
	return append(b, data...)
}

// start runs the Script of a new command and answers with the command as
// it started (with wait, as it ended), as the agent does.
func (a *Agent) start(w http.ResponseWriter, r *http.Request) {
	var req agent.CommandRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		agentError(w, 400, "invalid_json", err.Error())
		return
	}
	wait := r.URL.Query().Get("wait") == "true"
	a.mu.Lock()
	a.started = append(a.started, req)
	a.seq++
	id := "cmd-" + strconv.Itoa(a.seq)
	cwd := req.Cwd
	if cwd == "" {
		cwd = agent.UserHome
	}
	c := &command{cmd: agent.Command{ID: id, Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Sudo: req.Sudo, PID: 42,
		PTY: req.PTY, Tag: req.Tag, Status: agent.StatusRunning, StartedAt: a.now()}}
	a.cmds[id] = c
	a.order = append(a.order, id)
	started := c.cmd
	a.mu.Unlock()
	a.script(&Cmd{a: a, ID: id, Req: req, Wait: wait})
	if !wait {
		// As the agent answers: the command as it was when it started,
		// whatever its script did since.
		reply(w, started)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for !c.cmd.Done() {
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			a.mu.Lock()
			return
		}
		a.mu.Lock()
	}
	reply(w, c.cmd)
}

func (a *Agent) lookup(w http.ResponseWriter, r *http.Request) (*command, bool) {
	c, ok := a.cmds[r.PathValue("id")]
	if !ok {
		agentError(w, 404, "not_found", "no such command")
	}
	return c, ok
}

func (a *Agent) list(w http.ResponseWriter, _ *http.Request) {
	reply(w, a.Commands())
}

func (a *Agent) get(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.lookup(w, r); ok {
		reply(w, c.cmd)
	}
}

func (a *Agent) wait(w http.ResponseWriter, r *http.Request) {
	for {
		a.mu.Lock()
		c, ok := a.lookup(w, r)
		if !ok {
			a.mu.Unlock()
			return
		}
		if c.cmd.Done() {
			reply(w, c.cmd)
			a.mu.Unlock()
			return
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
	}
}

// output serves the log from offset; with follow it waits for new frames
// until the exit frame is sent.
func (a *Agent) output(w http.ResponseWriter, r *http.Request) {
	off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	if r.URL.Query().Get("offset") == agent.OffsetEnd {
		a.mu.Lock()
		if c, ok := a.cmds[r.PathValue("id")]; ok {
			off = len(c.log)
		}
		a.mu.Unlock()
	}
	follow := r.URL.Query().Get("follow") == "true"
	first := true
	for {
		a.mu.Lock()
		c, ok := a.lookup(w, r)
		if !ok {
			a.mu.Unlock()
			return
		}
		chunk := slices.Clone(c.log[min(off, len(c.log)):])
		done := c.cmd.Done()
		ch := a.changed
		a.mu.Unlock()
		if first {
			w.Header().Set(agent.HeaderOutputOffset, strconv.Itoa(off))
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(200)
			first = false
		}
		w.Write(chunk) //nolint:errcheck
		w.(http.Flusher).Flush()
		off += len(chunk)
		if done || !follow {
			return
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
	}
}

var signalNames = map[int]string{9: "SIGKILL", 15: "SIGTERM", 2: "SIGINT"}

func (a *Agent) signal(w http.ResponseWriter, r *http.Request) {
	var req struct{ Signal int }
	json.NewDecoder(r.Body).Decode(&req) //nolint:errcheck
	a.mu.Lock()
	c, ok := a.lookup(w, r)
	if !ok {
		a.mu.Unlock()
		return
	}
	a.signals = append(a.signals, req.Signal)
	var end func()
	if c.onSignal == nil || c.onSignal(req.Signal) {
		end = a.finishLocked(c.cmd.ID, agent.StatusKilled, 128+req.Signal, signalNames[req.Signal])
	}
	a.mu.Unlock()
	if end != nil {
		end()
	}
	w.WriteHeader(204)
}

func (a *Agent) stdin(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		agentError(w, 400, "bad_body", err.Error())
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.lookup(w, r)
	if !ok {
		return
	}
	c.stdin.Write(data)
	c.closed = r.URL.Query().Get("close") == "true"
	if c.cmd.PTY != nil {
		// A terminal echoes what is typed.
		c.log = append(c.log, frame(agent.FrameStdout, data)...)
		a.notifyLocked()
	}
	w.WriteHeader(204)
}

func (a *Agent) resize(w http.ResponseWriter, r *http.Request) {
	var size agent.PTYSize
	if err := json.NewDecoder(r.Body).Decode(&size); err != nil {
		agentError(w, 400, "invalid_json", err.Error())
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.lookup(w, r)
	if !ok {
		return
	}
	if c.cmd.PTY == nil {
		agentError(w, 400, "not_a_pty", "no terminal")
		return
	}
	*c.cmd.PTY = size
	w.WriteHeader(204)
}

// watch answers a watch of /w with a few events, then holds the stream
// open until the client leaves; any other path is not found. Reads records
// it as "WATCH <path> recursive=<r> sudo=<s>".
func (a *Agent) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	a.reads = append(a.reads, "WATCH "+q.Get("path")+" recursive="+q.Get("recursive")+" sudo="+q.Get("sudo"))
	a.mu.Unlock()
	if q.Get("path") != "/w" {
		agentError(w, 404, "file_not_found", "not found")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	enc := json.NewEncoder(w)
	for _, ev := range []agent.WatchEvent{{Type: agent.WatchCreate, Name: "a/b.txt"}, {Type: agent.WatchOverflow}, {Type: agent.WatchRemove, Dir: true}} {
		if err := enc.Encode(ev); err != nil {
			return
		}
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// writeTar takes a tar (or gzipped tar) upload: it records the entries and
// keeps the regular files, as the agent writes them, below dir.
func (a *Agent) writeTar(w http.ResponseWriter, r *http.Request) {
	br := bufio.NewReader(r.Body)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			agentError(w, 400, "invalid_tar", err.Error())
			return
		}
		src = zr
	}
	tw := TarWrite{Dir: r.URL.Query().Get("dir"), Sudo: r.URL.Query().Get("sudo") == "true",
		Entries: map[string]string{}, Modes: map[string]int64{}}
	files := map[string]File{}
	var res agent.WriteResult
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			agentError(w, 400, "invalid_tar", err.Error())
			return
		}
		if name := strings.TrimSuffix(h.Name, "/"); !filepath.IsLocal(name) {
			agentError(w, 400, "invalid_path", "entry "+strconv.Quote(h.Name)+" leaves the directory")
			return
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			agentError(w, 400, "invalid_tar", err.Error())
			return
		}
		tw.Entries[h.Name], tw.Modes[h.Name] = string(data), h.Mode
		if h.Typeflag == tar.TypeReg {
			res.Files++
			res.Bytes += int64(len(data))
			files[path.Join(tw.Dir, h.Name)] = File{Data: data, Mode: uint32(h.Mode)}
		}
	}
	a.mu.Lock()
	a.writes = append(a.writes, tw)
	maps.Copy(a.files, files)
	a.mu.Unlock()
	reply(w, res)
}

func (a *Agent) readFile(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.reads = append(a.reads, r.URL.Path+" "+r.URL.Query().Get("path")+" sudo="+r.URL.Query().Get("sudo"))
	f, ok := a.files[r.URL.Query().Get("path")]
	a.mu.Unlock()
	if !ok {
		agentError(w, 404, "not_found", "no such file")
		return
	}
	w.Header().Set(agent.HeaderFileMode, strconv.FormatUint(uint64(f.Mode), 8))
	w.Header().Set("Content-Length", strconv.Itoa(len(f.Data)))
	w.Write(f.Data) //nolint:errcheck
}

// readArchive serves the files at or below path as a tar, named as the
// agent names them, then the ArchiveTail; a directory made by mkdir is
// found though empty. Below "/cut" it sends one entry, then breaks the
// connection as an agent that fails mid-stream does.
func (a *Agent) readArchive(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	a.mu.Lock()
	a.reads = append(a.reads, r.URL.Path+" "+p+" sudo="+r.URL.Query().Get("sudo"))
	names := map[string]File{}
	dir := strings.TrimSuffix(p, "/") + "/"
	for name, f := range a.files {
		switch {
		case name == p:
			names[filepath.Base(name)] = f
		case strings.HasPrefix(name, dir):
			names[strings.TrimPrefix(name, dir)] = f
		}
	}
	found := len(names) > 0 || a.dirs[p]
	a.mu.Unlock()
	if !found {
		agentError(w, 404, "file_not_found", "no such file")
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	tw := tar.NewWriter(w)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		f := names[name]
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(f.Mode), Size: int64(len(f.Data))}) //nolint:errcheck
		tw.Write(f.Data)                                                                                              //nolint:errcheck
		if strings.HasPrefix(p, "/cut") {
			tw.Flush() //nolint:errcheck
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	}
	for _, h := range a.tail {
		tw.WriteHeader(&h) //nolint:errcheck
	}
	tw.Close() //nolint:errcheck
}

func (a *Agent) mkdir(w http.ResponseWriter, r *http.Request) {
	var req agent.MkdirRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		agentError(w, 400, "invalid_json", err.Error())
		return
	}
	a.mu.Lock()
	a.mkdirs = append(a.mkdirs, req)
	a.dirs[req.Path] = true
	a.mu.Unlock()
	w.WriteHeader(204)
}

// listDir lists what the Agent holds below ?path= to ?depth= levels:
// files, directories made by mkdir or implied by a file's path, and
// symlinks, sorted by path, as the agent answers GET /v1/list.
func (a *Agent) listDir(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dir := path.Clean("/" + q.Get("path"))
	depth, err := strconv.Atoi(q.Get("depth"))
	if err != nil || depth < 1 {
		agentError(w, 400, "invalid_depth", "bad depth")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reads = append(a.reads, r.URL.Path+" "+q.Get("path")+" sudo="+q.Get("sudo"))
	if a.listing != nil {
		reply(w, a.listing)
		return
	}
	if _, ok := a.files[dir]; ok {
		agentError(w, 400, "not_a_directory", dir+" is not a directory")
		return
	}
	entries := map[string]agent.Entry{}
	known := a.dirs[dir] || dir == "/"
	add := func(p string, e agent.Entry) {
		rel := strings.TrimPrefix(p, dir)
		if dir != "/" {
			if !strings.HasPrefix(p, dir+"/") {
				return
			}
		} else if p == "/" {
			return
		}
		known = true
		if strings.Count(strings.Trim(rel, "/"), "/")+1 > depth {
			return
		}
		e.Name, e.Path = path.Base(p), p
		if _, ok := entries[p]; !ok || e.Type != agent.EntryDir {
			entries[p] = e
		}
	}
	mtime := a.now().UTC()
	dirEntry := agent.Entry{Type: agent.EntryDir, Mode: 0o755, Permissions: "drwxr-xr-x", Owner: "user", Group: "user", ModTime: mtime}
	for p, f := range a.files {
		add(p, agent.Entry{Type: agent.EntryFile, Size: int64(len(f.Data)), Mode: f.Mode,
			Permissions: fs.FileMode(f.Mode).String(), Owner: "user", Group: "user", ModTime: mtime})
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			add(d, dirEntry)
		}
	}
	for d := range a.dirs {
		add(d, dirEntry)
	}
	for p, target := range a.links {
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		add(p, agent.Entry{Type: agent.EntrySymlink, Mode: 0o777, Permissions: "Lrwxrwxrwx", Owner: "user", Group: "user",
			ModTime: mtime, SymlinkTarget: path.Clean(target)})
	}
	if !known {
		agentError(w, 404, "file_not_found", dir+": not found")
		return
	}
	out := make([]agent.Entry, 0, len(entries))
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		out = append(out, entries[p])
	}
	reply(w, out)
}
