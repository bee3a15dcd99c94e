//go:build linux

package agent

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Protect makes the agent non-dumpable. Sudo commands run as root with
// the agent's own capabilities, and the kernel lets a process with the same
// uid and no fewer capabilities open a dumpable process's /proc/<pid>/mem,
// fd/* and environ, or ptrace it; a non-dumpable one only to holders of
// CAP_SYS_PTRACE, which no sandbox process has. So no process of the
// sandbox can write into the agent's memory or reach its descriptors (the
// socket paddock talks to, the pipe of its own output). Commands it starts
// are dumpable again after their execve, as usual.
func Protect() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("agent: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// maxLogLine is PIPE_BUF: a write of at most this many bytes to a pipe is
// atomic, so a line is either in the pipe whole or not at all.
const maxLogLine = 4096

// OutputWriter returns a writer for the agent's log lines on f, its
// stdout or stderr: a pipe that paddock reads. It never blocks and never
// fails: a line the pipe has no room for now (paddock busy, or restarting
// and not reading yet) is dropped, a longer one is cut to maxLogLine. PID 1
// must not hang on its own logging. Anything but a pipe (a terminal, in
// development) is written to as it is: O_NONBLOCK would leak to the
// terminal's other users.
func OutputWriter(f *os.File) (io.Writer, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("agent: stat output: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return f, nil
	}
	// O_NONBLOCK is shared by every descriptor of this pipe end, which
	// only the agent holds.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("agent: non-blocking output: %w", err)
	}
	return &outputWriter{fd: fd}, nil
}

type outputWriter struct {
	mu sync.Mutex // one line at a time
	fd int
}

func (w *outputWriter) Write(p []byte) (int, error) {
	line := p
	if len(line) > maxLogLine {
		line = append(line[:maxLogLine-1:maxLogLine-1], '\n')
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// A raw write: EAGAIN and EPIPE come back as errors to ignore, where
	// os.File would turn EPIPE on fd 1 or 2 into death by SIGPIPE.
	for {
		_, err := unix.Write(w.fd, line)
		if err != unix.EINTR {
			return len(p), nil
		}
	}
}
