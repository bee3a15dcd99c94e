package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/deathsig"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveProc is a `paddock serve` process run by a test.
type serveProc struct {
	out, log *lockedBuffer // stdout (the quickstart), stderr (the JSON log)
	stop     func()        // SIGTERM, wait for a clean exit; idempotent
}

// startServe runs `paddock serve --data-dir dataDir --listen addr args...`;
// the process dies with the test binary, and the test's cleanup stops it.
// stop fails the test if serve exits uncleanly, hangs, or logged an error.
func startServe(t *testing.T, bin, dataDir, addr string, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", addr}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p := &serveProc{out: &lockedBuffer{}, log: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.log
	child, err := deathsig.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-child.Done():
				if err := child.Wait(); err != nil {
					t.Errorf("serve exited with %v\n%s", err, p.log.String())
				}
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				_ = child.Wait()
				t.Errorf("serve did not stop on SIGTERM\n%s", p.log.String())
			}
			sc := bufio.NewScanner(strings.NewReader(p.log.String()))
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"level":"ERROR"`) {
					t.Errorf("serve logged an error: %s", sc.Text())
				}
			}
		})
	}
	t.Cleanup(p.stop)
	// Runs before stop (cleanups run last first): a test that failed half
	// way leaves its sandboxes running, and paddock keeps sandboxes across
	// its own restarts, so they would outlive the test. A passing test
	// deleted its own; one whose server is down already has nothing to ask.
	t.Cleanup(func() {
		if t.Failed() {
			deleteLeftSandboxes(t, bin, dataDir)
		}
	})
	return p
}

// deleteLeftSandboxes deletes, through the CLI and the server's own
// client.json, every sandbox the server on dataDir still has.
func deleteLeftSandboxes(t *testing.T, bin, dataDir string) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PADDOCK_URL=") && !strings.HasPrefix(kv, "PADDOCK_TOKEN=") {
			env = append(env, kv)
		}
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(env, "PADDOCK_DATA_DIR="+dataDir)
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := run("sandbox", "ls")
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "sb-") {
			if _, err := run("sandbox", "rm", f[0]); err != nil {
				t.Logf("cleanup after a failure: delete %s: %v", f[0], err)
			}
		}
	}
}

// clientConfig waits for the client.json serve writes into dataDir and
// returns the server's URL and admin token.
func (p *serveProc) clientConfig(t *testing.T, dataDir string) (url, token string) {
	t.Helper()
	path := filepath.Join(dataDir, "client.json")
	var cc struct{ URL, Token string }
	for deadline := time.Now().Add(90 * time.Second); ; {
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &cc) == nil && cc.Token != "" {
			return cc.URL, cc.Token
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve wrote no client.json\n%s\n%s", p.out.String(), p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitOutput returns serve's stdout once it holds want, or fails the test
// after 30 s. serve prints its banner after it writes client.json, so a
// test that just read client.json can be ahead of the banner.
func (p *serveProc) waitOutput(t *testing.T, want string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		out := p.out.String()
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve's output lacks %q:\n%s", want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cliRunner runs the paddock CLI against a server: in dir, with env, each
// call bounded by its timeout. It returns stdout, stderr and the exit code.
func cliRunner(t *testing.T, bin, dir string, env []string) func(timeout time.Duration, args ...string) (string, string, int) {
	return func(timeout time.Duration, args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env, cmd.Dir = env, dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("paddock %v: %v", args, err)
		}
		return stdout.String(), stderr.String(), code
	}
}
