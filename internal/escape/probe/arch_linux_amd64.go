package main

import (
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// checkIOPort raises the I/O privilege level and asks for port access:
// raw port I/O reaches the machine's hardware.
func checkIOPort(cfg *config) wire.Result {
	a := newAttempts("ioport")
	a.call("iopl(3)", unix.Iopl(3), "raised")
	a.call("ioperm(0x80)", unix.Ioperm(0x80, 1, 1), "granted")
	return a.result("")
}

// x32Bit marks a syscall number as the x32 ABI's; the seccomp filter sees
// the same audit arch as x86_64, so it must check the bit itself.
const x32Bit = 0x40000000

// checkX32 makes a syscall through the x32 ABI, which a filter written for
// x86_64 numbers alone would let through. The filter kills the process
// (SIGSYS, which the orchestrator counts as blocked); no core is dumped.
func checkX32(cfg *config) wire.Result {
	a := newAttempts("seccomp-x32")
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	pid, _, e := unix.RawSyscall(x32Bit|unix.SYS_GETPID, 0, 0, 0)
	if e == 0 {
		a.worked("getpid through the x32 ABI", "answered "+strconv.Itoa(int(pid)))
	} else {
		a.refused("getpid through the x32 ABI", e)
	}
	return a.result("")
}
