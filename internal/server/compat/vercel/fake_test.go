package vercel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// fakeSandboxes is a hand-written server.Sandboxes over a map; every
// sandbox shares one fake agent.
type fakeSandboxes struct {
	agent *agent.Client
	// host makes ids unique across the fakes of several replicas, as
	// paddock's random ids are.
	host string

	mu      sync.Mutex // guards sbs, seq, creates and execs
	sbs     map[string]sandbox.Sandbox
	seq     int
	creates []sandbox.CreateRequest // every create request, in order
	execs   []sandbox.ExecRequest   // every Exec, in order
	// createErr, when set, is what Create answers.
	createErr error
}

var _ server.Sandboxes = (*fakeSandboxes)(nil)

func (f *fakeSandboxes) Create(_ context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	if f.createErr != nil {
		return sandbox.Sandbox{}, f.createErr
	}
	f.seq++
	now := time.Now()
	timeout := req.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	res := req.Resources
	if res.VCPUs == 0 {
		res = sandbox.Resources{VCPUs: 1, MemoryMB: 1024, PIDs: 512}
	}
	sb := sandbox.Sandbox{ID: fmt.Sprintf("sb-fake%s%d", f.host, f.seq), State: sandbox.Running, Image: "host", Snapshot: req.Snapshot,
		Resources: res, Env: req.Env, CreatedAt: now, StartedAt: now, ExpiresAt: now.Add(timeout), Ports: req.Ports,
		NetworkPolicy: req.NetworkPolicy, TeamID: req.TeamID}
	f.sbs[sb.ID] = sb
	return sb, nil
}

func (f *fakeSandboxes) Get(_ context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	return sb, nil
}

func (f *fakeSandboxes) List(context.Context, sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	return nil, "", errors.New("not used")
}

func (f *fakeSandboxes) Stop(_ context.Context, id string) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sb, sandbox.ErrNotFound
	}
	if !sb.State.Terminal() {
		sb.State, sb.StoppedAt = sandbox.Stopped, time.Now()
		f.sbs[id] = sb
	}
	return sb, nil
}

// count is the number of sandboxes the fake holds.
func (f *fakeSandboxes) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sbs)
}

func (f *fakeSandboxes) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sbs, id)
	return nil
}

func (f *fakeSandboxes) ExtendTimeout(_ context.Context, id string, by time.Duration) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb := f.sbs[id]
	sb.ExpiresAt = sb.ExpiresAt.Add(by)
	f.sbs[id] = sb
	return sb, nil
}

func (f *fakeSandboxes) Agent(context.Context, string) (*agent.Client, error) { return f.agent, nil }

// Exec checks the request as node does and starts it on the one fake
// agent as it came: the merging of env and defaults is node's, tested there.
func (f *fakeSandboxes) Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error) {
	if err := req.Validate(); err != nil {
		return agent.Command{}, err
	}
	f.mu.Lock()
	sb, ok := f.sbs[id]
	f.execs = append(f.execs, req)
	f.mu.Unlock()
	switch {
	case !ok:
		return agent.Command{}, sandbox.ErrNotFound
	case sb.State != sandbox.Running:
		return agent.Command{}, sandbox.ErrNotRunning
	}
	areq := agent.CommandRequest{Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd, Env: req.Env, Sudo: req.Sudo, TimeoutMs: req.TimeoutMs}
	if req.Wait {
		return f.agent.Run(ctx, areq)
	}
	return f.agent.Start(ctx, areq)
}

// lastExec is the last request Exec was given.
func (f *fakeSandboxes) lastExec() sandbox.ExecRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.execs) == 0 {
		return sandbox.ExecRequest{}
	}
	return f.execs[len(f.execs)-1]
}

func (f *fakeSandboxes) Stats(context.Context, string) (runtime.Stats, error) {
	return runtime.Stats{}, errors.New("not used")
}

func (f *fakeSandboxes) AddPorts(_ context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb := f.sbs[id]
	sb.Ports = append(sb.Ports, ports...)
	f.sbs[id] = sb
	return sb, nil
}

func (f *fakeSandboxes) UpdateNetworkPolicy(_ context.Context, id string, p sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb := f.sbs[id]
	sb.NetworkPolicy = &p
	f.sbs[id] = sb
	return sb, nil
}

// setState moves a sandbox as the node would on its own (a timeout).
func (f *fakeSandboxes) setState(id string, st sandbox.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb := f.sbs[id]
	sb.State = st
	f.sbs[id] = sb
}

// fakeSnapshots keeps snapshots in a map; a snapshot belongs to its
// source sandbox's team, as node's do.
type fakeSnapshots struct {
	sbs *fakeSandboxes

	mu    sync.Mutex // guards snaps and seq
	snaps map[string]*image.Snapshot
	seq   int
}

var _ server.Snapshots = (*fakeSnapshots)(nil)

func (f *fakeSnapshots) Snapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	sb, err := f.sbs.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	s := &image.Snapshot{ID: fmt.Sprintf("snap-fake%s%d", f.sbs.host, f.seq), Source: id, TeamID: sb.TeamID, Size: 4096, CreatedAt: time.Now(), LastUsed: time.Now()}
	f.snaps[s.ID] = s
	return s, nil
}

func (f *fakeSnapshots) Fork(context.Context, string, sandbox.CreateRequest) (sandbox.Sandbox, error) {
	return sandbox.Sandbox{}, errors.New("not used")
}

func (f *fakeSnapshots) ListSnapshots() []*image.Snapshot { return nil }

func (f *fakeSnapshots) GetSnapshot(id string) (*image.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snaps[id]
	if !ok {
		return nil, sandbox.ErrNotFound
	}
	return s, nil
}

// count is the number of snapshots the fake holds.
func (f *fakeSnapshots) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.snaps)
}

func (f *fakeSnapshots) DeleteSnapshot(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.snaps, id)
	return nil
}

// fakeAgent runs every command to completion at once: stdout is its args
// joined by spaces and a newline, exit code 0 (or the number in the first
// arg for "exit"). Files live in a map.
type fakeAgent struct {
	mu    sync.Mutex // guards cmds, files
	cmds  map[string]agent.Command
	out   map[string]string
	files map[string][]byte
	seq   int
}

func startFakeAgent(t *testing.T) *agent.Client {
	t.Helper()
	fa := &fakeAgent{cmds: map[string]agent.Command{}, out: map[string]string{}, files: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/commands", fa.start)
	mux.HandleFunc("GET /v1/commands/{id}", fa.get)
	mux.HandleFunc("GET /v1/commands/{id}/wait", fa.get)
	mux.HandleFunc("GET /v1/commands/{id}/output", fa.output)
	mux.HandleFunc("POST /v1/commands/{id}/signal", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("{}")) })
	mux.HandleFunc("GET /v1/files", func(w http.ResponseWriter, r *http.Request) {
		fa.mu.Lock()
		data, ok := fa.files[r.URL.Query().Get("path")]
		fa.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"code":"not_found","message":"no such file"}}`))
			return
		}
		w.Write(data)
	})
	mux.HandleFunc("POST /v1/mkdir", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("{}")) })
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) // owned: closed by the cleanup
	t.Cleanup(func() { srv.Close() })
	c := agent.UnixClient(sock)
	t.Cleanup(c.Close)
	return c
}

func (fa *fakeAgent) start(w http.ResponseWriter, r *http.Request) {
	var req agent.CommandRequest
	json.NewDecoder(r.Body).Decode(&req)
	fa.mu.Lock()
	defer fa.mu.Unlock()
	fa.seq++
	code := 0
	if req.Cmd == "exit" && len(req.Args) > 0 {
		fmt.Sscan(req.Args[0], &code)
	}
	now := time.Now()
	c := agent.Command{ID: fmt.Sprintf("cmd-%d", fa.seq), Cmd: req.Cmd, Args: req.Args, Cwd: req.Cwd,
		Status: agent.StatusExited, ExitCode: &code, StartedAt: now, FinishedAt: now.Add(5 * time.Millisecond)}
	fa.cmds[c.ID] = c
	fa.out[c.ID] = strings.Join(req.Args, " ") + "\n"
	if r.URL.Query().Get("wait") == "true" {
		json.NewEncoder(w).Encode(c)
		return
	}
	running := c
	running.Status, running.ExitCode, running.FinishedAt = agent.StatusRunning, nil, time.Time{}
	json.NewEncoder(w).Encode(running)
}

func (fa *fakeAgent) get(w http.ResponseWriter, r *http.Request) {
	fa.mu.Lock()
	c, ok := fa.cmds[r.PathValue("id")]
	fa.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"not_found","message":"no such command"}}`))
		return
	}
	json.NewEncoder(w).Encode(c)
}

func (fa *fakeAgent) output(w http.ResponseWriter, r *http.Request) {
	fa.mu.Lock()
	c := fa.cmds[r.PathValue("id")]
	out := fa.out[c.ID]
	fa.mu.Unlock()
	// Split the output mid-rune when it has a multi-byte one, as a pipe read may.
	b := []byte(out)
	cut := len(b) / 2
	w.Write(frame(agent.FrameStdout, b[:cut]))
	w.Write(frame(agent.FrameStdout, b[cut:]))
	exit, _ := json.Marshal(c)
	w.Write(frame(agent.FrameExit, exit))
}

func frame(kind byte, data []byte) []byte {
	hdr := make([]byte, 5)
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(data)))
	return append(hdr, data...)
}
