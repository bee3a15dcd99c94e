//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent switches credentials and chowns files")
	}
}

type testEnv struct {
	srv    *Server
	client *Client
	root   string // ServerConfig.Root
	cfg    ServerConfig
}

// startServer runs a Server on a unix socket in a temp dir; everything is
// torn down by t.Cleanup.
func startServer(t *testing.T, mod func(*ServerConfig)) *testEnv {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		StateDir:   filepath.Join(dir, "state"),
		Root:       root,
		CgroupRoot: filepath.Join(dir, "nocgroup"),
		UserHome:   "/tmp",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if srv.userErr == nil && cfg.Root != "/" {
		// The root stands in for a tree the user owns, such as its home:
		// writes without sudo are made with the user's identity.
		if err := os.Chown(root, int(srv.user.UID), int(srv.user.GID)); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	client := UnixClient(sock)
	t.Cleanup(func() {
		client.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	return &testEnv{srv: srv, client: client, root: root, cfg: cfg}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run starts req and waits for it.
func (e *testEnv) run(t *testing.T, req CommandRequest) Command {
	t.Helper()
	ctx := testCtx(t)
	cmd, err := e.client.Start(ctx, req)
	if err != nil {
		t.Fatalf("start %v: %v", req.Cmd, err)
	}
	done, err := e.client.Wait(ctx, cmd.ID)
	if err != nil {
		t.Fatalf("wait %s: %v", cmd.ID, err)
	}
	return done
}

// readOutput collects stdout, stderr and the exit frame from offset.
func readOutput(t *testing.T, c *Client, id string, offset int64, follow bool, perFrame func(int)) (stdout, stderr []byte, exit *Frame) {
	t.Helper()
	out, err := c.Output(testCtx(t), id, offset, follow)
	if err != nil {
		t.Fatalf("output: %v", err)
	}
	defer out.Close()
	var o, e bytes.Buffer
	for i := 0; ; i++ {
		f, err := out.Next()
		if err == io.EOF {
			return o.Bytes(), e.Bytes(), exit
		}
		if err != nil {
			t.Fatalf("next frame: %v", err)
		}
		switch f.Kind {
		case FrameStdout:
			o.Write(f.Data)
		case FrameStderr:
			e.Write(f.Data)
		case FrameExit:
			ff := f
			exit = &ff
		}
		if perFrame != nil {
			perFrame(i)
		}
	}
}

func TestCommandExit(t *testing.T) {
	e := startServer(t, nil)
	tests := []struct {
		name       string
		req        CommandRequest
		status     string
		code       int
		stdout     string
		wantErrMsg bool
	}{
		{name: "true", req: CommandRequest{Cmd: "true"}, status: StatusExited, code: 0},
		{name: "exit 3", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "exit 3"}}, status: StatusExited, code: 3},
		{name: "runs as user", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $(id -u):$(id -g):$(id -G):$HOME:$USER"}}, status: StatusExited, stdout: "1000:1000:1000:/tmp:user\n"},
		{name: "sudo", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $(id -u):$HOME"}, Sudo: true}, status: StatusExited, stdout: "0:/root\n"},
		{name: "env and cwd", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $FOO $(pwd)"}, Env: map[string]string{"FOO": "bar"}, Cwd: "/"}, status: StatusExited, stdout: "bar /\n"},
		{name: "own session", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "ps -o sid= -p $$ | tr -d ' '; echo $$"}}, status: StatusExited},
		{name: "missing binary", req: CommandRequest{Cmd: "no-such-binary-xyz"}, status: StatusFailed, code: 127, wantErrMsg: true},
		{name: "not executable", req: CommandRequest{Cmd: "/etc/hostname"}, status: StatusFailed, code: 126, wantErrMsg: true},
		{name: "bad cwd", req: CommandRequest{Cmd: "true", Cwd: "/no/such/dir"}, status: StatusFailed, code: 126, wantErrMsg: true},
		{name: "killed by signal", req: CommandRequest{Cmd: "sh", Args: []string{"-c", "kill -TERM $$"}}, status: StatusKilled, code: 128 + 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.run(t, tc.req)
			if got.Status != tc.status || got.ExitCode == nil || *got.ExitCode != tc.code {
				t.Fatalf("got status %s code %v err %q, want %s %d", got.Status, got.ExitCode, got.Error, tc.status, tc.code)
			}
			if tc.wantErrMsg != (got.Error != "") {
				t.Errorf("error %q, want message: %v", got.Error, tc.wantErrMsg)
			}
			stdout, _, exit := readOutput(t, e.client, got.ID, 0, false, nil)
			if exit == nil {
				t.Fatal("no exit frame")
			}
			if tc.name == "own session" {
				lines := strings.Fields(string(stdout))
				if len(lines) != 2 || lines[0] != lines[1] {
					t.Errorf("session id and pid differ: %q", stdout)
				}
			} else if tc.stdout != "" && string(stdout) != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout, tc.stdout)
			}
		})
	}
}

func TestCommandInvalid(t *testing.T) {
	e := startServer(t, nil)
	tests := []struct {
		name string
		req  CommandRequest
	}{
		{"empty cmd", CommandRequest{}},
		{"relative cwd", CommandRequest{Cmd: "true", Cwd: "tmp"}},
		{"nul in arg", CommandRequest{Cmd: "true", Args: []string{"a\x00b"}}},
		{"bad env name", CommandRequest{Cmd: "true", Env: map[string]string{"A=B": "x"}}},
		{"negative timeout", CommandRequest{Cmd: "true", TimeoutMs: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.Start(testCtx(t), tc.req)
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_command" {
				t.Fatalf("got %v (code %q), want invalid_command", err, sandbox.CodeOf(err))
			}
		})
	}
	if _, err := e.client.Get(testCtx(t), "cmd-nope"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
}

func TestCommandIDs(t *testing.T) {
	for range 100 {
		id := newID()
		if !sandbox.ValidID(id) || len(id) != 16 || !strings.HasPrefix(id, "cmd-") {
			t.Fatalf("bad id %q", id)
		}
	}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestLargeOutput(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	const n = 1_500_000 // about 10.9 MB per stream
	want := seqOutput(n)
	cmd, err := e.client.Start(ctx, CommandRequest{Cmd: "sh", Args: []string{"-c", fmt.Sprintf("seq 1 %d & seq 1 %d >&2; wait", n, n)}})
	if err != nil {
		t.Fatal(err)
	}

	// A slow client: it stalls on its first frames while the command runs
	// to the end, so output must not wait for readers.
	slowDone := make(chan [2][]byte, 1)
	go func() {
		o, e2, _ := readOutput(t, e.client, cmd.ID, 0, true, func(i int) {
			if i < 5 {
				time.Sleep(100 * time.Millisecond)
			}
		})
		slowDone <- [2][]byte{o, e2}
	}()
	done, err := e.client.Wait(ctx, cmd.ID)
	if err != nil || done.Status != StatusExited || *done.ExitCode != 0 {
		t.Fatalf("wait: %+v %v", done, err)
	}
	select {
	case <-slowDone:
		t.Error("the slow client finished before the command: it was not slow enough to prove anything")
	default:
	}
	got := <-slowDone
	if !bytes.Equal(got[0], want) || !bytes.Equal(got[1], want) {
		t.Fatalf("slow client: stdout %d bytes, stderr %d bytes, want %d each, in order", len(got[0]), len(got[1]), len(want))
	}

	// A late client from the start gets everything.
	o, e2, exit := readOutput(t, e.client, cmd.ID, 0, true, nil)
	if !bytes.Equal(o, want) || !bytes.Equal(e2, want) || exit == nil {
		t.Fatalf("late client: %d/%d bytes, exit %v", len(o), len(e2), exit != nil)
	}

	// Re-attach mid-stream: remember a frame boundary, resume from it.
	out, err := e.client.Output(ctx, cmd.ID, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	var before bytes.Buffer
	var mid int64
	for range 100 {
		f, err := out.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == FrameStdout {
			before.Write(f.Data)
		}
		mid = f.Offset
	}
	out.Close()
	rest, _, exit := readOutput(t, e.client, cmd.ID, mid, false, nil)
	if exit == nil || !bytes.Equal(append(before.Bytes(), rest...), want) {
		t.Fatalf("re-attach at %d: stdout does not line up", mid)
	}
	if _, err := e.client.Output(ctx, cmd.ID, mid+1, false); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("offset inside a frame: %v, want invalid", err)
	}
	// A negative offset is refused like any other and leaves the command
	// answering (it once panicked with the command's lock held).
	if _, err := e.client.Output(ctx, cmd.ID, -1, false); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("negative offset: %v, want invalid", err)
	}
	if _, err := e.client.Get(ctx, cmd.ID); err != nil {
		t.Errorf("get after a negative offset: %v", err)
	}
}

func TestStdin(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	cmd, err := e.client.Start(ctx, CommandRequest{Cmd: "cat", Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader("hello "), false); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader("world"), true); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader("late"), false); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("stdin after close: %v, want conflict", err)
	}
	done, err := e.client.Wait(ctx, cmd.ID)
	if err != nil || done.Status != StatusExited {
		t.Fatalf("wait: %+v %v", done, err)
	}
	if o, _, _ := readOutput(t, e.client, cmd.ID, 0, true, nil); string(o) != "hello world" {
		t.Errorf("echo %q", o)
	}
	noStdin := e.run(t, CommandRequest{Cmd: "cat"})
	if noStdin.Status != StatusExited {
		t.Errorf("cat with /dev/null stdin: %+v", noStdin)
	}
	if err := e.client.Stdin(ctx, noStdin.ID, strings.NewReader("x"), true); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("stdin not requested: %v, want conflict", err)
	}
}

func TestSignalAndTimeout(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	cmd, err := e.client.Start(ctx, CommandRequest{Cmd: "sleep", Args: []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []int{0, 65} {
		if err := e.client.Signal(ctx, cmd.ID, sig); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("signal %d: %v, want invalid", sig, err)
		}
	}
	if err := e.client.Signal(ctx, cmd.ID, int(syscall.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	done, err := e.client.Wait(ctx, cmd.ID)
	if err != nil || done.Status != StatusKilled || done.Signal != "SIGKILL" || *done.ExitCode != 137 || done.OOMKilled {
		t.Fatalf("after SIGKILL: %+v %v", done, err)
	}
	if err := e.client.Signal(ctx, cmd.ID, 15); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("signal finished command: %v, want conflict", err)
	}

	start := time.Now()
	to := e.run(t, CommandRequest{Cmd: "sleep", Args: []string{"30"}, TimeoutMs: 200})
	if to.Status != StatusTimedOut || time.Since(start) > 5*time.Second {
		t.Fatalf("timeout: %+v after %v", to, time.Since(start))
	}

	list, err := e.client.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != cmd.ID {
		t.Errorf("list: %d commands, %v", len(list), err)
	}
}

func TestOOMKilled(t *testing.T) {
	cg := t.TempDir()
	e := startServer(t, func(c *ServerConfig) { c.CgroupRoot = cg })
	events := filepath.Join(cg, "memory.events")
	write := func(n int) {
		t.Helper()
		if err := os.WriteFile(events, fmt.Appendf(nil, "low 0\noom 1\noom_kill %d\n", n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	// The command bumps the counter before being killed, as the kernel would.
	got := e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", fmt.Sprintf("printf 'oom_kill 2\\n' > %s; kill -KILL $$", events)}, Sudo: true})
	if !got.OOMKilled || got.Status != StatusKilled {
		t.Errorf("want OOMKilled: %+v", got)
	}
	got = e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", "kill -KILL $$"}, Sudo: true})
	if got.OOMKilled {
		t.Errorf("unchanged counter gave OOMKilled: %+v", got)
	}
}

func TestBackgroundGrandchild(t *testing.T) {
	e := startServer(t, nil)
	start := time.Now()
	got := e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", "sleep 30 & echo $!"}})
	if got.Status != StatusExited || time.Since(start) > 3*time.Second {
		t.Fatalf("command with a background child: %+v after %v", got, time.Since(start))
	}
	o, _, _ := readOutput(t, e.client, got.ID, 0, false, nil)
	pid, err := strconv.Atoi(strings.TrimSpace(string(o)))
	if err != nil {
		t.Fatalf("pid %q: %v", o, err)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func TestPing(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.Version = "v-test" })
	info, err := e.client.Ping(testCtx(t))
	if err != nil || info.Version != "v-test" || info.PID != os.Getpid() || info.Seccomp {
		t.Fatalf("ping: %+v %v", info, err)
	}
}

// TestRun: start and wait in one request; a client that gives up on the
// wait leaves the command running.
func TestRun(t *testing.T) {
	e := startServer(t, nil)
	cmd, err := e.client.Run(testCtx(t), CommandRequest{Cmd: "sh", Args: []string{"-c", "sleep 0.2; exit 4"}})
	if err != nil {
		t.Fatal(err)
	}
	if !cmd.Done() || cmd.ExitCode == nil || *cmd.ExitCode != 4 {
		t.Fatalf("run answered %+v", cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := e.client.Run(ctx, CommandRequest{Cmd: "sleep", Args: []string{"1"}}); err == nil {
		t.Fatal("a run longer than its ctx returned no error")
	}
	cmds, err := e.client.List(testCtx(t))
	if err != nil || len(cmds) != 2 {
		t.Fatalf("list: %d commands, %v", len(cmds), err)
	}
	if cmds[1].Done() {
		t.Errorf("leaving the wait ended the command: %+v", cmds[1])
	}
	if done, err := e.client.Wait(testCtx(t), cmds[1].ID); err != nil || *done.ExitCode != 0 {
		t.Errorf("the command should finish on its own: %+v, %v", done, err)
	}
}

// TestWarm: a warm-up runs its program to completion as a command would,
// but leaves nothing a client can see: no command in the list, none to
// find by id; a failed warm-up is an error.
func TestWarm(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"runs", []string{"/bin/true"}, false},
		{"fails", []string{"/bin/false"}, true},
		{"missing", []string{"/nonexistent/warm"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startServer(t, func(c *ServerConfig) { c.WarmArgs = tc.args })
			ctx := testCtx(t)
			err := e.client.Warm(ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Warm: %v, want error %v", err, tc.wantErr)
			}
			cmds, err := e.client.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(cmds) != 0 {
				t.Fatalf("a warm-up is listed: %+v", cmds)
			}
			e.srv.mu.Lock()
			running := len(e.srv.running)
			e.srv.mu.Unlock()
			if running != 0 {
				t.Fatalf("%d commands left running", running)
			}
			// The server still runs commands after it.
			if c := e.run(t, CommandRequest{Cmd: "/bin/true"}); c.ExitCode == nil || *c.ExitCode != 0 {
				t.Fatalf("command after the warm-up: %+v", c)
			}
		})
	}
}
