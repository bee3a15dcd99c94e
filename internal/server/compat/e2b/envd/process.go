package envd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The Process service: commands and terminals, as paddock's agent runs
// them. A process is an agent command; its pid is the command's pid in the
// sandbox, its tag the command's tag. The agent keeps each command's
// output, so Start and Connect stream from its log: nothing written
// between the start and the stream is lost.

// processService is the service's name in Connect paths.
const processService = "/process.Process/"

func init() { addService((*Handler).addProcess) }

func (h *Handler) addProcess(mux *http.ServeMux) {
	opts := h.connectOptions()
	mux.Handle(processService+"Start", connect.NewServerStreamHandler(processService+"Start", h.start, opts...))
	mux.Handle(processService+"Connect", connect.NewServerStreamHandler(processService+"Connect", h.connect, opts...))
	mux.Handle(processService+"List", connect.NewUnaryHandler(processService+"List", h.list, opts...))
	mux.Handle(processService+"SendInput", connect.NewUnaryHandler(processService+"SendInput", h.sendInput, opts...))
	mux.Handle(processService+"StreamInput", connect.NewClientStreamHandler(processService+"StreamInput", h.streamInput, opts...))
	mux.Handle(processService+"SendSignal", connect.NewUnaryHandler(processService+"SendSignal", h.sendSignal, opts...))
	mux.Handle(processService+"CloseStdin", connect.NewUnaryHandler(processService+"CloseStdin", h.closeStdin, opts...))
	mux.Handle(processService+"Update", connect.NewUnaryHandler(processService+"Update", h.update, opts...))
}

// Messages of process.proto, paddock's definitions of their JSON form.

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  *string           `json:"cwd,omitempty"`
}

type ptySize struct {
	Cols uint32 `json:"cols,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
}

type ptyConfig struct {
	Size *ptySize `json:"size,omitempty"`
}

type processSelector struct {
	PID *uint32 `json:"pid,omitempty"`
	Tag *string `json:"tag,omitempty"`
}

type processInput struct {
	Stdin Bytes `json:"stdin,omitempty"`
	PTY   Bytes `json:"pty,omitempty"`
}

type startRequest struct {
	Process *processConfig `json:"process"`
	PTY     *ptyConfig     `json:"pty,omitempty"`
	Tag     *string        `json:"tag,omitempty"`
	Stdin   *bool          `json:"stdin,omitempty"`
}

type connectRequest struct {
	Process *processSelector `json:"process"`
}

type processInfo struct {
	Config processConfig `json:"config"`
	PID    uint32        `json:"pid,omitempty"`
	Tag    *string       `json:"tag,omitempty"`
}

type listRequest struct{}

type listResponse struct {
	Processes []processInfo `json:"processes"`
}

type sendInputRequest struct {
	Process *processSelector `json:"process"`
	Input   *processInput    `json:"input"`
}

type streamInputRequest struct {
	Start *struct {
		Process *processSelector `json:"process"`
	} `json:"start,omitempty"`
	Data *struct {
		Input *processInput `json:"input"`
	} `json:"data,omitempty"`
	Keepalive *struct{} `json:"keepalive,omitempty"`
}

// signal is process.Signal.
type signal int32

var signalNames = enumNames{0: "SIGNAL_UNSPECIFIED", 15: "SIGNAL_SIGTERM", 9: "SIGNAL_SIGKILL"}

func (s signal) MarshalJSON() ([]byte, error) { return signalNames.marshal(int32(s)) }

func (s *signal) UnmarshalJSON(b []byte) error { return signalNames.decode(b, (*int32)(s)) }

type sendSignalRequest struct {
	Process *processSelector `json:"process"`
	Signal  signal           `json:"signal,omitempty"`
}

type closeStdinRequest struct {
	Process *processSelector `json:"process"`
}

type updateRequest struct {
	Process *processSelector `json:"process"`
	PTY     *ptyConfig       `json:"pty,omitempty"`
}

// empty is every response without fields, of both services.
type empty struct{}

type processEvent struct {
	Start     *startEvent `json:"start,omitempty"`
	Data      *dataEvent  `json:"data,omitempty"`
	End       *endEvent   `json:"end,omitempty"`
	Keepalive *struct{}   `json:"keepalive,omitempty"`
}

type startEvent struct {
	PID uint32 `json:"pid,omitempty"`
}

type dataEvent struct {
	Stdout Bytes `json:"stdout,omitempty"`
	Stderr Bytes `json:"stderr,omitempty"`
	PTY    Bytes `json:"pty,omitempty"`
}

type endEvent struct {
	ExitCode int32   `json:"exitCode,omitempty"`
	Exited   bool    `json:"exited,omitempty"`
	Status   string  `json:"status,omitempty"`
	Error    *string `json:"error,omitempty"`
}

// eventResponse is StartResponse and ConnectResponse.
type eventResponse struct {
	Event processEvent `json:"event"`
}

// ptySizeOf is a terminal size as the agent takes it; a dimension out of
// its bounds stays out of them, for Validate to refuse.
func ptySizeOf(s *ptySize) sandbox.PTYSize {
	return sandbox.PTYSize{Cols: uint16(min(s.Cols, sandbox.MaxPTYCells+1)), Rows: uint16(min(s.Rows, sandbox.MaxPTYCells+1))}
}

func invalid(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_argument", format, args...)
}

// start starts a process and streams its events until it ends. The
// call's deadline (the SDKs' timeoutMs) is the command's timeout, as in
// E2B, where a command outliving it is killed; the stream's end does not
// end the command (a background command's handle may disconnect).
func (h *Handler) start(ctx context.Context, req *connect.Request[startRequest], stream *connect.ServerStream[eventResponse]) error {
	t := targetOf(ctx)
	m := req.Msg
	if m.Process == nil || m.Process.Cmd == "" {
		return invalid("process.cmd is required")
	}
	ereq := sandbox.ExecRequest{Cmd: m.Process.Cmd, Args: m.Process.Args, Env: m.Process.Envs, Sudo: t.Sudo,
		Stdin: m.Stdin != nil && *m.Stdin}
	if m.Process.Cwd != nil {
		ereq.Cwd = *m.Process.Cwd
	}
	if m.Tag != nil {
		ereq.Tag = *m.Tag
	}
	if m.PTY != nil {
		size := sandbox.PTYSize{Cols: 80, Rows: 24}
		if s := m.PTY.Size; s != nil {
			size = ptySizeOf(s)
		}
		ereq.PTY = &size
		ereq.Stdin = false // a terminal's input is its own
	}
	if dl, ok := ctx.Deadline(); ok {
		ereq.TimeoutMs = max(1, time.Until(dl).Milliseconds())
	}
	cmd, err := h.cfg.Sandboxes.Exec(ctx, t.SandboxID, ereq)
	if err != nil {
		return err
	}
	out, err := t.Agent.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		return fmt.Errorf("follow the output of %s: %w", cmd.ID, err)
	}
	return h.stream(ctx, req.Header(), cmd, out, stream)
}

// connect streams a running process's events from now on.
func (h *Handler) connect(ctx context.Context, req *connect.Request[connectRequest], stream *connect.ServerStream[eventResponse]) error {
	t := targetOf(ctx)
	cmd, err := h.find(ctx, t, req.Msg.Process)
	if err != nil {
		return err
	}
	out, _, err := t.Agent.OutputFromEnd(ctx, cmd.ID)
	if err != nil {
		return fmt.Errorf("follow the output of %s: %w", cmd.ID, err)
	}
	return h.stream(ctx, req.Header(), cmd, out, stream)
}

// stream sends a start event, then the command's output and its end as
// the agent's log has them, with a keepalive event whenever the stream
// was quiet for the client's keepalive interval. A gap (output the agent
// dropped from its capped log) is skipped.
func (h *Handler) stream(ctx context.Context, hdr http.Header, cmd agent.Command, out *agent.OutputReader, stream *connect.ServerStream[eventResponse]) error {
	defer out.Close()
	if err := stream.Send(&eventResponse{Event: processEvent{Start: &startEvent{PID: uint32(max(cmd.PID, 0))}}}); err != nil {
		return err
	}
	type next struct {
		f   agent.Frame
		err error
	}
	frames := make(chan next)
	done := make(chan struct{})
	defer close(done)
	// Owned by this call: it ends when out is closed (deferred above) or
	// done is, whichever comes first.
	go func() {
		for {
			f, err := out.Next()
			select {
			case frames <- next{f, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	every := keepaliveInterval(hdr)
	keepalive := time.NewTimer(every)
	defer keepalive.Stop()
	for {
		var ev processEvent
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-keepalive.C:
			ev.Keepalive = &struct{}{}
		case n := <-frames:
			switch {
			case errors.Is(n.err, io.EOF):
				return sandbox.Errorf(sandbox.ErrUnavailable, "stream_ended", "the output of process %d ended without its exit", cmd.PID)
			case n.err != nil:
				return fmt.Errorf("read the output of %s: %w", cmd.ID, n.err)
			}
			switch n.f.Kind {
			case agent.FrameStdout:
				if cmd.PTY != nil {
					ev.Data = &dataEvent{PTY: n.f.Data}
				} else {
					ev.Data = &dataEvent{Stdout: n.f.Data}
				}
			case agent.FrameStderr:
				ev.Data = &dataEvent{Stderr: n.f.Data}
			case agent.FrameExit:
				var final agent.Command
				if err := json.Unmarshal(n.f.Data, &final); err != nil {
					return fmt.Errorf("exit frame of %s: %w: %w", cmd.ID, err, sandbox.ErrAgentProtocol)
				}
				return stream.Send(&eventResponse{Event: processEvent{End: endOf(final)}})
			default:
				continue // a gap
			}
		}
		if err := stream.Send(&eventResponse{Event: ev}); err != nil {
			return err
		}
		keepalive.Reset(every)
	}
}

// endOf is a finished command's end event as envd reports it, in the
// words of Go's os.ProcessState and exec.Cmd.Wait: "exit status 1" (also
// the error when not 0), or "signal: killed" with exit code -1 for a
// process a signal ended (not the shell's 128+n). A command that could not
// start ends with the agent's error.
func endOf(c agent.Command) *endEvent {
	ev := &endEvent{}
	if c.ExitCode != nil {
		ev.ExitCode = int32(*c.ExitCode)
	}
	switch c.Status {
	case agent.StatusExited:
		ev.Exited = true
		ev.Status = "exit status " + strconv.Itoa(int(ev.ExitCode))
		if ev.ExitCode != 0 {
			ev.Error = &ev.Status
		}
	case agent.StatusKilled, agent.StatusTimedOut:
		ev.ExitCode = -1
		ev.Status = "signal: " + signalName(c.Signal)
		ev.Error = &ev.Status
	default:
		ev.Status = c.Status
		if c.Error != "" {
			msg := c.Error
			ev.Error = &msg
		}
	}
	return ev
}

// signalName is the description Go gives a signal ("killed",
// "terminated"), from the agent's name of it ("SIGKILL").
func signalName(s string) string {
	if n := unix.SignalNum(s); n != 0 {
		return n.String()
	}
	if s == "" {
		return "killed"
	}
	return s
}

// find is the running command a selector names, by pid or by tag (the
// newest of that tag).
func (h *Handler) find(ctx context.Context, t *target, sel *processSelector) (agent.Command, error) {
	if sel == nil || (sel.PID == nil && sel.Tag == nil) {
		return agent.Command{}, invalid("process: a pid or a tag is required")
	}
	cmds, err := t.Agent.List(ctx)
	if err != nil {
		return agent.Command{}, err
	}
	for i := len(cmds) - 1; i >= 0; i-- {
		c := cmds[i]
		if c.Done() {
			continue
		}
		if (sel.PID != nil && c.PID > 0 && uint32(c.PID) == *sel.PID) || (sel.PID == nil && c.Tag == *sel.Tag) {
			return c, nil
		}
	}
	if sel.PID != nil {
		return agent.Command{}, sandbox.Errorf(sandbox.ErrNotFound, "process_not_found", "process with pid %d not found", *sel.PID)
	}
	return agent.Command{}, sandbox.Errorf(sandbox.ErrNotFound, "process_not_found", "process with tag %q not found", *sel.Tag)
}

// list lists the running processes.
func (h *Handler) list(ctx context.Context, _ *connect.Request[listRequest]) (*connect.Response[listResponse], error) {
	t := targetOf(ctx)
	cmds, err := t.Agent.List(ctx)
	if err != nil {
		return nil, err
	}
	res := &listResponse{Processes: []processInfo{}}
	for _, c := range cmds {
		if c.Done() {
			continue
		}
		info := processInfo{Config: processConfig{Cmd: c.Cmd, Args: c.Args}, PID: uint32(max(c.PID, 0))}
		if c.Cwd != "" {
			cwd := c.Cwd
			info.Config.Cwd = &cwd
		}
		if c.Tag != "" {
			tag := c.Tag
			info.Tag = &tag
		}
		res.Processes = append(res.Processes, info)
	}
	return connect.NewResponse(res), nil
}

// input writes data to a process's stdin or terminal.
func (h *Handler) input(ctx context.Context, t *target, sel *processSelector, in *processInput) error {
	if in == nil || (in.Stdin == nil && in.PTY == nil) {
		return invalid("input: stdin or pty is required")
	}
	cmd, err := h.find(ctx, t, sel)
	if err != nil {
		return err
	}
	data := in.Stdin
	if in.PTY != nil {
		data = in.PTY
	}
	if (in.PTY != nil) != (cmd.PTY != nil) {
		if cmd.PTY != nil {
			return invalid("process %d runs on a terminal: send pty input", cmd.PID)
		}
		return invalid("process %d has no terminal: send stdin", cmd.PID)
	}
	return t.Agent.Stdin(ctx, cmd.ID, bytes.NewReader(data), false)
}

func (h *Handler) sendInput(ctx context.Context, req *connect.Request[sendInputRequest]) (*connect.Response[empty], error) {
	if err := h.input(ctx, targetOf(ctx), req.Msg.Process, req.Msg.Input); err != nil {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}

// streamInput takes a start message naming the process, then input
// messages (and keepalives) until the client closes its side.
func (h *Handler) streamInput(ctx context.Context, stream *connect.ClientStream[streamInputRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	var sel *processSelector
	for stream.Receive() {
		m := stream.Msg()
		switch {
		case m.Start != nil:
			if sel != nil {
				return nil, invalid("stream input: a second start message")
			}
			if m.Start.Process == nil {
				return nil, invalid("stream input: the start message names no process")
			}
			sel = m.Start.Process
		case m.Data != nil:
			if sel == nil {
				return nil, invalid("stream input: data before the start message")
			}
			if err := h.input(ctx, t, sel, m.Data.Input); err != nil {
				return nil, err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}

func (h *Handler) sendSignal(ctx context.Context, req *connect.Request[sendSignalRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	sig := req.Msg.Signal
	if sig != 9 && sig != 15 {
		return nil, invalid("signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL")
	}
	cmd, err := h.find(ctx, t, req.Msg.Process)
	if err != nil {
		return nil, err
	}
	if err := t.Agent.Signal(ctx, cmd.ID, int(sig)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}

func (h *Handler) closeStdin(ctx context.Context, req *connect.Request[closeStdinRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	cmd, err := h.find(ctx, t, req.Msg.Process)
	if err != nil {
		return nil, err
	}
	if err := t.Agent.Stdin(ctx, cmd.ID, bytes.NewReader(nil), true); err != nil {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}

// update resizes a process's terminal.
func (h *Handler) update(ctx context.Context, req *connect.Request[updateRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	cmd, err := h.find(ctx, t, req.Msg.Process)
	if err != nil {
		return nil, err
	}
	if req.Msg.PTY == nil || req.Msg.PTY.Size == nil {
		return connect.NewResponse(&empty{}), nil // nothing to change
	}
	if cmd.PTY == nil {
		return nil, invalid("process %d has no terminal to resize", cmd.PID)
	}
	s := req.Msg.PTY.Size
	size := ptySizeOf(s)
	if !size.Valid() {
		return nil, invalid("rows and cols must be within 1..%d", sandbox.MaxPTYCells)
	}
	if err := t.Agent.Resize(ctx, cmd.ID, size); err != nil {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}
