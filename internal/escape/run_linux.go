package escape

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/escape/wire"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Run runs the battery in tg.Agent's sandbox as the user and with sudo,
// then kill(-1) from both against host canaries, and fails t for every
// escape, every inconclusive check, and every knownOpen entry that no
// longer holds. It returns the findings for callers that check more.
func Run(t *testing.T, tg Target) []Finding {
	t.Helper()
	if tg.Agent == nil || tg.Driver == "" {
		t.Fatal("escape.Run: a Target needs an Agent and a Driver")
	}
	probe, err := probeOnce()
	if err != nil {
		t.Fatalf("escape: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	info, err := tg.Agent.Ping(ctx)
	if err != nil {
		t.Fatalf("escape: ping the agent: %v", err)
	}
	user := info.RunAs()

	canaryFile := hostCanaryFile(t)
	marker := "paddock-escape-canary-" + randHex(6)
	canaries := []*canary{
		startCanary(t, probe, marker, 0, 0),
		startCanary(t, probe, marker, user.UID, user.GID),
	}

	if err := Install(ctx, tg.Agent); err != nil {
		t.Fatalf("escape: %v", err)
	}
	args := []string{"-allowed-caps", strings.Join(sandbox.Capabilities, ","), "-suid", Dir + "/probe-suid",
		"-marker", marker, "-host-pid", strconv.Itoa(os.Getpid())}
	for _, c := range canaries {
		args = append(args, "-host-pid", strconv.Itoa(c.cmd.Process.Pid))
	}
	if sentryDrivers[tg.Driver] {
		v, err := os.ReadFile("/proc/version")
		if err != nil {
			t.Fatalf("escape: the host's kernel version: %v", err)
		}
		args = append(args, "-sentry", "-host-kernel", strings.TrimSpace(string(v)))
	}
	if v, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances"); err == nil {
		args = append(args, "-inotify-limit", strings.TrimSpace(string(v)))
	}
	if exe, err := os.Executable(); err == nil {
		args = append(args, "-host-file", exe)
	}
	for _, f := range append([]string{canaryFile}, tg.HostFiles...) {
		args = append(args, "-host-file", f)
	}
	for _, a := range tg.Connect {
		args = append(args, "-connect", a.String())
	}
	for _, a := range tg.DNS {
		args = append(args, "-dns", a.String())
	}
	for _, s := range tg.Sockets {
		args = append(args, "-unix", s)
	}

	var findings []Finding
	sudoResults, err := RunProbe(ctx, tg.Agent, true, args...)
	if err != nil {
		t.Fatalf("escape: sudo run: %v", err)
	}
	findings = append(findings, tag(Sudo, sudoResults)...)
	userArgs, stopHolder := args, func() {}
	if tg.Peer != nil {
		stopHolder = holdInotify(t, ctx, tg.Peer)
		userArgs = append(userArgs, "-inotify-held", strconv.Itoa(peerHeld))
	}
	userResults, err := RunProbe(ctx, tg.Agent, false, userArgs...)
	stopHolder()
	if err != nil {
		t.Fatalf("escape: user run: %v", err)
	}
	findings = append(findings, tag(User, userResults)...)
	findings = append(findings, killAll(t, ctx, tg.Agent, canaries)...)

	judge(t, tg.Driver, findings)
	return findings
}

// sentryDrivers are the drivers whose sandboxes run on gVisor's sentry, a
// kernel of their own: its /proc, /sys, cgroupfs and /dev are sentry code,
// not views of the host kernel's, so the probe judges what they grant
// (-sentry) rather than that they open, given proof that /proc is not the
// host's (-host-kernel).
var sentryDrivers = map[string]bool{"gvisor": true}

// hostCanaryFile makes a file only the host has, at a path no sandbox has.
func hostCanaryFile(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "paddock-escape-host-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "secret")
	if err := os.WriteFile(p, []byte("paddock host canary "+randHex(8)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// canary is a host process a sandbox must not reach: it reports every
// signal it gets on stdout and exits when its stdin closes.
type canary struct {
	uid   uint32
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string      // guarded by mu: what it printed after "ready"
	done  chan struct{} // closed when it has exited
	err   error         // its exit, once done is closed
}

// startCanary starts the probe as a host canary with uid and gid, in the
// test's own process group (where a process-group signal would land), its
// argv[0] the marker the probe looks for.
func startCanary(t *testing.T, probe, marker string, uid, gid uint32) *canary {
	t.Helper()
	c := &canary{uid: uid, done: make(chan struct{})}
	c.cmd = exec.Command(probe, "-canary")
	c.cmd.Args[0] = marker
	if uid != 0 || gid != 0 {
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("escape: start a host canary as uid %d: %v", uid, err)
	}
	c.stdin = stdin
	ready := make(chan struct{})
	go func() { // owned by the canary: ends when it exits
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first && sc.Text() == "ready" {
				first = false
				close(ready)
				continue
			}
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	select {
	case <-ready:
	case <-c.done:
		t.Fatalf("escape: the host canary (uid %d) exited at start: %v", uid, c.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("escape: the host canary (uid %d) never said ready", uid)
	}
	return c
}

// hurt says what reached the canary, "" if nothing did.
func (c *canary) hurt() string {
	select {
	case <-c.done:
		return fmt.Sprintf("the uid-%d canary (pid %d) died: %v", c.uid, c.cmd.Process.Pid, c.err)
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) > 0 {
		return fmt.Sprintf("the uid-%d canary (pid %d) got %q", c.uid, c.cmd.Process.Pid, c.lines)
	}
	return ""
}

// killAll runs kill(-1) in the sandbox as the user and with sudo, first
// with SIGWINCH (ignored by default, so a pid namespace that failed would
// not take the host down) and only then with SIGKILL; after each the host
// canaries, this process and the agent must be untouched.
func killAll(t *testing.T, ctx context.Context, c *agent.Client, canaries []*canary) []Finding {
	t.Helper()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	evidence := map[Who][]string{}
	tried := map[Who][]string{}
	for _, sig := range []string{"WINCH", "KILL"} {
		for _, who := range []Who{User, Sudo} {
			rs, err := RunProbe(ctx, c, who == Sudo, "-kill", sig)
			if err != nil {
				t.Fatalf("escape: kill(-1, SIG%s) as %s: %v", sig, who, err)
			}
			tried[who] = append(tried[who], rs[0].Detail)
			time.Sleep(200 * time.Millisecond) // signals are delivered at once; leave room anyway
			for _, cn := range canaries {
				if h := cn.hurt(); h != "" {
					evidence[who] = append(evidence[who], fmt.Sprintf("after kill(-1, SIG%s): %s", sig, h))
				}
			}
			select {
			case <-winch:
				evidence[who] = append(evidence[who], "the test process got SIGWINCH")
			default:
			}
			if _, err := c.Ping(ctx); err != nil {
				evidence[who] = append(evidence[who], fmt.Sprintf("after kill(-1, SIG%s) the agent does not answer: %v", sig, err))
			}
			if len(evidence[who]) > 0 {
				// Nothing past a signal that got out: SIGKILL next would
				// reach the host too.
				return killFindings(evidence, tried)
			}
		}
	}
	return killFindings(evidence, tried)
}

func killFindings(evidence, tried map[Who][]string) []Finding {
	var out []Finding
	for _, who := range []Who{User, Sudo} {
		r := wire.Result{Check: "kill-all", Status: wire.Blocked,
			Detail: strings.Join(tried[who], "; ") + "; the host canaries (root and the user's uid), this process and the agent are untouched"}
		if len(evidence[who]) > 0 {
			r.Status, r.Detail = wire.Escaped, strings.Join(evidence[who], "; ")
		}
		out = append(out, Finding{Who: who, Result: r})
	}
	return out
}

// holdInotify makes the peer sandbox's user hold peerHeld inotify
// instances until the returned stop is called.
func holdInotify(t *testing.T, ctx context.Context, peer *agent.Client) (stop func()) {
	t.Helper()
	if err := Install(ctx, peer); err != nil {
		t.Fatalf("escape: peer: %v", err)
	}
	cmd, err := peer.Start(ctx, agent.CommandRequest{Cmd: Dir + "/probe", Args: []string{"-hold-inotify", strconv.Itoa(peerHeld)}, TimeoutMs: 5 * 60 * 1000})
	if err != nil {
		t.Fatalf("escape: peer: start the holder: %v", err)
	}
	stop = func() {
		_ = peer.Signal(ctx, cmd.ID, int(syscall.SIGKILL))
		_, _ = peer.Wait(ctx, cmd.ID)
	}
	out, err := peer.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		stop()
		t.Fatalf("escape: peer: holder output: %v", err)
	}
	defer out.Close()
	var got bytes.Buffer
	for !strings.Contains(got.String(), "holding") {
		f, err := out.Next()
		if err != nil {
			stop()
			t.Fatalf("escape: peer: the holder ended before holding (%v): %q", err, got.String())
		}
		got.Write(f.Data)
	}
	return stop
}
