//go:build unix

package standin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// standinBinary builds the stand-in with standinimage.Build once per test
// binary; it skips without a go toolchain.
func standinBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "goose-standin-test-"); binErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath, binErr = standinimage.Build(ctx, "", binDir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// syncBuffer is a goroutine-safe stderr sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is one run of the stand-in binary.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

// startProcess runs the binary on 127.0.0.1 with root as GOOSE_PATH_ROOT
// and waits for /status as the desktop does (every 100 ms, 10 s at most).
func startProcess(t *testing.T, bin, root string) (*process, *env) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	p := &process{cmd: exec.Command(bin, "agent"), stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = []string{
		"GOOSE_PORT=" + port, "GOOSE_SERVER__SECRET_KEY=" + testSecret, "GOOSE_PATH_ROOT=" + root,
		"GOOSE_STANDIN_CHUNK_DELAY=10ms", "HOME=" + root,
	}
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("stand-in stderr:\n%s", p.stderr.String())
		}
	})
	base := "http://127.0.0.1:" + port
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stand-in never answered /status: %v\n%s", err, p.stderr.String())
		}
		select {
		case err := <-p.done:
			t.Fatalf("the stand-in exited: %v\n%s", err, p.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return p, &env{t: t, root: root, base: base}
}

// term sends SIGTERM and expects a clean exit well within the 5 s the
// desktop (and paddock) wait before SIGKILL.
func (p *process) term(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still running 5 s after SIGTERM\n%s", p.stderr.String())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %s", d)
	}
}

func TestProcessSIGTERMAndRestartKeepSessions(t *testing.T) {
	bin := standinBinary(t)
	root := t.TempDir()
	p, e := startProcess(t, bin, root)

	s := e.newSession()
	if got := replyText(e.reply(s.ID, "hello process")); got != "echo: hello process" {
		t.Fatalf("reply %q", got)
	}
	// At SIGTERM a turn is in flight and an event stream is open: both end
	// at once, and the user message already stored stays.
	resp, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "[standin:slow=1m] pending")
	// The turn has stored its user message (and pauses a minute before
	// its first chunk).
	for deadline := time.Now().Add(5 * time.Second); ; {
		var got Session
		e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
		if got.MessageCount == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the turn never stored its user message: %d messages", got.MessageCount)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.term(t)
	for {
		if _, ok := next(t, ch, 5*time.Second); !ok {
			break
		}
	}
	resp.Body.Close()
	if _, err := os.Stat(filepath.Join(root, "data", "sessions", s.ID+".json")); err != nil {
		t.Fatalf("no session file after SIGTERM: %v", err)
	}

	_, e = startProcess(t, bin, root)
	var got Session
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
	texts := []string{}
	for _, m := range got.Conversation {
		texts = append(texts, m.Role+":"+m.Text())
	}
	want := "user:hello process|assistant:echo: hello process|user:[standin:slow=1m] pending"
	if strings.Join(texts, "|") != want {
		t.Errorf("after restart: %q, want %q", strings.Join(texts, "|"), want)
	}
	// The restarted server works on: resume and another turn.
	e.callJSON("POST", "/agent/resume", map[string]any{"session_id": s.ID, "load_model_and_extensions": true}, 200, nil)
	if got := replyText(e.reply(s.ID, "again")); got != "echo: again" {
		t.Errorf("reply after restart %q", got)
	}
}

func TestProcessArguments(t *testing.T) {
	bin := standinBinary(t)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown subcommand", []string{"mcp"}, nil, "the only subcommand is agent"},
		{"bad port", []string{"agent", "--port", "http"}, nil, "not a port number"},
		{"bad GOOSE_PORT", []string{"agent"}, []string{"GOOSE_PORT=99999"}, "not a port number"},
		{"no place for sessions", []string{"agent"}, []string{"HOME="}, "GOOSE_PATH_ROOT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append([]string{"GOOSE_PATH_ROOT=" + t.TempDir()}, tt.env...)
			if strings.HasPrefix(tt.name, "no place") {
				cmd.Env = tt.env
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("err %v, stderr %q, want exit 1 and %q", err, stderr.String(), tt.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		cmd := exec.Command(bin, "-h")
		cmd.Stderr = io.Discard
		if err := cmd.Run(); err != nil {
			t.Errorf("-h: %v", err)
		}
	})
}
