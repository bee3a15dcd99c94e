//go:build linux

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// terminal follows a command's output and waits for what a test expects.
type terminal struct {
	t    *testing.T
	out  *OutputReader
	seen bytes.Buffer // everything since the last expect
	last int64        // the offset just past the last frame read
	exit *Command
}

func followTerminal(t *testing.T, c *Client, id string, offset int64) *terminal {
	t.Helper()
	out, err := c.Output(testCtx(t), id, offset, true)
	if err != nil {
		t.Fatalf("output: %v", err)
	}
	t.Cleanup(func() { out.Close() })
	return &terminal{t: t, out: out}
}

// expect reads until the output holds want; it returns what was read up
// to and including it.
func (term *terminal) expect(want string) string {
	term.t.Helper()
	for !strings.Contains(term.seen.String(), want) {
		f, err := term.out.Next()
		if err != nil {
			term.t.Fatalf("waiting for %q, got %q: %v", want, term.seen.String(), err)
		}
		term.last = f.Offset
		switch f.Kind {
		case FrameStdout:
			term.seen.Write(f.Data)
		case FrameStderr:
			term.t.Fatalf("a terminal's output came as stderr: %q", f.Data)
		case FrameExit:
			var cmd Command
			if err := json.Unmarshal(f.Data, &cmd); err != nil {
				term.t.Fatal(err)
			}
			term.exit = &cmd
			term.t.Fatalf("waiting for %q, the command exited: %+v; output %q", want, cmd, term.seen.String())
		}
	}
	s := term.seen.String()
	i := strings.Index(s, want) + len(want)
	term.seen.Reset()
	term.seen.WriteString(s[i:])
	return s[:i]
}

// wait reads to the exit frame.
func (term *terminal) wait() Command {
	term.t.Helper()
	for {
		f, err := term.out.Next()
		if err != nil {
			term.t.Fatalf("waiting for the exit: %v; output %q", err, term.seen.String())
		}
		if f.Kind == FrameExit {
			var cmd Command
			if err := json.Unmarshal(f.Data, &cmd); err != nil {
				term.t.Fatal(err)
			}
			return cmd
		}
		term.seen.Write(f.Data)
	}
}

func TestPTYSession(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	cmd, err := e.client.Start(ctx, CommandRequest{PTY: &PTYSize{Rows: 24, Cols: 80}, Tag: "shell-1",
		Env: map[string]string{"PS1": "$ "}})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.PTY == nil || *cmd.PTY != (PTYSize{Rows: 24, Cols: 80}) || cmd.Tag != "shell-1" || len(cmd.Args) != 1 || cmd.Args[0] != "-l" {
		t.Fatalf("started: %+v", cmd)
	}
	term := followTerminal(t, e.client, cmd.ID, 0)
	input := func(s string) {
		t.Helper()
		if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader(s), false); err != nil {
			t.Fatalf("input %q: %v", s, err)
		}
	}
	// The shell's answers are told apart from the echo of what was typed
	// by arithmetic the echo does not contain.
	input("echo id=$(id -u) term=$TERM tty=$(stat -c %u $(tty)) x$((6*7))\n")
	if got := term.expect("x42"); !strings.Contains(got, "id=1000 term=xterm-256color tty=1000") {
		t.Errorf("identity, TERM or terminal owner: %q", got)
	}
	input("stty size; echo y$((6*7))\n")
	if got := term.expect("y42"); !strings.Contains(got, "24 80") {
		t.Errorf("initial size: %q", got)
	}
	if err := e.client.Resize(ctx, cmd.ID, PTYSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	input("stty size; echo z$((6*7))\n")
	if got := term.expect("z42"); !strings.Contains(got, "50 132") {
		t.Errorf("size after resize: %q", got)
	}
	if got, _ := e.client.Get(ctx, cmd.ID); got.PTY == nil || *got.PTY != (PTYSize{Rows: 50, Cols: 132}) {
		t.Errorf("command after resize: %+v", got)
	}

	// A reader that reconnects from an offset gets what followed it: from
	// just past the frame that held y42 (written before z's input was
	// typed), z42 and not y42. (How the shell's output falls into frames
	// depends on timing, so no later frame boundary is known to precede
	// z42.)
	cur := followTerminal(t, e.client, cmd.ID, 0)
	cur.expect("y42")
	again := followTerminal(t, e.client, cmd.ID, cur.last)
	if got := again.expect("z42"); strings.Contains(got, "y42") {
		t.Errorf("a reader from past y42's frame read it again: %q", got)
	}

	// A reader from the end gets only what comes next (E2B's Connect).
	fromEnd, start, err := e.client.OutputFromEnd(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	live := &terminal{t: t, out: fromEnd}
	t.Cleanup(func() { fromEnd.Close() })
	input("echo w$((6*7))\n")
	if got := live.expect("w42"); strings.Contains(got, "z42") || start <= 0 {
		t.Errorf("from the end (offset %d): %q", start, got)
	}

	for _, tc := range []struct {
		name string
		call func() error
		kind error
	}{
		{"close a terminal's input", func() error { return e.client.Stdin(ctx, cmd.ID, strings.NewReader(""), true) }, sandbox.ErrInvalid},
		{"resize to zero", func() error { return e.client.Resize(ctx, cmd.ID, PTYSize{Rows: 0, Cols: 80}) }, sandbox.ErrInvalid},
		{"resize too large", func() error { return e.client.Resize(ctx, cmd.ID, PTYSize{Rows: 10, Cols: MaxPTYCells + 1}) }, sandbox.ErrInvalid},
		{"resize an unknown command", func() error { return e.client.Resize(ctx, "cmd-nope", PTYSize{Rows: 10, Cols: 10}) }, sandbox.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.kind) {
				t.Errorf("got %v, want %v", err, tc.kind)
			}
		})
	}

	input("exit 3\n")
	done := term.wait()
	if done.Status != StatusExited || done.ExitCode == nil || *done.ExitCode != 3 {
		t.Errorf("exit: %+v", done)
	}
	if err := e.client.Resize(ctx, cmd.ID, PTYSize{Rows: 10, Cols: 10}); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("resize after exit: %v, want conflict", err)
	}
	// From the end of a finished session: its exit frame at once.
	ended, _, err := e.client.OutputFromEnd(ctx, cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer ended.Close()
	if f, err := ended.Next(); err != nil || f.Kind != FrameExit {
		t.Errorf("from the end of a finished session: %+v %v", f, err)
	}
}

func TestPTYSignals(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	// ^C typed on the terminal reaches the foreground command as SIGINT,
	// as it does on a real terminal; the kill route ends the session.
	cmd, err := e.client.Start(ctx, CommandRequest{Cmd: "sh", Args: []string{"-c", "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done"},
		PTY: &PTYSize{Rows: 10, Cols: 40}})
	if err != nil {
		t.Fatal(err)
	}
	term := followTerminal(t, e.client, cmd.ID, 0)
	term.expect("ready")
	if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader("\x03"), false); err != nil {
		t.Fatal(err)
	}
	term.expect("got-int")
	if done := term.wait(); done.ExitCode == nil || *done.ExitCode != 7 {
		t.Errorf("exit after ^C: %+v", done)
	}

	cmd, err = e.client.Start(ctx, CommandRequest{Cmd: "sleep", Args: []string{"30"}, PTY: &PTYSize{Rows: 10, Cols: 40}, Sudo: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.Signal(ctx, cmd.ID, 9); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if done, err := e.client.Wait(wctx, cmd.ID); err != nil || done.Status != StatusKilled || done.Signal != "SIGKILL" {
		t.Errorf("killed: %+v %v", done, err)
	}
}

func TestPTYInvalid(t *testing.T) {
	e := startServer(t, nil)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		req  CommandRequest
	}{
		{"no cmd without a terminal", CommandRequest{}},
		{"zero rows", CommandRequest{PTY: &PTYSize{Rows: 0, Cols: 80}}},
		{"too many columns", CommandRequest{PTY: &PTYSize{Rows: 24, Cols: MaxPTYCells + 1}}},
		{"tag too long", CommandRequest{Cmd: "true", Tag: strings.Repeat("t", MaxTagBytes+1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.client.Start(ctx, tc.req); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("got %v, want invalid", err)
			}
		})
	}
	plain := e.run(t, CommandRequest{Cmd: "sleep", Args: []string{"0"}})
	if err := e.client.Resize(ctx, plain.ID, PTYSize{Rows: 10, Cols: 10}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("resize a command without a terminal: %v, want invalid", err)
	}
}
