package vercel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Interactive sessions (SDK 3.x openInteractive, the `sandbox` CLI's
// connect/exec -i) are paddock's terminal sessions: a command on a
// pseudo-terminal in the session's sandbox, driven over one WebSocket.
// POST .../interactive answers {url, token}; the client opens
// url?token=<token> and speaks Vercel's frames: a text
// {"type":"start",command,args,env:["K=V"],cwd,cols,rows} first, then
// binary frames for input (client to server) and output (server to
// client), text {"type":"resize",cols,rows}, and, when the command ends,
// text {"type":"exit",code} before a normal close. Closing the socket
// hangs the terminal up.

// interactivePath is where the WebSocket is served, below Prefix. It takes
// no bearer token: the signed token in its query is the credential.
const interactivePath = "/interactive/{sid}"

// interactiveTokenPort is the port number signed into an interactive
// token. No TCP port is negative, so the port proxy, which checks tokens
// against the port it opens, never accepts one, and no port token opens a
// terminal.
const interactiveTokenPort = -1

// interactiveTokenTTL bounds how long a token may be used to connect; a
// connected terminal lasts as long as the session.
const interactiveTokenTTL = 5 * time.Minute

const (
	// startTimeout bounds the wait for the client's start frame.
	startTimeout = 30 * time.Second
	// maxFrameBytes bounds one frame from the client.
	maxFrameBytes = 1 << 20
	// hangupGrace is how long a hung-up terminal has to end after SIGHUP
	// before it is killed.
	hangupGrace = 2 * time.Second
)

var errNoInteractive = sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented",
	"interactive sessions need paddock serve's public URL and port signing (--public-url)")

// openInteractive is POST .../interactive {}: a WebSocket URL on paddock's
// public URL and a token for it, bound to the session and short-lived.
func (h *Handler) openInteractive(w http.ResponseWriter, r *http.Request) error {
	if _, err := decodeJSON(w, r, &struct{}{}); err != nil {
		return err
	}
	if h.signer == nil || h.baseURL == "" {
		return errNoInteractive
	}
	rs, err := h.running(r)
	if err != nil {
		return err
	}
	u, err := url.Parse(h.baseURL)
	if err != nil {
		return fmt.Errorf("public URL: %w", err)
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + Prefix + strings.Replace(interactivePath, "{sid}", url.PathEscape(rs.s.ID), 1)
	u.RawQuery, u.Fragment = "", ""
	ttl := min(max(time.Until(rs.sb.ExpiresAt), minRouteTTL), interactiveTokenTTL)
	tok := h.signer.Sign(rs.s.ID, interactiveTokenPort, ttl)
	h.log.Info("vercel compat: interactive session opened", "sandbox", rs.s.ID)
	writeJSON(w, http.StatusOK, map[string]string{"url": u.String(), "token": tok})
	return nil
}

// startFrame is the client's first frame.
type startFrame struct {
	Type    string   `json:"type"`
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Env     []string `json:"env"` // K=V
	Cwd     string   `json:"cwd"`
	Cols    int      `json:"cols"`
	Rows    int      `json:"rows"`
}

// controlFrame is any later text frame from the client.
type controlFrame struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// serveInteractive is the WebSocket of an interactive session. It runs
// before bearer authentication (ServeHTTP): the token names the session.
func (h *Handler) serveInteractive(w http.ResponseWriter, r *http.Request) error {
	if h.signer == nil {
		return errNoInteractive
	}
	sid := r.PathValue("sid")
	if err := h.signer.Verify(r.URL.Query().Get("token"), sid, interactiveTokenPort); err != nil {
		return sandbox.Errorf(sandbox.ErrForbidden, "forbidden", "Not authorized: the interactive token is invalid or expired")
	}
	sb, err := h.sb.Get(r.Context(), sid)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return errSessionStopped(sid)
	case err != nil:
		return fmt.Errorf("session %s: %w", sid, err)
	case sb.State != sandbox.Running:
		return errSessionStopped(sid)
	}
	rec, err := h.store.bySession(r.Context(), sb.TeamID, sid)
	if err != nil {
		return err
	}
	ac, err := h.sb.Agent(r.Context(), sid)
	if err != nil {
		return fmt.Errorf("session %s: %w", sid, err)
	}
	// The connection outlives any deadline the server set for requests.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// The token in the URL is the credential, not a cookie, so a page of
	// another origin gains nothing by opening the socket: no origin check.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil // Accept answered the client
	}
	defer c.CloseNow()
	c.SetReadLimit(maxFrameBytes)
	ctx, stop := h.longPoll(r)
	defer stop()
	h.runTerminal(ctx, c, rec.cwd(sb), sid, ac)
	return nil
}

// runTerminal starts the client's command on a terminal and relays frames
// until the command ends or the client leaves.
func (h *Handler) runTerminal(ctx context.Context, c *websocket.Conn, cwd, sid string, ac *agent.Client) {
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	typ, data, err := c.Read(sctx)
	cancel()
	if err != nil {
		return
	}
	var start startFrame
	if typ != websocket.MessageText || json.Unmarshal(data, &start) != nil || start.Type != "start" {
		c.Close(websocket.StatusPolicyViolation, "the first frame must be a start frame")
		return
	}
	req, err := execOfStart(start, cwd)
	if err == nil {
		var cmd agent.Command
		if cmd, err = h.sb.Exec(ctx, sid, req); err == nil {
			h.log.Info("vercel compat: terminal started", "sandbox", sid, "command", cmd.ID, "cmd", req.Cmd)
			h.relay(ctx, c, sid, cmd.ID, ac)
			return
		}
	}
	msg := err.Error()
	var se *sandbox.Error
	if errors.As(err, &se) {
		msg = se.Message
	}
	c.Close(websocket.StatusPolicyViolation, truncate(msg, 120))
}

// execOfStart is the command a start frame asks for, run in cwd unless it
// names one (a relative one resolves against cwd).
func execOfStart(s startFrame, cwd string) (sandbox.ExecRequest, error) {
	req := sandbox.ExecRequest{Cmd: s.Command, Args: s.Args, Cwd: cwd, PTY: &sandbox.PTYSize{Rows: defaultRows, Cols: defaultCols}}
	if req.Cmd == "" {
		req.Cmd = "/bin/sh"
	}
	if s.Cwd != "" {
		p, err := sandboxPath(s.Cwd, "", cwd)
		if err != nil {
			return req, err
		}
		req.Cwd = p
	}
	if s.Rows != 0 || s.Cols != 0 {
		size, ok := ptySize(s.Rows, s.Cols)
		if !ok {
			return req, badRequest("rows and cols must be within 1..%d", sandbox.MaxPTYCells)
		}
		req.PTY = &size
	}
	if len(s.Env) > 0 {
		req.Env = make(map[string]string, len(s.Env))
		for _, kv := range s.Env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return req, badRequest("env entry %q is not K=V", kv)
			}
			req.Env[k] = v
		}
	}
	return req, nil
}

// ptySize is a terminal size from a client's numbers, if they are one.
func ptySize(rows, cols int) (sandbox.PTYSize, bool) {
	if rows < 1 || cols < 1 || rows > sandbox.MaxPTYCells || cols > sandbox.MaxPTYCells {
		return sandbox.PTYSize{}, false
	}
	size := sandbox.PTYSize{Rows: uint16(rows), Cols: uint16(cols)}
	return size, size.Valid()
}

// The size of a terminal whose start frame gives none.
const defaultRows, defaultCols = 24, 80

// relay copies the terminal's output to the client and the client's
// input and resizes to the terminal. When the command ends the client
// gets its exit frame and a normal close; when the client leaves first,
// the terminal is hung up.
func (h *Handler) relay(ctx context.Context, c *websocket.Conn, sid, cmdID string, ac *agent.Client) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	exited := make(chan struct{})
	wg.Go(func() {
		if h.copyOutput(ctx, c, sid, cmdID, ac) {
			close(exited)
		}
		// Ends the read loop below (a cancelled read closes the socket)
		// when the output could not be followed to the end.
		cancel()
	})
	h.readInput(ctx, c, sid, cmdID, ac)
	cancel()
	wg.Wait()
	select {
	case <-exited:
		return
	default:
	}
	h.hangUp(context.WithoutCancel(ctx), sid, cmdID, ac)
}

// copyOutput sends the terminal's output from the start as binary
// frames and, at its end, the exit frame and a normal close. It reports
// whether it got that far.
func (h *Handler) copyOutput(ctx context.Context, c *websocket.Conn, sid, cmdID string, ac *agent.Client) bool {
	out, err := ac.Output(ctx, cmdID, 0, true)
	if err != nil {
		return false
	}
	defer out.Close()
	for {
		f, err := out.Next()
		if err != nil {
			if err != io.EOF && ctx.Err() == nil {
				h.log.Warn("vercel compat: terminal output", "sandbox", sid, "command", cmdID, "err", err)
			}
			return false
		}
		switch f.Kind {
		case agent.FrameStdout, agent.FrameStderr:
			if c.Write(ctx, websocket.MessageBinary, f.Data) != nil {
				return false
			}
		case agent.FrameExit:
			var cmd agent.Command
			code := -1
			if json.Unmarshal(f.Data, &cmd) == nil && cmd.ExitCode != nil {
				code = *cmd.ExitCode
			}
			msg, _ := json.Marshal(map[string]any{"type": "exit", "code": code})
			if c.Write(ctx, websocket.MessageText, msg) != nil {
				return false
			}
			// Close waits for the client's close frame, which the read
			// loop takes and which ends it.
			_ = c.Close(websocket.StatusNormalClosure, "")
			return true
		}
	}
}

// readInput forwards the client's frames until the socket closes.
func (h *Handler) readInput(ctx context.Context, c *websocket.Conn, sid, cmdID string, ac *agent.Client) {
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		switch typ {
		case websocket.MessageBinary:
			err = ac.Stdin(ctx, cmdID, bytes.NewReader(data), false)
		case websocket.MessageText:
			var f controlFrame
			if json.Unmarshal(data, &f) != nil || f.Type != "resize" {
				continue // frames of later protocol versions
			}
			size, ok := ptySize(f.Rows, f.Cols)
			if !ok {
				continue
			}
			err = ac.Resize(ctx, cmdID, size)
		}
		if err != nil && !errors.Is(err, sandbox.ErrConflict) && ctx.Err() == nil {
			// A conflict is a command that has just ended: its exit
			// frame is on its way.
			h.log.Warn("vercel compat: terminal input", "sandbox", sid, "command", cmdID, "err", err)
		}
	}
}

// hangUp ends a terminal whose client left: SIGHUP, as a terminal's
// hangup sends, then SIGKILL if it is still there after hangupGrace.
func (h *Handler) hangUp(ctx context.Context, sid, cmdID string, ac *agent.Client) {
	if err := ac.Signal(ctx, cmdID, 1); err != nil {
		return // ended already, or the sandbox is gone
	}
	wctx, cancel := context.WithTimeout(ctx, hangupGrace)
	defer cancel()
	if _, err := ac.Wait(wctx, cmdID); err == nil {
		return
	}
	if err := ac.Signal(ctx, cmdID, 9); err != nil && !errors.Is(err, sandbox.ErrConflict) {
		h.log.Warn("vercel compat: kill a hung-up terminal", "sandbox", sid, "command", cmdID, "err", err)
	}
}

// truncate cuts s to at most n bytes, for a close reason (at most 123).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
