// Command paddock-agent runs as PID 1 inside every paddock sandbox: it
// reaps orphans, runs commands, streams their output and serves files over
// HTTP on a unix socket the driver passes in. It must stay static
// (CGO_ENABLED=0), so nothing in its import graph may need cgo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == agent.WarmArg {
		return // a warm-up (agent.Server's handleWarm): forked only to be reaped
	}
	// The init container of a Kubernetes sandbox runs the agent's own
	// image, which holds nothing else: the agent copies itself (and the
	// sandbox's credential) into the Pod's shared volumes.
	if len(os.Args) > 1 && os.Args[1] == "install" {
		if err := agent.Install(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "paddock-agent install:", err)
			os.Exit(1)
		}
		return
	}
	// First of all: until this, a sudo command could open the agent's
	// /proc/1/mem, fd/* and environ. No command runs before the agent
	// serves, so nothing can have opened them yet.
	if err := agent.Protect(); err != nil {
		fmt.Fprintln(os.Stderr, "paddock-agent:", err)
		os.Exit(1)
	}
	// stderr is a pipe paddock reads with a cap; the agent never blocks on it.
	out, err := agent.OutputWriter(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "paddock-agent:", err)
		os.Exit(1)
	}
	log := slog.New(slog.NewJSONHandler(out, nil))
	slog.SetDefault(log)
	if err := run(context.Background(), os.Args[1:], log); err != nil {
		log.Error("paddock-agent failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("paddock-agent", flag.ContinueOnError)
	listenFD := fs.Int("listen-fd", agent.ListenFD, "file descriptor of the listening unix socket")
	listen := fs.String("listen", "", "listen on this unix socket path instead of --listen-fd (dev and tests)")
	listenTCP := fs.String("listen-tcp", "", "listen on this TCP address instead (a Pod: \":7070\"); needs --token-file")
	tokenFile := fs.String("token-file", "", "read the credential every request must carry from this file, then remove it")
	stateDir := fs.String("state-dir", agent.StateDir, "directory for command logs")
	noSeccomp := fs.Bool("no-seccomp", false, "do not install the seccomp filter (tests on the host only)")
	imageUser := fs.String("user", "", "the image config's User, resolved against this root's /etc/passwd and /etc/group (default: uid 1000)")
	logMax := fs.Int64("log-max-bytes", agent.DefaultMaxLogBytes, "bytes kept of each command's output; the oldest are dropped past it")
	logTotal := fs.Int64("log-total-bytes", agent.DefaultMaxLogTotalBytes, "bytes kept of all commands' output together (the size of the state dir's tmpfs)")
	tasksPerUser := fs.Uint64("tasks-per-user", 0, "cap each user's processes and threads (RLIMIT_NPROC, hard and soft), for the agent and every command (for a Pod in a user namespace of its own, whose cgroup's pids limit is the node's)")
	baseRoot := fs.String("base-root", "", "the sandbox's image as it was, mounted read-only here: the changes stream says what each changed directory held in it (a Pod whose image paddock does not hold)")
	memLimit := fs.Int64("memory-limit", 0, "a memory limit in bytes the agent enforces itself, killing the biggest process past it (for gVisor, whose sentry enforces none)")
	spareThreads := fs.Int("spare-threads", 0, "hold this many idle OS threads from the start, so that a fork bomb filling the sandbox's task limit never leaves the agent needing a new one (gVisor, whose sentry counts the agent's threads against the sandbox's limit and whose slower system calls make the runtime ask for more)")
	var ownIfEmpty []string
	fs.Func("own-if-empty", "give this directory (a volume claim's mount) to the sandbox user at start if it is empty; repeatable", func(dir string) error {
		ownIfEmpty = append(ownIfEmpty, dir)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}

	// Register before anything else: as PID 1 we only get the signals we
	// handle, and SIGTERM is how the driver asks us to stop.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Before the listener: no request is served without the credential,
	// and no command ever runs while its file exists.
	var token string
	if *tokenFile != "" {
		t, err := agent.TakeToken(*tokenFile)
		if err != nil {
			return err
		}
		token = t
	}
	if *listenTCP != "" && token == "" {
		return errors.New("--listen-tcp needs --token-file: anything on the network could reach the agent")
	}
	var ln net.Listener
	var err error
	var ownPort int
	if *listenTCP != "" {
		if ln, err = net.Listen("tcp", *listenTCP); err != nil {
			return fmt.Errorf("listen on %s: %w", *listenTCP, err)
		}
		ownPort = ln.Addr().(*net.TCPAddr).Port
	} else if ln, err = listener(*listen, *listenFD); err != nil {
		return err
	}
	defer ln.Close()

	if *tasksPerUser > 0 {
		// Set on PID 1 before any command exists, so every command
		// inherits it; no one inside can raise a hard limit (that takes
		// CAP_SYS_RESOURCE in the host's user namespace).
		if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: *tasksPerUser, Max: *tasksPerUser}); err != nil {
			return fmt.Errorf("set the tasks-per-user limit: %w", err)
		}
	}
	// Before any command: later, the sandbox's processes may hold every
	// task its limit allows.
	agent.SpareThreads(*spareThreads)
	seccompOn := false
	if !*noSeccomp {
		// Before serving, so no request runs without the filter; it covers
		// every thread (TSYNC) and every command forked later.
		if err := agent.InstallSeccomp(); err != nil {
			return err
		}
		seccompOn = true
	}
	srv, err := agent.NewServer(agent.ServerConfig{
		StateDir:         *stateDir,
		ImageUser:        *imageUser,
		BaseRoot:         *baseRoot,
		OwnIfEmpty:       ownIfEmpty,
		MaxLogBytes:      *logMax,
		MaxLogTotalBytes: *logTotal,
		MemoryLimit:      *memLimit,
		ReapAll:          true,
		Version:          version,
		Seccomp:          seccompOn,
		Token:            token,
		OwnPort:          ownPort,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("paddock-agent serving", "version", version, "pid", os.Getpid(), "addr", ln.Addr().String(), "seccomp", seccompOn)
	return srv.Serve(ctx, ln)
}

func listener(path string, fd int) (net.Listener, error) {
	if path != "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
		return ln, nil
	}
	f := os.NewFile(uintptr(fd), "agent-listener")
	if f == nil {
		return nil, fmt.Errorf("listen fd %d is not open", fd)
	}
	ln, err := net.FileListener(f)
	// FileListener dups the fd close-on-exec; the inherited one is not, and
	// would leak the agent socket into every command.
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listen fd %d: %w", fd, err)
	}
	return ln, nil
}
