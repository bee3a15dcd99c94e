package server_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeSandboxes is a hand-written server.Sandboxes that keeps sandboxes in
// a map, validates like node does, and records every mutation.
type fakeSandboxes struct {
	maxResources sandbox.Resources
	maxTimeout   time.Duration
	agent        *agent.Client

	mu        sync.Mutex // guards the fields below
	sbs       map[string]sandbox.Sandbox
	seq       int
	mutations []string
	stopped   []string
	execs     []sandbox.ExecRequest // every Exec that reached the agent, in order
}

func newFakeSandboxes(ac *agent.Client) *fakeSandboxes {
	return &fakeSandboxes{
		maxResources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192, PIDs: 4096},
		maxTimeout:   time.Hour,
		agent:        ac,
		sbs:          map[string]sandbox.Sandbox{},
	}
}

// add puts a sandbox in place without counting it as a mutation.
func (f *fakeSandboxes) add(sb sandbox.Sandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sbs[sb.ID] = sb
}

func (f *fakeSandboxes) mutationLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.mutations)
}

func (f *fakeSandboxes) Create(_ context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	res := req.Resources
	if res.VCPUs == 0 {
		res.VCPUs = 1
	}
	if res.MemoryMB == 0 {
		res.MemoryMB = 512
	}
	if res.PIDs == 0 {
		res.PIDs = 256
	}
	if err := res.Validate(f.maxResources); err != nil {
		return sandbox.Sandbox{}, err
	}
	if req.Timeout > f.maxTimeout {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeout past %s", f.maxTimeout)
	}
	if req.Image != "" && req.Image != "host" {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "no image %q", req.Image)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sb := sandbox.Sandbox{
		ID: fmt.Sprintf("sb-%03d", f.seq), State: sandbox.Running, Image: "host", Resources: res, Env: req.Env, TeamID: req.TeamID,
		CreatedAt: now, StartedAt: now, ExpiresAt: now.Add(5 * time.Minute),
	}
	f.sbs[sb.ID] = sb
	f.mutations = append(f.mutations, "create "+sb.ID)
	return sb, nil
}

func (f *fakeSandboxes) Get(_ context.Context, id string) (sandbox.Sandbox, error) {
	if id == "panic" {
		panic("fake panic")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sandbox.Sandbox{}, fmt.Errorf("get %s: %w", id, sandbox.ErrNotFound)
	}
	return sb, nil
}

func (f *fakeSandboxes) List(_ context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.sbs))
	for id, sb := range f.sbs {
		if id > opts.Cursor && (opts.State == "" || sb.State == opts.State) && (opts.TeamID == "" || sb.TeamID == opts.TeamID) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	limit := opts.Limit
	if limit == 0 {
		limit = 100
	}
	next := ""
	if len(ids) > limit {
		ids, next = ids[:limit], ids[limit-1]
	}
	out := make([]sandbox.Sandbox, 0, len(ids))
	for _, id := range ids {
		out = append(out, f.sbs[id])
	}
	return out, next, nil
}

func (f *fakeSandboxes) Stop(_ context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	sb.State = sandbox.Stopped
	sb.StoppedAt = sb.CreatedAt.Add(time.Minute)
	f.sbs[id] = sb
	f.mutations = append(f.mutations, "stop "+id)
	return sb, nil
}

func (f *fakeSandboxes) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sbs[id]; !ok {
		return sandbox.ErrNotFound
	}
	delete(f.sbs, id)
	f.mutations = append(f.mutations, "delete "+id)
	return nil
}

func (f *fakeSandboxes) ExtendTimeout(_ context.Context, id string, by time.Duration) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	if sb.ExpiresAt.Add(by).Sub(sb.CreatedAt) > f.maxTimeout {
		return sb, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "past the maximum of %s", f.maxTimeout)
	}
	sb.ExpiresAt = sb.ExpiresAt.Add(by)
	f.sbs[id] = sb
	f.mutations = append(f.mutations, "extend "+id)
	return sb, nil
}

func (f *fakeSandboxes) Agent(_ context.Context, id string) (*agent.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	switch {
	case !ok:
		return nil, sandbox.ErrNotFound
	case sb.State != sandbox.Running:
		return nil, sandbox.ErrNotRunning
	}
	return f.agent, nil
}

// Exec checks the request as node does and starts it on the fake agent as
// it came: merging env and defaults is node's, tested there.
func (f *fakeSandboxes) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error) {
	if err := req.Validate(); err != nil {
		return agent.Command{}, err
	}
	ac, err := f.Agent(ctx, id)
	if err != nil {
		return agent.Command{}, err
	}
	f.mu.Lock()
	f.execs = append(f.execs, req)
	f.mu.Unlock()
	areq := agent.CommandRequest{Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd, Env: req.Env, Sudo: req.Sudo,
		TimeoutMs: req.TimeoutMs, Stdin: req.Stdin}
	if req.Wait {
		return ac.Run(ctx, areq)
	}
	return ac.Start(ctx, areq)
}

// lastExec is the last request Exec started.
func (f *fakeSandboxes) lastExec() sandbox.ExecRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.execs) == 0 {
		return sandbox.ExecRequest{}
	}
	return f.execs[len(f.execs)-1]
}

func (f *fakeSandboxes) Stats(_ context.Context, id string) (runtime.Stats, error) {
	if _, err := f.Get(context.Background(), id); err != nil {
		return runtime.Stats{}, err
	}
	return runtime.Stats{CPUUsage: 1500 * time.Millisecond, MemoryBytes: 1 << 20, PIDs: 3, CPUQuotaFrac: 1}, nil
}

func (f *fakeSandboxes) AddPorts(_ context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	sb.Ports = append(slices.Clone(sb.Ports), ports...)
	f.sbs[id] = sb
	f.mutations = append(f.mutations, "ports "+id)
	return sb, nil
}

func (f *fakeSandboxes) UpdateNetworkPolicy(_ context.Context, id string, policy sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	sb.NetworkPolicy = &policy
	f.sbs[id] = sb
	f.mutations = append(f.mutations, "policy "+id)
	return sb, nil
}

// fakeAgent speaks the agent protocol (internal/agent/protocol.go) well
// enough to test the server's passthrough: commands whose output the test
// scripts frame by frame, signals, stdin, tar writes and file reads.
type fakeAgent struct {
	mu      sync.Mutex // guards the fields below
	cmds    map[string]*fakeCmd
	order   []string
	started []agent.CommandRequest
	signals []int
	writes  []tarWrite
	mkdirs  []agent.MkdirRequest
	files   map[string]fakeFile
	reads   []string      // "GET <path> <path> sudo=<sudo>" of each read and archive
	changed chan struct{} // closed and replaced on every change
}

type fakeCmd struct {
	cmd    agent.Command
	log    []byte // encoded frames
	stdin  bytes.Buffer
	closed bool
}

type tarWrite struct {
	Dir     string
	Sudo    bool
	Entries map[string]string // name -> content ("" for directories)
	Modes   map[string]int64
}

type fakeFile struct {
	data []byte
	mode uint32
}

func startFakeAgent(t *testing.T) (*fakeAgent, *agent.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{cmds: map[string]*fakeCmd{}, files: map[string]fakeFile{}, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/commands", fa.start)
	mux.HandleFunc("GET /v1/commands", fa.list)
	mux.HandleFunc("GET /v1/commands/{id}", fa.get)
	mux.HandleFunc("GET /v1/commands/{id}/wait", fa.wait)
	mux.HandleFunc("GET /v1/commands/{id}/output", fa.output)
	mux.HandleFunc("POST /v1/commands/{id}/signal", fa.signal)
	mux.HandleFunc("POST /v1/commands/{id}/stdin", fa.stdin)
	mux.HandleFunc("PUT /v1/files", fa.writeTar)
	mux.HandleFunc("GET /v1/files", fa.readFile)
	mux.HandleFunc("GET /v1/archive", fa.readArchive)
	mux.HandleFunc("POST /v1/mkdir", fa.mkdir)
	mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, []agent.ListeningPort{{Port: 3000, Address: "0.0.0.0"}})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln) //nolint:errcheck // ends with Close in cleanup
	ac := agent.UnixClient(sock)
	t.Cleanup(func() {
		ac.Close()
		hs.Close()
	})
	return fa, ac
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
func (fa *fakeAgent) notifyLocked() {
	close(fa.changed)
	fa.changed = make(chan struct{})
}

func frame(kind byte, data []byte) []byte {
	b := make([]byte, 5, 5+len(data))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:], uint32(len(data)))
	return append(b, data...)
}

// emit appends an output frame to a command's log.
func (fa *fakeAgent) emit(id string, kind byte, data []byte) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	c := fa.cmds[id]
	c.log = append(c.log, frame(kind, data)...)
	fa.notifyLocked()
}

// finish ends a command and appends its exit frame.
func (fa *fakeAgent) finish(id, status string, code int, signal string) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	fa.finishLocked(id, status, code, signal)
}

func (fa *fakeAgent) finishLocked(id, status string, code int, signal string) {
	c := fa.cmds[id]
	if c.cmd.Done() {
		return
	}
	c.cmd.Status, c.cmd.ExitCode, c.cmd.Signal = status, &code, signal
	c.cmd.FinishedAt = c.cmd.StartedAt.Add(time.Second)
	data, _ := json.Marshal(c.cmd)
	c.log = append(c.log, frame(agent.FrameExit, data)...)
	fa.notifyLocked()
}

func (fa *fakeAgent) mutationCount() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return len(fa.started) + len(fa.signals) + len(fa.writes) + len(fa.mkdirs)
}

// start runs a scripted command: "echo" prints its args and exits 0, "fail"
// exits 3, anything else runs until signalled or finished by the test.
func (fa *fakeAgent) start(w http.ResponseWriter, r *http.Request) {
	var req agent.CommandRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		agentError(w, 400, "invalid_json", err.Error())
		return
	}
	fa.mu.Lock()
	fa.started = append(fa.started, req)
	id := "cmd-" + strconv.Itoa(len(fa.started))
	cwd := req.Cwd
	if cwd == "" {
		cwd = agent.UserHome
	}
	c := &fakeCmd{cmd: agent.Command{ID: id, Cmd: req.Cmd, Args: req.Args, Cwd: cwd, Sudo: req.Sudo, PID: 42,
		Status: agent.StatusRunning, StartedAt: time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)}}
	fa.cmds[id] = c
	fa.order = append(fa.order, id)
	switch req.Cmd {
	case "echo":
		out := ""
		for i, a := range req.Args {
			if i > 0 {
				out += " "
			}
			out += a
		}
		c.log = append(c.log, frame(agent.FrameStdout, []byte(out+"\n"))...)
		fa.finishLocked(id, agent.StatusExited, 0, "")
	case "fail":
		c.log = append(c.log, frame(agent.FrameStderr, []byte("boom\n"))...)
		fa.finishLocked(id, agent.StatusExited, 3, "")
	}
	if r.URL.Query().Get("wait") != "true" {
		reply(w, c.cmd)
		fa.mu.Unlock()
		return
	}
	// Run: answer once the command finished, as the agent does.
	for !c.cmd.Done() {
		ch := fa.changed
		fa.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
		fa.mu.Lock()
	}
	reply(w, c.cmd)
	fa.mu.Unlock()
}

func (fa *fakeAgent) lookup(w http.ResponseWriter, r *http.Request) (*fakeCmd, bool) {
	c, ok := fa.cmds[r.PathValue("id")]
	if !ok {
		agentError(w, 404, "not_found", "no such command")
	}
	return c, ok
}

func (fa *fakeAgent) list(w http.ResponseWriter, _ *http.Request) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	out := []agent.Command{}
	for _, id := range fa.order {
		out = append(out, fa.cmds[id].cmd)
	}
	reply(w, out)
}

func (fa *fakeAgent) get(w http.ResponseWriter, r *http.Request) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if c, ok := fa.lookup(w, r); ok {
		reply(w, c.cmd)
	}
}

func (fa *fakeAgent) wait(w http.ResponseWriter, r *http.Request) {
	for {
		fa.mu.Lock()
		c, ok := fa.lookup(w, r)
		if !ok {
			fa.mu.Unlock()
			return
		}
		if c.cmd.Done() {
			reply(w, c.cmd)
			fa.mu.Unlock()
			return
		}
		ch := fa.changed
		fa.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
	}
}

// output serves the log from offset; with follow it waits for new frames
// until the exit frame is sent.
func (fa *fakeAgent) output(w http.ResponseWriter, r *http.Request) {
	off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	follow := r.URL.Query().Get("follow") == "true"
	first := true
	for {
		fa.mu.Lock()
		c, ok := fa.lookup(w, r)
		if !ok {
			fa.mu.Unlock()
			return
		}
		chunk := slices.Clone(c.log[off:])
		done := c.cmd.Done()
		ch := fa.changed
		fa.mu.Unlock()
		if first {
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

func (fa *fakeAgent) signal(w http.ResponseWriter, r *http.Request) {
	var req struct{ Signal int }
	json.NewDecoder(r.Body).Decode(&req) //nolint:errcheck
	fa.mu.Lock()
	defer fa.mu.Unlock()
	c, ok := fa.lookup(w, r)
	if !ok {
		return
	}
	fa.signals = append(fa.signals, req.Signal)
	fa.finishLocked(c.cmd.ID, agent.StatusKilled, 128+req.Signal, signalNames[req.Signal])
	w.WriteHeader(204)
}

func (fa *fakeAgent) stdin(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		agentError(w, 400, "bad_body", err.Error())
		return
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	c, ok := fa.lookup(w, r)
	if !ok {
		return
	}
	c.stdin.Write(data)
	c.closed = r.URL.Query().Get("close") == "true"
	w.WriteHeader(204)
}

func (fa *fakeAgent) writeTar(w http.ResponseWriter, r *http.Request) {
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
	tw := tarWrite{Dir: r.URL.Query().Get("dir"), Sudo: r.URL.Query().Get("sudo") == "true",
		Entries: map[string]string{}, Modes: map[string]int64{}}
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
		data, err := io.ReadAll(tr)
		if err != nil {
			agentError(w, 400, "invalid_tar", err.Error())
			return
		}
		tw.Entries[h.Name], tw.Modes[h.Name] = string(data), h.Mode
		if h.Typeflag == tar.TypeReg {
			res.Files++
			res.Bytes += int64(len(data))
		}
	}
	fa.mu.Lock()
	fa.writes = append(fa.writes, tw)
	fa.mu.Unlock()
	reply(w, res)
}

func (fa *fakeAgent) readFile(w http.ResponseWriter, r *http.Request) {
	fa.mu.Lock()
	fa.reads = append(fa.reads, r.URL.Path+" "+r.URL.Query().Get("path")+" sudo="+r.URL.Query().Get("sudo"))
	f, ok := fa.files[r.URL.Query().Get("path")]
	fa.mu.Unlock()
	if !ok {
		agentError(w, 404, "not_found", "no such file")
		return
	}
	w.Header().Set(agent.HeaderFileMode, strconv.FormatUint(uint64(f.mode), 8))
	w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
	w.Write(f.data) //nolint:errcheck
}

// readArchive serves the fake files at or below path as a tar, named as the
// agent names them. Below "/cut" it sends one entry, then breaks the
// connection as an agent that fails mid-stream does.
func (fa *fakeAgent) readArchive(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	fa.mu.Lock()
	fa.reads = append(fa.reads, r.URL.Path+" "+p+" sudo="+r.URL.Query().Get("sudo"))
	names := map[string]fakeFile{}
	for name, f := range fa.files {
		switch {
		case name == p:
			names[filepath.Base(name)] = f
		case strings.HasPrefix(name, strings.TrimSuffix(p, "/")+"/"):
			names[strings.TrimPrefix(name, strings.TrimSuffix(p, "/")+"/")] = f
		}
	}
	fa.mu.Unlock()
	if len(names) == 0 {
		agentError(w, 404, "file_not_found", "no such file")
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	tw := tar.NewWriter(w)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		f := names[name]
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(f.mode), Size: int64(len(f.data))}) //nolint:errcheck
		tw.Write(f.data)                                                                                              //nolint:errcheck
		if strings.HasPrefix(p, "/cut") {
			tw.Flush() //nolint:errcheck
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	}
	tw.Close() //nolint:errcheck
}

func (fa *fakeAgent) mkdir(w http.ResponseWriter, r *http.Request) {
	var req agent.MkdirRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		agentError(w, 400, "invalid_json", err.Error())
		return
	}
	fa.mu.Lock()
	fa.mkdirs = append(fa.mkdirs, req)
	fa.mu.Unlock()
	w.WriteHeader(204)
}
