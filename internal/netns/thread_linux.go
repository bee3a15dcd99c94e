package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// onThread runs fn on a fresh goroutine locked to its OS thread, for fn to
// change that thread's network namespace. Afterwards the thread is put back
// in the namespace it started in and released; if that fails it stays
// locked, so the runtime destroys it when the goroutine ends and no other
// goroutine ever runs in the wrong namespace. Restoring matters: Go never
// destroys the main thread, it parks it, and a parked main thread in a
// sandbox's namespace would make /proc/self/ns/net lie to everyone.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return // thread dies locked
		}
		defer orig.Close()
		errc <- fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}

// openOwnNS opens the network namespace paddock's goroutines run in: the
// calling thread's, not /proc/self/ns/net (the main thread's), which other
// code in the process may have moved.
func openOwnNS() (*os.File, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return os.Open("/proc/thread-self/ns/net")
}

// inNS runs fn on a throwaway thread that joined the network namespace fd.
func inNS(fd int, fn func() error) error {
	return onThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

// newPinnedNS creates a network namespace and pins it with a bind mount at
// pin (created here; it must not exist).
func newPinnedNS(pin string) error {
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create pin: %w", err)
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, pin, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	})
	if err != nil {
		os.Remove(pin)
		return err
	}
	return nil
}

// removePin unmounts and removes a pin; a missing pin is not an error.
func removePin(pin string) error {
	err := unix.Unmount(pin, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", pin, err)
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// isNSFS reports whether f is a namespace file (a live pin, not the empty
// file left by a crash between create and mount).
func isNSFS(f *os.File) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == unix.NSFS_MAGIC
}

// sameFile reports whether two open files are the same inode.
func sameFile(a, b *os.File) bool {
	sa, errA := a.Stat()
	sb, errB := b.Stat()
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}
