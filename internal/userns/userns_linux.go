package userns

/*
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PADDOCK_USERNS_STACK (16 * 1024)

// paddock_userns_hold is the whole life of a namespace's holder: it exists
// only so that its user namespace can be given a mapping and joined. It
// shares paddock's memory (CLONE_VM), so it touches nothing but its own
// stack, and it runs with every signal blocked, so no Go signal handler
// ever runs on it; SIGKILL from paddock, or PDEATHSIG when the thread that
// made it ends (with paddock, at the latest), ends it. Raw system calls
// only: libc's wrappers of blocking calls would touch the thread data of
// the paddock thread whose TLS it still points at.
static int paddock_userns_hold(void *arg) {
	long parent = (long)arg;
	syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (syscall(SYS_getppid) != parent)
		syscall(SYS_exit, 0);
	for (;;)
		syscall(SYS_ppoll, NULL, 0, NULL, NULL, 0);
	return 0;
}

// paddock_userns_spawn starts a holder in a new user namespace, owned by
// the calling thread's effective uid, and returns its pid, or -errno.
// *stack is freed by paddock_userns_reap.
static int paddock_userns_spawn(void **stack) {
	sigset_t all, old;
	int pid, err;

	*stack = malloc(PADDOCK_USERNS_STACK);
	if (*stack == NULL)
		return -ENOMEM;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	// CLONE_VM|CLONE_FILES: nothing of paddock's memory or descriptors is
	// copied, which keeps this at a fraction of a millisecond however
	// large paddock is.
	pid = clone(paddock_userns_hold, (char *)*stack + PADDOCK_USERNS_STACK,
		CLONE_NEWUSER | CLONE_VM | CLONE_FILES | SIGCHLD, (void *)(long)getpid());
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		free(*stack);
		*stack = NULL;
		return -err;
	}
	return pid;
}

static void paddock_userns_reap(int pid, void *stack) {
	int status;
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	free(stack);
}
*/
import "C"

import (
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NS is a user namespace with one range's mapping, held by a process of
// paddock's that does nothing else, until Close.
//
// Its owner (the uid that made it, in the host's namespace) is the range's
// first host id, not root: the kernel charges per-user limits (inotify
// instances and watches, message queues, user namespaces) both to the
// user inside and to the namespace's owner outside, so namespaces that
// root made would all draw on root's one count. A sandbox joins this
// namespace rather than getting a new one from its runtime.
type NS struct {
	base uint32
	file *os.File
	pid  int
	path string

	once     sync.Once
	stack    unsafe.Pointer
	released chan struct{} // closed by Close: the spawning thread may end
}

// New makes a user namespace that maps ids 0..Size-1 to host ids
// base..base+Size-1, owned by host uid base.
func New(base uint32) (*NS, error) {
	type spawned struct {
		pid   int
		stack unsafe.Pointer
		err   error
	}
	ch := make(chan spawned, 1)
	released := make(chan struct{})
	go func() {
		// The holder's parent is this thread: its death signal comes when
		// the thread ends. So the thread is parked until Close, and never
		// unlocked, so that Go ends it afterwards instead of running other
		// goroutines with its ids.
		goruntime.LockOSThread()
		// Raw calls: these ids are this thread's alone (Go's own
		// Setresuid would change every thread's).
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(base), ^uintptr(0)); e != 0 {
			ch <- spawned{err: fmt.Errorf("setresgid: %w", e)}
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(base), ^uintptr(0)); e != 0 {
			ch <- spawned{err: fmt.Errorf("setresuid: %w", e)}
			return
		}
		var s spawned
		s.pid = int(C.paddock_userns_spawn(&s.stack))
		if s.pid < 0 {
			s.err = fmt.Errorf("clone: %w", unix.Errno(-s.pid))
			ch <- s
			return
		}
		ch <- s
		<-released
	}()
	s := <-ch
	if s.err != nil {
		return nil, fmt.Errorf("user namespace: %w", s.err)
	}
	n := &NS{base: base, pid: s.pid, stack: s.stack, released: released, path: "/proc/" + strconv.Itoa(s.pid) + "/ns/user"}
	if err := n.init(base); err != nil {
		n.Close()
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	return n, nil
}

func (n *NS) init(base uint32) error {
	dir := "/proc/" + strconv.Itoa(n.pid) + "/"
	// Written from a thread with root's credentials (the holder's parent
	// thread has none left): root in the parent namespace may write any
	// mapping, and setgroups stays allowed, so the sandbox's root may set
	// its groups.
	mapping := []byte("0 " + strconv.FormatUint(uint64(base), 10) + " " + strconv.Itoa(Size) + "\n")
	for _, name := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(dir+name, mapping, 0); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(n.path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	n.file = f
	return nil
}

// File is the namespace's nsfs file, for mount_setattr and setns.
func (n *NS) File() *os.File { return n.file }

// Path names the namespace (/proc/<holder>/ns/user) until Close, for
// runtimes that join a namespace by path.
func (n *NS) Path() string { return n.path }

// Close ends the holder and reaps it. The namespace lives on while
// anything (a sandbox's processes, an idmapped mount) uses it.
func (n *NS) Close() error {
	n.once.Do(func() {
		if n.file != nil {
			n.file.Close()
		}
		C.paddock_userns_reap(C.int(n.pid), n.stack)
		close(n.released)
	})
	return nil
}

// Clone returns a detached clone (open_tree OPEN_TREE_CLONE) of the mount
// at path, not its submounts, whose ids are shifted through ns: a file
// stored with uid n shows as host uid base+n, and a file host uid base+n
// makes is stored with uid n. The caller closes the descriptor; a mount
// made from the clone keeps it.
func Clone(path string, ns *NS) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, &os.PathError{Op: "open_tree", Path: path, Err: err}
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.file.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "idmap mount", Path: path, Err: err}
	}
	return fd, nil
}

// As runs fn on a thread of its own whose filesystem ids are host ids
// base (a sandbox's root) and that keeps this process's capabilities, and
// throws the thread away afterwards. Two things need it: overlayfs records
// its mounter's credentials and makes its work and copy-up files with
// them, which through idmapped layers must be ids the mapping knows (host
// root is not one: EOVERFLOW); and files made in a sandbox's tree through
// idmapped mounts must be made as someone the sandbox knows.
func As(base uint32, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: Go ends the thread with this goroutine, so no
		// other goroutine ever runs with these ids.
		goruntime.LockOSThread()
		done <- func() error {
			// Both per thread in the kernel (x/sys makes the raw calls).
			if err := unix.Setfsgid(int(base)); err != nil {
				return fmt.Errorf("setfsgid: %w", err)
			}
			if err := unix.Setfsuid(int(base)); err != nil {
				return fmt.Errorf("setfsuid: %w", err)
			}
			// Leaving fsuid 0 drops the file capabilities (CAP_CHOWN,
			// CAP_DAC_OVERRIDE, ...) from the effective set: raise them
			// again from the permitted set, which is unchanged.
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var caps [2]unix.CapUserData
			if err := unix.Capget(&hdr, &caps[0]); err != nil {
				return fmt.Errorf("capget: %w", err)
			}
			caps[0].Effective, caps[1].Effective = caps[0].Permitted, caps[1].Permitted
			if err := unix.Capset(&hdr, &caps[0]); err != nil {
				return fmt.Errorf("capset: %w", err)
			}
			return fn()
		}()
	}()
	return <-done
}
