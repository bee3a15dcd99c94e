//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv selects a helper mode when the test binary re-executes itself:
// installing a seccomp filter or becoming a subreaper must not leak into
// the process running the other tests.
const childEnv = "PADDOCK_AGENT_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "seccomp":
		os.Exit(report(seccompChild()))
	case "zombies":
		os.Exit(report(zombieChild()))
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(2)
	}
}

func report(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

func runChild(t *testing.T, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s child: %v\n%s", mode, err, out)
	}
}

func TestSeccompFilterSize(t *testing.T) {
	filter, err := SeccompFilter()
	if err != nil {
		t.Fatal(err)
	}
	if len(filter) < 50 || len(filter) > 4096 {
		t.Fatalf("filter has %d instructions", len(filter))
	}
}

func TestSeccompFilter(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("filter checks written for amd64 and arm64")
	}
	runChild(t, "seccomp")
}

func seccompChild() error {
	if err := InstallSeccomp(); err != nil {
		return err
	}
	var errs []error
	expect := func(what string, want syscall.Errno, err error) {
		if !errors.Is(err, want) {
			errs = append(errs, fmt.Errorf("%s: got %v, want %v", what, err, want))
		}
	}
	expect("unshare(CLONE_NEWUSER)", unix.EPERM, unix.Unshare(unix.CLONE_NEWUSER))
	expect("unshare(CLONE_NEWNS)", unix.EPERM, unix.Unshare(unix.CLONE_NEWNS))
	expect("mount", unix.EPERM, unix.Mount("none", "/mnt", "tmpfs", 0, ""))
	expect("reboot", unix.EPERM, unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF))
	_, _, e := unix.Syscall(unix.SYS_INIT_MODULE, 0, 0, 0)
	expect("init_module", unix.EPERM, e)
	expect("ptrace(PTRACE_ATTACH)", unix.EPERM, unix.PtraceAttach(os.Getppid()))
	_, _, e = unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	expect("clone3", unix.ENOSYS, e)
	_, _, e = unix.Syscall(unix.SYS_BPF, 0, 0, 0)
	expect("bpf", unix.EPERM, e)
	// clone with a namespace flag must be refused.
	_, _, e = unix.RawSyscall(unix.SYS_CLONE, uintptr(unix.CLONE_NEWNET|unix.SIGCHLD), 0, 0)
	expect("clone(CLONE_NEWNET)", unix.EPERM, e)
	// AF_VSOCK is off Docker's domain list (AF_PACKET is on it; the missing
	// CAP_NET_RAW stops that one, not seccomp).
	_, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	expect("socket(AF_VSOCK)", unix.EPERM, err)
	// personality is allowed only for a few values.
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	if e != 0 {
		errs = append(errs, fmt.Errorf("personality(query): %v", e))
	}
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0x0040000, 0, 0)
	expect("personality(ADDR_NO_RANDOMIZE|...)", unix.EPERM, e)

	// What ordinary programs need still works.
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 7"}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		errs = append(errs, fmt.Errorf("fork/exec: %w", err))
	} else {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 7 {
			errs = append(errs, fmt.Errorf("wait: %v status %v", err, ws))
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // forces new OS threads (clone)
			time.Sleep(5 * time.Millisecond)
		}()
	}
	wg.Wait()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		errs = append(errs, fmt.Errorf("AF_INET listen: %w", err))
	} else {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			errs = append(errs, fmt.Errorf("AF_INET dial: %w", err))
		} else {
			c.Close()
		}
		ln.Close()
	}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0); err != nil {
		errs = append(errs, fmt.Errorf("AF_UNIX socket: %w", err))
	} else {
		unix.Close(fd)
	}
	if _, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0); err != nil {
		errs = append(errs, fmt.Errorf("AF_INET6 socket: %w", err))
	}
	return errors.Join(errs...)
}

func TestZombieReaping(t *testing.T) {
	requireRoot(t)
	runChild(t, "zombies")
}

// zombieChild becomes a subreaper, so orphans reparent to it as they would
// to the agent as PID 1, runs a server with ReapAll and checks that no
// zombie child is left.
func zombieChild() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("subreaper: %w", err)
	}
	dir, err := os.MkdirTemp("", "agent-zombies-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := NewServer(ServerConfig{
		StateDir: filepath.Join(dir, "state"), Root: dir, UserHome: "/tmp", ReapAll: true,
		CgroupRoot: filepath.Join(dir, "nocg"),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	c := UnixClient(sock)
	defer c.Close()

	cmd, err := c.Start(ctx, CommandRequest{Cmd: "sh", Args: []string{"-c",
		"for i in 1 2 3 4 5 6 7 8; do (sleep 0.1 &) ; (true &) ; done; exit 0"}})
	if err != nil {
		return err
	}
	if done, err := c.Wait(ctx, cmd.ID); err != nil || done.Status != StatusExited {
		return fmt.Errorf("orphan maker: %+v %v", done, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		kids, zombies := children(os.Getpid())
		if kids == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d children left, %d zombies", kids, zombies)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// children counts the processes whose parent is ppid, and the zombies among them.
func children(ppid int) (kids, zombies int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised comm: state ppid ...
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			kids++
			if f[0] == "Z" {
				zombies++
			}
		}
	}
	return kids, zombies
}
