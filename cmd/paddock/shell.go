package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// shellCmd runs a terminal session in a sandbox on this terminal: stdin in
// raw mode goes to the session as typed, its output to stdout, a resize of
// this terminal (SIGWINCH) to the session, and the session's exit code
// becomes paddock's. With attach it joins a running session instead, from
// the oldest output the sandbox keeps. A dropped output stream is followed
// again from where it broke. Without a terminal on stdin, end of input
// sends ^D. An interrupt of paddock itself hangs the session up.
func shellCmd(ctx context.Context, sb *sdk.Sandbox, req api.PTYRequest, attach string, stdin *os.File, stdout, stderr io.Writer) error {
	fd := int(stdin.Fd())
	tty := term.IsTerminal(fd)
	if tty {
		if cols, rows, err := term.GetSize(fd); err == nil && rows > 0 && cols > 0 {
			req.Rows, req.Cols = uint16(rows), uint16(cols)
		}
	}
	var p *sdk.PTY
	var err error
	if attach != "" {
		p, err = sb.AttachPTY(ctx, attach)
	} else {
		p, err = sb.StartPTY(ctx, req)
	}
	if err != nil {
		return err
	}
	if tty {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(fd, old) //nolint:errcheck // best effort on the way out
		if attach != "" && p.PTY != nil && (p.PTY.Rows != req.Rows || p.PTY.Cols != req.Cols) && req.Rows > 0 {
			_ = p.Resize(ctx, req.Rows, req.Cols)
		}
	}

	// Everything below ends with the session: input and resizes stop when
	// done closes, and shellCmd waits for them.
	done := make(chan struct{})
	var owned []<-chan struct{}
	defer func() {
		close(done)
		for _, c := range owned {
			<-c
		}
	}()
	if tty {
		owned = append(owned, forwardResizes(ctx, p, fd, done))
	}
	in, err := inputReader(stdin)
	if err != nil {
		return err
	}
	owned = append(owned, forwardInput(ctx, p, in, !tty, done, stderr))

	var offset int64
	for attempt := 0; ; attempt++ {
		for l, err := range p.Output(ctx, offset) {
			if err != nil {
				if ctx.Err() != nil {
					hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					_ = p.Kill(hctx, "SIGHUP")
					cancel()
					return &exitError{code: 130}
				}
				if attempt < 3 && (errors.Is(err, sdk.ErrStreamEndedEarly) || !isAPIError(err)) {
					break // reconnect from offset
				}
				return err
			}
			attempt = 0
			offset = l.Offset
			if l.Exit != nil {
				if l.Exit.ExitCode != nil && *l.Exit.ExitCode != 0 {
					return &exitError{code: *l.Exit.ExitCode}
				}
				return nil
			}
			if len(l.Data) > 0 {
				if _, err := stdout.Write(l.Data); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func isAPIError(err error) bool {
	var ae *sdk.APIError
	return errors.As(err, &ae)
}

// forwardResizes sends this terminal's size to the session on every
// SIGWINCH until done closes; the returned channel closes when it stopped.
func forwardResizes(ctx context.Context, p *sdk.PTY, fd int, done <-chan struct{}) <-chan struct{} {
	stopped := make(chan struct{})
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		defer close(stopped)
		defer signal.Stop(winch)
		for {
			select {
			case <-winch:
				if cols, rows, err := term.GetSize(fd); err == nil && rows > 0 && cols > 0 {
					_ = p.Resize(ctx, uint16(rows), uint16(cols))
				}
			case <-done:
				return
			}
		}
	}()
	return stopped
}

// inputReader returns stdin as a file in Go's poller (a non-blocking
// duplicate) so that reading it ends when the session does; a stdin that
// cannot be polled (a regular file) is read as it is.
func inputReader(stdin *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(stdin.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stdin: %w", err)
	}
	return os.NewFile(uintptr(fd), "stdin"), nil
}

// forwardInput sends what in gives to the session until done closes or
// in ends (then, with eofIsCtrlD, a ^D). Keystrokes that arrive while a
// send is in flight go together in the next one.
func forwardInput(ctx context.Context, p *sdk.PTY, in *os.File, eofIsCtrlD bool, done <-chan struct{}, stderr io.Writer) <-chan struct{} {
	stopped := make(chan struct{})
	chunks := make(chan []byte, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(chunks)
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				select {
				case chunks <- append([]byte(nil), buf[:n]...):
				case <-done:
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) && eofIsCtrlD {
					select {
					case chunks <- []byte{0x04}:
					case <-done:
					}
				}
				return
			}
		}
	}()
	go func() {
		defer close(stopped)
		defer func() {
			// The shared file description was made non-blocking for the
			// poller: give the terminal back as it was.
			_ = in.SetReadDeadline(time.Now())
			<-readerDone
			if rc, err := in.SyscallConn(); err == nil {
				_ = rc.Control(func(fd uintptr) { _ = unix.SetNonblock(int(fd), false) })
			}
			in.Close()
		}()
		for {
			var data []byte
			select {
			case c, ok := <-chunks:
				if !ok {
					<-done
					return
				}
				data = c
			case <-done:
				return
			}
		more:
			for {
				select {
				case c, ok := <-chunks:
					if !ok {
						break more
					}
					data = append(data, c...)
				default:
					break more
				}
			}
			if err := p.Write(ctx, data); err != nil && ctx.Err() == nil && !errors.Is(err, sdk.ErrConflict) {
				fmt.Fprintf(stderr, "\r\npaddock: input: %v\r\n", err)
			}
		}
	}()
	return stopped
}
