// Command probe is paddock's escape battery: run inside a sandbox, as the
// sandbox user and with sudo, it tries every way out it knows (host files
// through /proc, kernel memory, sysctls, mounts, namespaces, devices,
// modules, the clock, raw sockets, bpf, perf, keyrings, kexec, file handles,
// io_uring, userfaultfd, chroot, ptrace of PID 1, setuid, cgroups, the
// agent's socket, other sandboxes over the network, ...) and prints one
// wire.Result per check: blocked, escaped (with the evidence), skipped or
// error. internal/escape builds it, copies it into a sandbox through the
// agent, runs it and fails the test on every escape.
//
// Every check runs in a child process of its own (the probe re-executes
// itself with -check NAME), so a check that changes its process (chroot,
// setns), is killed by seccomp, or hangs cannot spoil the others; each is
// bounded in time. Attacks that would do harm if they worked are made
// harmless by construction: values written are the ones read back, device
// and file opens never write, syscalls take arguments the kernel rejects
// once its permission check has passed (so EPERM tells "refused" apart from
// "allowed"), and kill(-1) is sent only in its own mode, first with SIGWINCH
// (ignored by default) before the runner asks for SIGKILL.
//
// Other modes serve the runner: -canary (a host process that reports the
// signals it gets), -hold-inotify (a second sandbox holding per-uid kernel
// objects), -kill (kill(-1, sig)), -ids (this process's credentials).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/deathsig"
	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// checkTimeout bounds one check's child process.
const checkTimeout = 20 * time.Second

// config is what the runner tells the probe about the host, from flags.
type config struct {
	hostFiles   []string         // host paths the sandbox must not read
	hostPIDs    []int            // host pids the sandbox must not see
	marker      string           // in the host canaries' command lines
	connect     []netip.AddrPort // TCP endpoints the sandbox must not reach
	dns         []netip.AddrPort // resolvers that must not answer the sandbox
	sockets     []string         // unix socket paths (on the host) it must not reach
	allowedCaps uint64           // the capability set root in the sandbox may hold
	capsGiven   bool
	suid        string // a setuid-root, setgid-root copy of the probe
	inotifyHeld int    // inotify instances a peer sandbox's user holds
	// inotifyLimit is the host's max_user_instances, for a kernel that
	// shows none (gVisor's sentry).
	inotifyLimit int
	// sentry: the host says the sandbox's kernel is gVisor's sentry,
	// whose /proc, /sys, cgroupfs and /dev are its own; hostKernel is the
	// host's /proc/version, which the sentry's must differ from.
	sentry     bool
	hostKernel string
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	// Before anything opens a file: what the agent handed this process.
	leaked := leakedFDs()
	if err := run(leaked); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(2)
	}
}

func run(leaked wire.Result) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var hostFiles, hostPIDs, connect, dns, sockets, only listFlag
	fs.Var(&hostFiles, "host-file", "a host path that must stay unreadable (repeatable)")
	fs.Var(&hostPIDs, "host-pid", "a host pid that must stay invisible (repeatable)")
	fs.Var(&connect, "connect", "a TCP address:port that must stay unreachable (repeatable)")
	fs.Var(&dns, "dns", "a DNS resolver address:port that must not answer (repeatable)")
	fs.Var(&sockets, "unix", "a host unix socket path that must stay unreachable (repeatable)")
	fs.Var(&only, "only", "run only this check (repeatable)")
	marker := fs.String("marker", "", "a string in the host canaries' command lines")
	caps := fs.String("allowed-caps", "", "comma-separated capabilities root in the sandbox may hold")
	suid := fs.String("suid", "", "a setuid-root copy of this probe to execute as the user")
	held := fs.Int("inotify-held", 0, "inotify instances a peer sandbox's user holds now")
	inotifyLimit := fs.Int("inotify-limit", 0, "the host's max_user_instances, for a kernel that shows none")
	sentry := fs.Bool("sentry", false, "the sandbox's kernel is gVisor's sentry (its /proc, /sys, cgroupfs and /dev are its own)")
	hostKernel := fs.String("host-kernel", "", "the host's /proc/version, which the sentry's must differ from")
	one := fs.String("check", "", "run one check in this process (internal)")
	list := fs.Bool("list", false, "print the check names and exit")
	killSig := fs.String("kill", "", "send this signal (WINCH or KILL) to every process: kill(-1, sig)")
	canary := fs.Bool("canary", false, "host canary: print the signals received until stdin closes")
	hold := fs.Int("hold-inotify", 0, "hold this many inotify instances until killed")
	ids := fs.Bool("ids", false, "print this process's credentials as JSON")
	noop := fs.Bool("noop", false, "exit 0 at once (a child of the unshare checks)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	switch {
	case *noop:
		return nil
	case *ids:
		return printIDs()
	case *canary:
		return runCanary()
	case *hold > 0:
		return holdInotify(*hold)
	case *list:
		for _, c := range checks {
			fmt.Println(c.name)
		}
		return nil
	}
	cfg := config{hostFiles: hostFiles, marker: *marker, sockets: sockets, suid: *suid, inotifyHeld: *held,
		inotifyLimit: *inotifyLimit, sentry: *sentry, hostKernel: strings.TrimSpace(*hostKernel)}
	for _, p := range hostPIDs {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-host-pid %q: %w", p, err)
		}
		cfg.hostPIDs = append(cfg.hostPIDs, pid)
	}
	for _, l := range []struct {
		in  []string
		out *[]netip.AddrPort
	}{{connect, &cfg.connect}, {dns, &cfg.dns}} {
		for _, a := range l.in {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				return fmt.Errorf("address %q: %w", a, err)
			}
			*l.out = append(*l.out, ap)
		}
	}
	if *caps != "" {
		mask, err := capMask(strings.Split(*caps, ","))
		if err != nil {
			return err
		}
		cfg.allowedCaps, cfg.capsGiven = mask, true
	}

	out := json.NewEncoder(os.Stdout)
	if *killSig != "" {
		r := killAll(*killSig)
		if err := out.Encode(r); err != nil {
			return err
		}
		return out.Encode(wire.Done{Done: true, Checks: 1})
	}
	if *one != "" {
		for _, c := range checks {
			if c.name == *one {
				return out.Encode(c.fn(&cfg))
			}
		}
		return fmt.Errorf("no check %q", *one)
	}

	n := 0
	emit := func(r wire.Result) error {
		n++
		return out.Encode(r)
	}
	for _, name := range only {
		if !slices.ContainsFunc(checks, func(c check) bool { return c.name == name }) && name != "leaked-fds" {
			return fmt.Errorf("-only %q: no such check", name)
		}
	}
	if len(only) == 0 || slices.Contains(only, "leaked-fds") {
		if err := emit(leaked); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own path: %w", err)
	}
	for _, c := range checks {
		if len(only) > 0 && !slices.Contains(only, c.name) {
			continue
		}
		if err := emit(runChild(self, c)); err != nil {
			return err
		}
	}
	return out.Encode(wire.Done{Done: true, Checks: n})
}

// runChild runs one check in a fresh process and reads its one result.
func runChild(self string, c check) wire.Result {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, append([]string{"-check", c.name}, os.Args[1:]...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &limited{buf: &stdout, n: 1 << 20}
	cmd.Stderr = &limited{buf: &stderr, n: 4 << 10}
	cmd.WaitDelay = time.Second
	// Its own session (no controlling terminal for vhangup to hang up, no
	// process group shared with this one); it dies with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err := deathsig.Run(cmd)
	var r wire.Result
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		if json.Unmarshal([]byte(line), &r) == nil && r.Check == c.name {
			break
		}
	}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return wire.Result{Check: c.name, Status: wire.Error, Detail: fmt.Sprintf("no answer in %s; stderr %q", checkTimeout, stderr.String())}
	case r.Check == c.name && err == nil:
		return r
	case errors.As(err, &exit) && c.sigsysBlocks && signalOf(exit) == syscall.SIGSYS:
		return wire.Result{Check: c.name, Status: wire.Blocked, Detail: "killed by SIGSYS: the seccomp filter kills the attempt"}
	case r.Check == c.name:
		return wire.Result{Check: c.name, Status: wire.Error, Detail: fmt.Sprintf("%s (%s: %v, stderr %q)", r.Detail, r.Status, err, stderr.String())}
	default:
		return wire.Result{Check: c.name, Status: wire.Error, Detail: fmt.Sprintf("check process: %v; stderr %q", err, stderr.String())}
	}
}

func signalOf(e *exec.ExitError) syscall.Signal {
	if ws, ok := e.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// limited keeps at most n bytes of a child's output.
type limited struct {
	buf *bytes.Buffer
	n   int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// killAll sends sig to every process it may signal: in a sandbox, only the
// sandbox's own (not PID 1, not this one). The host's canaries say whether
// any escaped the pid namespace; this side only reports what kill said.
func killAll(name string) wire.Result {
	sig := map[string]unix.Signal{"WINCH": unix.SIGWINCH, "KILL": unix.SIGKILL}[name]
	if sig == 0 {
		return wire.Result{Check: "kill-all", Status: wire.Error, Detail: "unknown signal " + name}
	}
	err := unix.Kill(-1, sig)
	return wire.Result{Check: "kill-all", Status: wire.Blocked,
		Detail: fmt.Sprintf("kill(-1, SIG%s): %s; the host checks its canaries", name, errText(err))}
}

// runCanary is a host process that must outlive every sandbox's kill(-1):
// it prints "ready", then a line per signal it gets, and exits when its
// stdin closes (so it never outlives the runner).
func runCanary() error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGWINCH, unix.SIGHUP, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2)
	fmt.Println("ready")
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	for {
		select {
		case s := <-sigs:
			fmt.Println("signal", s)
		case <-eof:
			return nil
		}
	}
}

// holdInotify holds n inotify instances as this process's uid, prints
// "holding n", and waits to be killed (at most ten minutes).
func holdInotify(n int) error {
	for i := range n {
		if _, err := unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
			return fmt.Errorf("inotify instance %d of %d: %w", i+1, n, err)
		}
	}
	fmt.Println("holding", n)
	time.Sleep(10 * time.Minute)
	return nil
}

// ids is the -ids mode's answer: what this process runs as.
type ids struct {
	UID, EUID, SUID int
	GID, EGID, SGID int
	CapEff, CapPrm  uint64
}

func printIDs() error {
	var v ids
	v.UID, v.EUID, v.SUID = unix.Getresuid()
	v.GID, v.EGID, v.SGID = unix.Getresgid()
	st, err := procStatus("self")
	if err != nil {
		return err
	}
	v.CapEff, v.CapPrm = st.hex("CapEff"), st.hex("CapPrm")
	return json.NewEncoder(os.Stdout).Encode(v)
}

// status is /proc/<pid>/status as key: value.
type status map[string]string

func procStatus(pid string) (status, error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := status{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st, sc.Err()
}

func (s status) hex(key string) uint64 {
	v, _ := strconv.ParseUint(s[key], 16, 64)
	return v
}
