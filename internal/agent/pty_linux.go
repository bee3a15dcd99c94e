//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// output is one file the supervisor copies into a command's log.
type output struct {
	f    *os.File
	kind byte
}

// stdio is a command's standard streams: the child's ends, handed to fork
// and closed right after it, and the agent's ends, which the supervisor
// reads (outputs) and the stdin route writes (command.stdin).
type stdio struct {
	child   []*os.File // stdin, stdout, stderr; one terminal thrice
	outputs []output
}

// files is what ForkExec puts on the child's fds 0, 1 and 2.
func (io *stdio) files() []uintptr {
	if len(io.child) == 1 {
		fd := io.child[0].Fd()
		return []uintptr{fd, fd, fd}
	}
	return []uintptr{io.child[0].Fd(), io.child[1].Fd(), io.child[2].Fd()}
}

func (io *stdio) closeChild() {
	for _, f := range io.child {
		f.Close()
	}
}

// closeOurs closes the agent's ends of a command that did not start.
func (io *stdio) closeOurs(c *command) {
	for _, o := range io.outputs {
		o.f.Close()
	}
	c.mu.Lock()
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
	}
	c.pty = nil
	c.mu.Unlock()
}

// openStdio makes the command's streams: pipes (stdin one only with
// req.Stdin, else /dev/null), or with req.PTY a new terminal of that size,
// owned by uid as a login terminal is, whose master side is both the
// command's output and where its input goes.
func (s *Server) openStdio(c *command, req CommandRequest, uid uint32) (*stdio, error) {
	if req.PTY != nil {
		ptm, tty, err := pty.Open()
		if err != nil {
			return nil, sandbox.Errorf(sandbox.ErrUnavailable, "pty_unavailable", "open a terminal: %v", err)
		}
		if err := pty.Setsize(tty, &pty.Winsize{Rows: req.PTY.Rows, Cols: req.PTY.Cols}); err != nil {
			ptm.Close()
			tty.Close()
			return nil, fmt.Errorf("size the terminal: %w", err)
		}
		if uid != 0 {
			// devpts made it root's (mode 0620, group tty): the user's
			// programs reopen it (/dev/tty, ttyname) and set its modes.
			if err := unix.Fchown(int(tty.Fd()), int(uid), -1); err != nil {
				s.log.Warn("chown terminal", "command", c.id, "err", err)
			}
		}
		master, err := pollable(ptm)
		if err != nil {
			tty.Close()
			return nil, err
		}
		c.stdin, c.pty = master, master
		return &stdio{child: []*os.File{tty}, outputs: []output{{master, FrameStdout}}}, nil
	}
	var stdinR *os.File
	if req.Stdin {
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		stdinR, c.stdin = pr, pw
	} else {
		var err error
		if stdinR, err = os.Open(os.DevNull); err != nil {
			return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	return &stdio{
		child:   []*os.File{stdinR, outW, errW},
		outputs: []output{{outR, FrameStdout}, {errR, FrameStderr}},
	}, nil
}

// pollable returns f (closed) as a new non-blocking file in Go's poller,
// so reads and writes honour deadlines and end when the file is closed:
// the library's ioctls on f left it in blocking mode.
func pollable(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("dup terminal: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("terminal non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), nil
}

// setWinsize resizes the terminal whose master is f; the kernel sends
// SIGWINCH to its foreground process group.
func setWinsize(f *os.File, size PTYSize) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
	}); err != nil {
		return err
	}
	return ierr
}

func (s *Server) handleResize(w http.ResponseWriter, r *http.Request) {
	c, err := s.lookup(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var size PTYSize
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&size); err != nil {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_pty_size", "decode resize request: %v", err))
		return
	}
	if !size.Valid() {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_pty_size", "size %dx%d is outside 1..%d", size.Rows, size.Cols, MaxPTYCells))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state.PTY == nil:
		err = sandbox.Errorf(sandbox.ErrInvalid, "not_a_pty", "command %s has no terminal", c.id)
	case c.pty == nil:
		err = sandbox.Errorf(sandbox.ErrConflict, "command_finished", "command %s is not running", c.id)
	default:
		if err = setWinsize(c.pty, size); errors.Is(err, os.ErrClosed) {
			err = sandbox.Errorf(sandbox.ErrConflict, "command_finished", "command %s is not running", c.id)
		} else if err == nil {
			*c.state.PTY = size
		} else {
			err = fmt.Errorf("resize terminal of %s: %w", c.id, err)
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
