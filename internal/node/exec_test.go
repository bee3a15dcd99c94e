package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// execEnv is a manager whose sandboxes run an execAgent, with an image
// that has env and a working dir, a history and a log kept for the test.
type execEnv struct {
	*env
	agent *fake.Agent
	hist  *fakeHistory
	log   *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const execImage = "127.0.0.1:5000/app:1"

func newExecEnv(t *testing.T) *execEnv {
	t.Helper()
	x := &execEnv{
		env: &env{clock: fake.NewClock(epoch), dir: t.TempDir()},
		// A command started runs until the sandbox stops; one started
		// with wait exits 0.
		agent: fake.StartAgent(t, fake.AgentConfig{Now: fake.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)).Now,
			Script: func(c *fake.Cmd) {
				if c.Wait {
					c.Exit(0)
				}
			}}),
		hist: &fakeHistory{finished: map[string][]agent.Command{}},
		log:  &syncBuffer{},
	}
	imgs := &fakeImages{team: "team-a", img: &image.Image{
		Ref: execImage, Digest: "sha256:abc", Layers: []string{"/l/base", "/l/top"},
		Config: image.ImageConfig{Env: []string{"PATH=/bin", "A=image", "B=image"}, WorkingDir: "/work"},
	}}
	x.d = fake.NewDriver(t, fake.DriverConfig{Agent: x.agent})
	x.m = x.manager(t, func(c *Config) {
		c.Images = imgs
		c.History = x.hist
		c.Logger = slog.New(slog.NewTextHandler(x.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return x
}

// createSandbox makes a running sandbox of team-a from the image, with
// env of its own over the image's.
func (x *execEnv) createSandbox(t *testing.T) sandbox.Sandbox {
	t.Helper()
	sb, err := x.m.Create(t.Context(), sandbox.CreateRequest{Image: execImage, TeamID: "team-a",
		Env: map[string]string{"B": "sandbox", "C": "sandbox"}})
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func TestExecValidation(t *testing.T) {
	x := newExecEnv(t)
	sb := x.createSandbox(t)
	tests := []struct {
		name string
		req  sandbox.ExecRequest
		code string
	}{
		{"no cmd", sandbox.ExecRequest{}, "invalid_command"},
		{"NUL in cmd", sandbox.ExecRequest{Cmd: "a\x00b"}, "invalid_command"},
		{"NUL in an arg", sandbox.ExecRequest{Cmd: "echo", Args: []string{"ok", "a\x00"}}, "invalid_command"},
		{"relative cwd", sandbox.ExecRequest{Cmd: "ls", Cwd: "tmp"}, "invalid_path"},
		{"cwd with ..", sandbox.ExecRequest{Cmd: "ls", Cwd: "/work/../etc"}, "invalid_path"},
		{"NUL in cwd", sandbox.ExecRequest{Cmd: "ls", Cwd: "/a\x00"}, "invalid_path"},
		{"cwd too long", sandbox.ExecRequest{Cmd: "ls", Cwd: "/" + strings.Repeat("a", 4096)}, "invalid_path"},
		{"empty env name", sandbox.ExecRequest{Cmd: "env", Env: map[string]string{"": "x"}}, "invalid_env"},
		{"env name with =", sandbox.ExecRequest{Cmd: "env", Env: map[string]string{"A=B": "x"}}, "invalid_env"},
		{"NUL in an env value", sandbox.ExecRequest{Cmd: "env", Env: map[string]string{"A": "x\x00"}}, "invalid_env"},
		{"bad secret env name", sandbox.ExecRequest{Cmd: "env", SecretEnv: map[string]string{"A\x00": "x"}}, "invalid_env"},
		{"negative timeout", sandbox.ExecRequest{Cmd: "sleep", TimeoutMs: -1}, "invalid_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := x.m.Exec(t.Context(), sb.ID, tt.req)
			wantErr(t, err, sandbox.ErrInvalid, tt.code)
		})
	}
	if n := len(x.agent.Started()); n != 0 {
		t.Errorf("the agent was asked to start %d invalid commands", n)
	}
	x.m.startLog.flush()
	x.hist.mu.Lock()
	defer x.hist.mu.Unlock()
	if len(x.hist.started) != 0 {
		t.Errorf("history recorded %d invalid commands", len(x.hist.started))
	}
}

func TestExecDefaultsAndEnv(t *testing.T) {
	x := newExecEnv(t)
	sb := x.createSandbox(t)
	tests := []struct {
		name string
		req  sandbox.ExecRequest
		want agent.CommandRequest
	}{
		{"the sandbox's working dir and env", sandbox.ExecRequest{Cmd: "env"},
			agent.CommandRequest{Cmd: "env", Cwd: "/work",
				Env: map[string]string{"PATH": "/bin", "A": "image", "B": "sandbox", "C": "sandbox"}}},
		{"image < sandbox < request < secrets", sandbox.ExecRequest{Cmd: "env",
			Env:       map[string]string{"C": "request", "D": "request", "PATH": "/usr/bin"},
			SecretEnv: map[string]string{"D": "secret", "E": "secret"}},
			agent.CommandRequest{Cmd: "env", Cwd: "/work",
				Env: map[string]string{"PATH": "/usr/bin", "A": "image", "B": "sandbox", "C": "request", "D": "secret", "E": "secret"}}},
		{"a cwd of its own, cleaned", sandbox.ExecRequest{Cmd: "ls", Args: []string{"-l"}, Cwd: "/srv//app/"},
			agent.CommandRequest{Cmd: "ls", Args: []string{"-l"}, Cwd: "/srv/app",
				Env: map[string]string{"PATH": "/bin", "A": "image", "B": "sandbox", "C": "sandbox"}}},
		{"the rest passes through", sandbox.ExecRequest{Cmd: "cat", Sudo: true, TimeoutMs: 1500, Stdin: true},
			agent.CommandRequest{Cmd: "cat", Cwd: "/work", Sudo: true, TimeoutMs: 1500, Stdin: true,
				Env: map[string]string{"PATH": "/bin", "A": "image", "B": "sandbox", "C": "sandbox"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(x.agent.Started())
			if _, err := x.m.Exec(t.Context(), sb.ID, tt.req); err != nil {
				t.Fatal(err)
			}
			reqs := x.agent.Started()
			if len(reqs) != before+1 {
				t.Fatalf("the agent got %d requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1]
			if got.Cmd != tt.want.Cmd || !slices.Equal(got.Args, tt.want.Args) || got.Cwd != tt.want.Cwd || got.Sudo != tt.want.Sudo ||
				got.TimeoutMs != tt.want.TimeoutMs || got.Stdin != tt.want.Stdin || !maps.Equal(got.Env, tt.want.Env) {
				t.Errorf("agent got %+v, want %+v", got, tt.want)
			}
		})
	}
	// The sandbox's record keeps its own env: a command's is its own.
	if got := x.get(t, sb.ID).Env; !maps.Equal(got, map[string]string{"PATH": "/bin", "A": "image", "B": "sandbox", "C": "sandbox"}) {
		t.Errorf("sandbox env after commands = %v", got)
	}
}

func TestExecHistory(t *testing.T) {
	x := newExecEnv(t)
	sb := x.createSandbox(t)
	const secret = "s3cr3t-never-recorded"
	detached, err := x.m.Exec(t.Context(), sb.ID, sandbox.ExecRequest{Cmd: "sleep", Args: []string{"60"}, Cwd: "/srv",
		SecretEnv: map[string]string{"TOKEN": secret}})
	if err != nil {
		t.Fatal(err)
	}
	waited, err := x.m.Exec(t.Context(), sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true, SecretEnv: map[string]string{"TOKEN": secret}})
	if err != nil {
		t.Fatal(err)
	}
	if detached.Done() || !waited.Done() || waited.ExitCode == nil {
		t.Fatalf("detached %+v, waited %+v", detached, waited)
	}
	// The agent got the secret: it is the command's env.
	if reqs := x.agent.Started(); len(reqs) != 2 || reqs[0].Env["TOKEN"] != secret || reqs[1].Env["TOKEN"] != secret {
		t.Fatalf("agent requests = %+v", reqs)
	}

	x.m.startLog.flush()
	x.hist.mu.Lock()
	started := append([]startedCommand(nil), x.hist.started...)
	x.hist.mu.Unlock()
	if len(started) != 2 {
		t.Fatalf("History.Started called %d times, want 2", len(started))
	}
	d, w := started[0], started[1]
	switch {
	case d.sb.ID != sb.ID || d.sb.TeamID != "team-a":
		t.Errorf("recorded in sandbox %s of team %q, want %s of team-a", d.sb.ID, d.sb.TeamID, sb.ID)
	case d.cmd.ID != detached.ID || d.cmd.Cmd != "sleep" || d.cmd.Cwd != "/srv" || d.cmd.Done():
		t.Errorf("detached command recorded as %+v, want it running", d.cmd)
	case w.cmd.ID != waited.ID || w.cmd.ExitCode == nil || *w.cmd.ExitCode != 0 || w.cmd.FinishedAt.IsZero():
		t.Errorf("waited command recorded as %+v, want its exit at once", w.cmd)
	}
	// Extra env is the command's, never the history's or the log's.
	for what, s := range map[string]string{"history": fmt.Sprintf("%+v", started), "log": x.log.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("the %s holds the secret env: %s", what, s)
		}
	}
}

func TestExecNeedsARunningSandbox(t *testing.T) {
	x := newExecEnv(t)
	sb := x.createSandbox(t)
	if _, err := x.m.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	_, err := x.m.Exec(t.Context(), sb.ID, sandbox.ExecRequest{Cmd: "true"})
	wantErr(t, err, sandbox.ErrNotRunning, "sandbox_not_running")
	_, err = x.m.Exec(t.Context(), "sb-nope", sandbox.ExecRequest{Cmd: "true"})
	wantErr(t, err, sandbox.ErrNotFound, "sandbox_not_found")
	if n := len(x.agent.Started()); n != 0 {
		t.Errorf("the agent was asked to start %d commands", n)
	}
}

// TestExecOutlivesItsCaller: a caller that already left still gets its
// command started and recorded (whether it runs must never be unknown),
// and the command counts as activity.
func TestExecOutlivesItsCaller(t *testing.T) {
	x := newExecEnv(t)
	sb := x.createSandbox(t)
	x.clock.Advance(time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	cmd, err := x.m.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "sleep"})
	if err != nil {
		t.Fatalf("Exec with a cancelled caller: %v", err)
	}
	x.m.startLog.flush()
	x.hist.mu.Lock()
	n := len(x.hist.started)
	x.hist.mu.Unlock()
	if n != 1 || len(x.agent.Started()) != 1 || cmd.ID == "" {
		t.Errorf("started %d, recorded %d, want 1 and 1", len(x.agent.Started()), n)
	}
	if got := x.get(t, sb.ID).LastActivityAt; !got.Equal(x.clock.Now().UTC()) {
		t.Errorf("LastActivityAt = %s, want the time of the command, %s", got, x.clock.Now().UTC())
	}
}
