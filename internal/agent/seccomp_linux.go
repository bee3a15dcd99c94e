//go:build linux

package agent

//go:generate go run ./seccompgen/gen -o seccomp_filter_linux_amd64.go

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// InstallSeccomp loads the filter (SeccompFilter) into every thread of the
// process (TSYNC). The Go runtime starts threads at any time, so a filter
// on one thread only would leave holes.
func InstallSeccomp() error {
	filter, err := SeccompFilter()
	if err != nil {
		return err
	}
	if len(filter) == 0 {
		return fmt.Errorf("seccomp: empty filter")
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// The driver already set it; setting it again is harmless and makes the
	// filter loadable without CAP_SYS_ADMIN wherever we run.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: set no_new_privs: %w", err)
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("seccomp: load filter: %w", errno)
	}
	if r != 0 {
		// With TSYNC a positive result is a thread that could not be synced.
		return fmt.Errorf("seccomp: thread %d could not take the filter", r)
	}
	return nil
}
