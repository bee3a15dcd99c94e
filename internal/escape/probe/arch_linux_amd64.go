package main

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

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

// taskState is a thread's state letter from its stat file, "gone" when
// it has none.
func taskState(task string) string {
	data, err := os.ReadFile(task + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return "gone"
	}
	if err != nil {
		return err.Error()
	}
	_, rest, ok := strings.Cut(string(data), ") ")
	if !ok || rest == "" {
		return "unreadable"
	}
	return rest[:1]
}

// checkX32 makes a syscall through the x32 ABI, which a filter written for
// x86_64 numbers alone would let through. The filter kills the process
// (SIGSYS, which the orchestrator counts as blocked); no core is dumped.
// gVisor's sentry applies SECCOMP_RET_KILL_PROCESS as KILL_THREAD: only
// the calling thread dies, and the process (Go's other threads) lives on
// without an answer. So the call runs on a thread of its own, and that
// thread vanishing from /proc/self/task without an answer is the filter's
// kill too.
func checkX32(cfg *config) wire.Result {
	a := newAttempts("seccomp-x32")
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	type answer struct {
		pid uintptr
		e   unix.Errno
	}
	tids := make(chan int, 1)
	answers := make(chan answer, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread may die here
		tids <- unix.Gettid()
		pid, _, e := unix.RawSyscall(x32Bit|unix.SYS_GETPID, 0, 0, 0)
		answers <- answer{pid, e}
	}()
	task := "/proc/self/task/" + strconv.Itoa(<-tids)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-answers:
			if r.e == 0 {
				a.worked("getpid through the x32 ABI", "answered "+strconv.Itoa(int(r.pid)))
			} else {
				a.refused("getpid through the x32 ABI", r.e)
			}
			return a.result("")
		case <-time.After(20 * time.Millisecond):
			if st := taskState(task); st == "gone" || st == "Z" || st == "X" {
				a.refused("getpid through the x32 ABI", errors.New("its thread died without an answer (state "+st+"): the filter's kill, of the thread only"))
				return a.result("")
			}
		case <-deadline:
			a.failf("getpid through the x32 ABI: no answer in 10s, and its thread %s is in state %s", task, taskState(task))
			return a.result("")
		}
	}
}
