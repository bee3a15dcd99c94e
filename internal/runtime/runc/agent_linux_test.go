package runc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// captured collects the lines of agent output a driver logged.
type captured struct {
	mu    sync.Mutex
	lines []string
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *captured) WithGroup(string) slog.Handler            { return c }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "agent output" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "line" {
			c.mu.Lock()
			c.lines = append(c.lines, a.Value.String())
			c.mu.Unlock()
		}
		return true
	})
	return nil
}

// waitFor waits until a captured line contains s.
func (c *captured) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, l := range c.lines {
			if strings.Contains(l, s) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no agent output line with %q logged", s)
}

func capturingDriver(t *testing.T, dataDir string) (*Driver, *captured) {
	t.Helper()
	c := &captured{}
	d, err := New(Config{DataDir: dataDir, AgentPath: testAgent(t), Logger: slog.New(c)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, c
}

// run runs a command in the sandbox and returns its exit code and output.
func run(t *testing.T, c *agent.Client, req agent.CommandRequest) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := c.Run(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(ctx, done.ID, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var b strings.Builder
	for {
		f, err := out.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == agent.FrameStdout || f.Kind == agent.FrameStderr {
			b.Write(f.Data)
		}
	}
	return *done.ExitCode, b.String()
}

// TestAgentProtected: sudo commands are root with the agent's capabilities,
// yet cannot reach the agent through /proc: it is not dumpable.
func TestAgentProtected(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d := newDriver(t, dataDir)
	id := "rt-prot-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	c, err := d.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(ctx, id) })
	for _, tc := range []struct{ name, script string }{
		{"write the agent's stdout", "echo x >> /proc/1/fd/1"},
		{"write the agent's stderr", "echo x > /proc/1/fd/2"},
		{"open the agent's stdin", "exec 4</proc/1/fd/0"},
		{"read where the agent's fds lead", "readlink -v /proc/1/fd/3"},
		{"open the agent's memory", "exec 3</proc/1/mem"},
		{"open the agent's memory for writing", "exec 3<>/proc/1/mem"},
		{"read the agent's environment", "cat /proc/1/environ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(t, c, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", tc.script}, Sudo: true})
			if code == 0 || !strings.Contains(out, "ermission denied") {
				t.Errorf("sudo %q: exit %d, %q; want permission denied", tc.script, code, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id, "agent.log")); err == nil {
		t.Errorf("an agent.log file on the host")
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dataDir, "runc", id, outputName), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("the agent's output is not a FIFO: %v", err)
	}
}

// TestAgentOutput: the agent's output reaches the driver's log, and again
// after a restarted driver adopts the sandbox; with nobody reading in
// between, the agent carries on.
func TestAgentOutput(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d1, log1 := capturingDriver(t, dataDir)
	id := "rt-out-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	_, err := d1.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d1.Destroy(ctx, id) })
	log1.waitFor(t, "paddock-agent serving")
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// Nobody reads: the agent's log lines are dropped, the agent serves on.
	// (The driver's client is gone with it; dial the socket by its path.)
	direct := agent.UnixClient(filepath.Join(dataDir, "runc", id, sockName))
	defer direct.Close()
	for i := range 20 {
		if code, _ := run(t, direct, agent.CommandRequest{Cmd: "echo", Args: []string{"unread-" + strconv.Itoa(i)}}); code != 0 {
			t.Fatalf("command while nobody reads the agent's output: exit %d", code)
		}
	}

	d2, log2 := capturingDriver(t, dataDir)
	t.Cleanup(func() { _ = d2.Destroy(ctx, id) })
	c2, err := d2.Agent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	done, err := c2.Run(ctx, agent.CommandRequest{Cmd: "echo", Args: []string{"adopted"}})
	if err != nil {
		t.Fatal(err)
	}
	log2.waitFor(t, done.ID) // the agent's "command started" line names it
}

// yesSeconds is how long TestYesLeavesLogCap runs yes; PADDOCK_YES_SECONDS
// makes it the acceptance test's minute.
func yesSeconds() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("PADDOCK_YES_SECONDS")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 3 * time.Second
}

// hostBytes is the disk space the files under dir take, not crossing into
// other filesystems (the rootfs overlay, its lower layers).
func hostBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var top syscall.Stat_t
	if err := syscall.Stat(dir, &top); err != nil {
		t.Fatal(err)
	}
	var total int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.IsDir() && st.Dev != top.Dev {
			return filepath.SkipDir
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestYesLeavesLogCap (issue 12's acceptance): yes run in a sandbox leaves
// nothing on the host's disk and at most the log cap in the sandbox's
// memory; the log still reads from the start, as a gap and the newest
// output.
func TestYesLeavesLogCap(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d := newDriver(t, dataDir)
	id := "rt-yes-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	res := sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 64}
	c, err := d.Create(ctx, runtime.Spec{ID: id, Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(ctx, id) })
	hostDir := filepath.Join(dataDir, "runc", id)
	before := hostBytes(t, hostDir)

	took := yesSeconds()
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "yes", TimeoutMs: took.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, took+30*time.Second)
	defer cancel()
	done, err := c.Wait(wctx, cmd.ID)
	if err != nil || done.Status != agent.StatusTimedOut {
		t.Fatalf("yes: %+v %v", done, err)
	}
	after := hostBytes(t, hostDir)

	_, kept := run(t, c, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", "cat /run/paddock/* | wc -c; df -k /run/paddock | tail -1"}, Sudo: true})
	fields := strings.Fields(kept)
	logBytes, _ := strconv.ParseInt(fields[0], 10, 64)
	st, err := d.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(ctx, cmd.ID, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	first, err := out.Next()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("yes for %v: host dir %d -> %d bytes; dropped %d bytes of log, kept %d; tmpfs %v; sandbox memory %d MiB (peak %d MiB)",
		took, before, after, first.Dropped, logBytes, fields[1:], st.MemoryBytes>>20, st.MemoryPeak>>20)
	if after-before > 1<<20 {
		t.Errorf("the sandbox's host dir grew by %d bytes", after-before)
	}
	if logBytes == 0 || logBytes > agent.DefaultMaxLogBytes {
		t.Errorf("%d bytes of log kept, cap %d", logBytes, agent.DefaultMaxLogBytes)
	}
	if first.Kind != agent.FrameGap {
		t.Errorf("the log from its start: first frame kind %d, want a gap", first.Kind)
	}
}

// records keeps every record's message and line attribute.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (c *records) Enabled(context.Context, slog.Level) bool { return true }
func (c *records) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *records) WithGroup(string) slog.Handler            { return c }
func (c *records) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool {
		s += " " + a.Key + "=" + a.Value.String()
		return true
	})
	c.mu.Lock()
	c.msgs = append(c.msgs, s)
	c.mu.Unlock()
	return nil
}

// TestAgentOutputReader: lines are logged up to a rate, cut to a length,
// and the end of the output is kept for error messages.
func TestAgentOutputReader(t *testing.T) {
	dir := t.TempDir()
	rec := &records{}
	o, w, err := newAgentOutput(dir, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	var sent strings.Builder
	sent.WriteString(strings.Repeat("z", 3*outputLine) + "\n") // one long line
	for i := range outputBurst + 50 {
		fmt.Fprintf(&sent, `{"level":"INFO","msg":"line %d"}`+"\n", i)
	}
	sent.WriteString("last words\n")
	if _, err := io.WriteString(w, sent.String()); err != nil {
		t.Fatal(err)
	}
	w.Close() // the agent is gone: the reader sees EOF
	tail := o.tailText(10 * time.Second)
	select {
	case <-o.done:
	default:
		t.Fatal("the reader did not end at EOF")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var lines int
	for i, m := range rec.msgs {
		if strings.HasPrefix(m, "agent output ") {
			lines++
			if len(m) > outputLine+64 {
				t.Errorf("record %d is %d bytes long", i, len(m))
			}
		}
	}
	if lines != outputBurst || !strings.Contains(rec.msgs[len(rec.msgs)-1], "lines=52") {
		t.Errorf("%d lines logged, last record %q; want %d and 52 not logged", lines, rec.msgs[len(rec.msgs)-1], outputBurst)
	}
	if !strings.HasSuffix(tail, "last words") || len(tail) > outputTail+64 {
		t.Errorf("tail of %d bytes ends %q", len(tail), tail[max(0, len(tail)-20):])
	}
}
