//go:build linux

package agent

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// as runs fn as root for a sudo request, else with the filesystem identity
// of the sandbox's user, so that what the API does without sudo is what the
// user could do in a shell: a symlink the user made (home/app -> ../../etc)
// leads a write into /etc only if the user could write there, and a read of
// /root/* or /proc/<a root process>/environ fails as it would for the user.
func (s *Server) as(sudo bool, fn func() error) error {
	if sudo {
		return fn()
	}
	if err := s.usable(); err != nil {
		return err
	}
	return asUser(s.user, fn)
}

// asUser runs fn on a fresh OS thread whose effective uid and gid (and so
// its fsuid and fsgid) and supplementary groups are u's; it returns fn's
// error and re-panics its panic (a handler aborting its answer with
// http.ErrAbortHandler).
//
// A thread, not a helper process forked as the user: Linux keeps
// credentials per thread (the raw setresuid, setresgid and setgroups
// syscalls change only the calling one; Go's syscall.Setresuid and x/sys's
// would change them all), so the agent's own code, os.Root and openat2
// included, runs unchanged and streams straight to and from the
// connection, where a helper would need a second protocol to carry tar
// entries and file contents and a fork per request. Two runtime rules keep
// the identity on this thread: Go never clones new threads from a locked
// one (it asks its template thread), and a goroutine that exits locked
// takes its thread with it, so the thread is never handed back to other
// goroutines. fn must do its file work on the calling goroutine.
//
// The effective ids, not setfsuid/setfsgid: gVisor's sentry has no
// fsuid (it answers setfsuid with ENOSYS), and checks file access against
// the effective ids, as Linux does through the fsuid that follows them.
// Only the effective ids change: the real and saved ones stay root's, so
// no process of the user's may signal or trace the thread, and it keeps
// no effective capability (the kernel clears them all when the effective
// uid leaves 0, where a changed fsuid dropped only the file ones).
// /proc checks access against the fsuid (PTRACE_MODE_FSCREDS), the user's.
func asUser(u User, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		defer func() {
			if p := recover(); p != nil {
				done <- result{panicked: true, value: p}
			}
		}()
		if err := setThreadIdentity(u); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{err: fn()}
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// keep is the -1 of setresuid and setresgid: leave that id as it is.
const keep = ^uintptr(0)

// setThreadIdentity gives the calling thread u's groups and effective uid
// and gid, with raw syscalls so that only this thread changes; the ids are
// read back.
func setThreadIdentity(u User) error {
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("agent: set groups of uid %d: %w", u.UID, err)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(u.GID), keep); errno != 0 {
		return fmt.Errorf("agent: set the effective gid %d: %w", u.GID, errno)
	}
	if _, egid, _ := unix.Getresgid(); egid != int(u.GID) {
		return fmt.Errorf("agent: effective gid is %d, want %d", egid, u.GID)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(u.UID), keep); errno != 0 {
		return fmt.Errorf("agent: set the effective uid %d: %w", u.UID, errno)
	}
	if _, euid, _ := unix.Getresuid(); euid != int(u.UID) {
		return fmt.Errorf("agent: effective uid is %d, want %d", euid, u.UID)
	}
	return nil
}
