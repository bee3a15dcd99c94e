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

// asUser runs fn on a fresh OS thread whose fsuid, fsgid and supplementary
// groups are u's; it returns fn's error and re-panics its panic (a handler
// aborting its answer with http.ErrAbortHandler).
//
// A thread, not a helper process forked as the user: Linux keeps
// credentials per thread (setfsuid, setfsgid and the raw setgroups of
// x/sys/unix change only the calling one), so the agent's own code,
// os.Root and openat2 included, runs unchanged and streams straight to and
// from the connection, where a helper would need a second protocol to
// carry tar entries and file contents and a fork per request. Two runtime
// rules keep the identity on this thread: Go never clones new threads from
// a locked one (it asks its template thread), and a goroutine that exits
// locked takes its thread with it, so the thread is never handed back to
// other goroutines. fn must do its file work on the calling goroutine.
//
// With a non-zero fsuid the kernel also drops the file capabilities
// (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER...) from the thread's effective
// set, and /proc checks access against the fsuid (PTRACE_MODE_FSCREDS).
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
		if err := setFSIdentity(u); err != nil {
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

// setFSIdentity gives the calling thread u's filesystem identity. The
// fsuid and fsgid calls report no errors, so each is read back.
func setFSIdentity(u User) error {
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("agent: set groups of uid %d: %w", u.UID, err)
	}
	unix.SetfsgidRetGid(int(u.GID))
	if got, _ := unix.SetfsgidRetGid(-1); got != int(u.GID) {
		return fmt.Errorf("agent: fsgid is %d, want %d", got, u.GID)
	}
	unix.SetfsuidRetUid(int(u.UID))
	if got, _ := unix.SetfsuidRetUid(-1); got != int(u.UID) {
		return fmt.Errorf("agent: fsuid is %d, want %d", got, u.UID)
	}
	return nil
}
