package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Client talks to one sandbox's agent. It is safe for concurrent use and
// cheap to copy by pointer; connections are pooled.
type Client struct {
	http *http.Client
	// pinged is the agent's last answer to Ping; nil before one.
	pinged atomic.Pointer[Info]
}

// NewClient returns a client that reaches the agent through dial (a unix
// socket for local drivers, TCP for Pods).
func NewClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
		// Every answer is read through a limit (see maxAnswer): the agent
		// runs beside sandbox code and is not trusted with paddock's memory.
		MaxResponseHeaderBytes: maxAnswerHeader,
		// Streams (output, stdin, tar) can last as long as the command: no
		// overall timeout here, callers bound them with ctx.
	}
	return &Client{http: &http.Client{Transport: tr}}
}

// UnixClient returns a client for an agent listening on a unix socket path.
func UnixClient(path string) *Client {
	var d net.Dialer
	return NewClient(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	})
}

// Close drops pooled connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

const base = "http://agent"

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, fmt.Errorf("agent request %s %s: %w", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("agent %s %s: %w: %w", method, path, sandbox.ErrUnavailable, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// decodeError turns an agent error answer into a *sandbox.Error whose kind
// follows the status, so the API maps it like any other error.
func decodeError(resp *http.Response) error {
	var body ErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer))
	if err := json.Unmarshal(data, &body); err != nil || body.Error.Code == "" {
		quote := bytes.TrimSpace(data)
		if len(quote) > 256 {
			quote = append(quote[:256:256], "..."...)
		}
		return sandbox.Errorf(sandbox.ErrAgentProtocol, "agent_error", "agent answered %d: %s", resp.StatusCode, quote)
	}
	return &sandbox.Error{Kind: KindForStatus(resp.StatusCode), Code: body.Error.Code, Message: body.Error.Message}
}

// KindForStatus is the inverse of StatusForKind for the agent's answers.
func KindForStatus(status int) error {
	switch status {
	case http.StatusBadRequest:
		return sandbox.ErrInvalid
	case http.StatusNotFound:
		return sandbox.ErrNotFound
	case http.StatusConflict:
		return sandbox.ErrConflict
	case http.StatusRequestEntityTooLarge:
		return sandbox.ErrTooLarge
	case http.StatusInsufficientStorage, http.StatusTooManyRequests:
		return sandbox.ErrExhausted
	case http.StatusForbidden:
		return sandbox.ErrForbidden
	default:
		return sandbox.ErrAgentProtocol
	}
}

// StatusForKind is the HTTP status the agent answers for an error kind.
func StatusForKind(err error) int {
	switch {
	case errors.Is(err, sandbox.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, sandbox.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, sandbox.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, sandbox.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, sandbox.ErrExhausted):
		return http.StatusInsufficientStorage
	case errors.Is(err, sandbox.ErrForbidden):
		return http.StatusForbidden
	default:
		return http.StatusInternalServerError
	}
}

// Limits on what the client reads of the agent's answers. The agent is
// PID 1 of a sandbox that runs hostile code; if that code ever took it
// over, an endless answer must cost paddock an error, not its memory.
// Streams (output, files, archives) are not buffered whole and keep their
// own framing limits (MaxFrame).
const (
	maxAnswerHeader = 64 << 10
	maxErrorAnswer  = 64 << 10
	// maxSmallAnswer bounds ping, write results and other fixed shapes.
	maxSmallAnswer = 64 << 10
	// maxCommandAnswer bounds one Command: its args come from a request
	// of at most 1 MiB, which JSON escaping can grow up to six times.
	maxCommandAnswer = 8 << 20
	// maxListAnswer bounds the command list and the port list.
	maxListAnswer = 64 << 20
)

// errAnswerTooLarge is the kind of a refused oversized answer.
var errAnswerTooLarge = errors.New("answer exceeds its size limit")

// limitReader fails once more than n bytes were read, so a decoder sees an
// error instead of a value cut short.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, errAnswerTooLarge
	}
	return n, err
}

// decodeAnswer decodes one JSON value of at most limit bytes from body.
func decodeAnswer(body io.Reader, path string, limit int64, out any) error {
	if err := json.NewDecoder(&limitReader{r: body, n: limit}).Decode(out); err != nil {
		if errors.Is(err, errAnswerTooLarge) {
			return sandbox.Errorf(sandbox.ErrAgentProtocol, "agent_answer_too_large", "agent answer to %s exceeds %d bytes", path, limit)
		}
		return fmt.Errorf("decode agent answer to %s: %w: %w", path, sandbox.ErrAgentProtocol, err)
	}
	return nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, limit int64, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode agent request: %w", err)
		}
		body, ct = bytes.NewReader(data), "application/json"
	}
	resp, err := c.do(ctx, method, path, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		// Drained (up to a bound) so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxSmallAnswer))
		return nil
	}
	return decodeAnswer(resp.Body, path, limit, out)
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) (Info, error) {
	var info Info
	err := c.doJSON(ctx, http.MethodGet, "/v1/ping", maxSmallAnswer, nil, &info)
	if err == nil {
		c.pinged.Store(&info)
	}
	return info, err
}

// Warm has the agent fork, run and reap a no-op program once, unlisted, so
// that its first real command does not pay for paths it never ran (see
// the agent's handleWarm). Pools warm their sandboxes before a claim.
func (c *Client) Warm(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/warm", 0, nil, nil)
}

// Pinged returns the agent's last answer to Ping through this client, if
// it gave one: a create whose driver just waited for the agent's answer
// reads the sandbox user from it instead of asking again.
func (c *Client) Pinged() (Info, bool) {
	if p := c.pinged.Load(); p != nil {
		return *p, true
	}
	return Info{}, false
}

// Start starts a command and returns at once.
func (c *Client) Start(ctx context.Context, req CommandRequest) (Command, error) {
	var cmd Command
	err := c.doJSON(ctx, http.MethodPost, "/v1/commands", maxCommandAnswer, req, &cmd)
	return cmd, err
}

// Run starts a command and returns once it finished, in one round trip.
// Ending ctx ends the wait, not the command.
func (c *Client) Run(ctx context.Context, req CommandRequest) (Command, error) {
	var cmd Command
	err := c.doJSON(ctx, http.MethodPost, "/v1/commands?wait=true", maxCommandAnswer, req, &cmd)
	return cmd, err
}

// Get returns a command's current state.
func (c *Client) Get(ctx context.Context, id string) (Command, error) {
	var cmd Command
	err := c.doJSON(ctx, http.MethodGet, "/v1/commands/"+url.PathEscape(id), maxCommandAnswer, nil, &cmd)
	return cmd, err
}

// List returns every command the agent knows, oldest first.
func (c *Client) List(ctx context.Context) ([]Command, error) {
	var cmds []Command
	err := c.doJSON(ctx, http.MethodGet, "/v1/commands", maxListAnswer, nil, &cmds)
	return cmds, err
}

// Wait blocks until the command finishes or ctx ends.
func (c *Client) Wait(ctx context.Context, id string) (Command, error) {
	var cmd Command
	err := c.doJSON(ctx, http.MethodGet, "/v1/commands/"+url.PathEscape(id)+"/wait", maxCommandAnswer, nil, &cmd)
	return cmd, err
}

// Signal sends sig to the command's process group.
func (c *Client) Signal(ctx context.Context, id string, sig int) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/commands/"+url.PathEscape(id)+"/signal", 0, map[string]int{"signal": sig}, nil)
}

// Stdin copies r to the command's stdin (started with Stdin: true); with
// closeAfter the pipe is closed once r is drained, so the command sees EOF.
func (c *Client) Stdin(ctx context.Context, id string, r io.Reader, closeAfter bool) error {
	path := "/v1/commands/" + url.PathEscape(id) + "/stdin?close=" + strconv.FormatBool(closeAfter)
	resp, err := c.do(ctx, http.MethodPost, path, r, "application/octet-stream")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Resize changes the size of a command's terminal (started with PTY).
func (c *Client) Resize(ctx context.Context, id string, size PTYSize) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/commands/"+url.PathEscape(id)+"/resize", 0, size, nil)
}

// Output streams a command's output from offset (0: from the start). With
// follow it continues until the command's exit frame; without it stops at
// what has been written so far.
func (c *Client) Output(ctx context.Context, id string, offset int64, follow bool) (*OutputReader, error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}, "follow": {strconv.FormatBool(follow)}}
	resp, err := c.do(ctx, http.MethodGet, "/v1/commands/"+url.PathEscape(id)+"/output?"+q.Encode(), nil, "")
	if err != nil {
		return nil, err
	}
	return &OutputReader{body: resp.Body, r: bufio.NewReaderSize(resp.Body, 64<<10), offset: offset}, nil
}

// OutputFromEnd follows a command's output from the end of what it wrote
// so far: only what comes next, then its exit frame. Offset is where that
// was, for a later Output from it.
func (c *Client) OutputFromEnd(ctx context.Context, id string) (r *OutputReader, offset int64, err error) {
	q := url.Values{"offset": {OffsetEnd}, "follow": {"true"}}
	resp, err := c.do(ctx, http.MethodGet, "/v1/commands/"+url.PathEscape(id)+"/output?"+q.Encode(), nil, "")
	if err != nil {
		return nil, 0, err
	}
	offset, err = strconv.ParseInt(resp.Header.Get(HeaderOutputOffset), 10, 64)
	if err != nil || offset < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("agent output: start offset %q: %w", resp.Header.Get(HeaderOutputOffset), sandbox.ErrAgentProtocol)
	}
	return &OutputReader{body: resp.Body, r: bufio.NewReaderSize(resp.Body, 64<<10), offset: offset}, offset, nil
}

// OutputReader decodes output frames.
type OutputReader struct {
	body   io.Closer
	r      *bufio.Reader
	offset int64
}

// MaxFrame bounds one output frame's payload so a corrupt stream cannot
// make the host allocate without limit. The exit frame, a Command, has the
// bound of a Command answer.
const MaxFrame = 1 << 20

// Next returns the next frame, or io.EOF at the end of the stream.
func (o *OutputReader) Next() (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(o.r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, fmt.Errorf("agent output: truncated frame header: %w", sandbox.ErrAgentProtocol)
		}
		return Frame{}, err
	}
	kind, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	limit := uint32(MaxFrame)
	switch kind {
	case FrameExit:
		limit = maxCommandAnswer
	case FrameGap:
		if n != 8 {
			return Frame{}, fmt.Errorf("agent output: gap frame of %d bytes: %w", n, sandbox.ErrAgentProtocol)
		}
	}
	if n > limit {
		return Frame{}, fmt.Errorf("agent output: frame of %d bytes: %w", n, sandbox.ErrAgentProtocol)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(o.r, data); err != nil {
		return Frame{}, fmt.Errorf("agent output: truncated frame: %w", sandbox.ErrAgentProtocol)
	}
	if kind == FrameGap {
		// Not part of the log: it moves the offset to where the stream
		// resumes, and only forward.
		to := int64(binary.BigEndian.Uint64(data))
		if to <= o.offset {
			return Frame{}, fmt.Errorf("agent output: gap back to offset %d from %d: %w", to, o.offset, sandbox.ErrAgentProtocol)
		}
		f := Frame{Kind: FrameGap, Data: data, Offset: to, Dropped: to - o.offset}
		o.offset = to
		return f, nil
	}
	o.offset += int64(len(hdr)) + int64(n)
	return Frame{Kind: kind, Data: data, Offset: o.offset}, nil
}

// Close ends the stream.
func (o *OutputReader) Close() error { return o.body.Close() }

// WriteTar unpacks a tar stream (plain or gzip, detected) into dir inside
// the sandbox. Entries must stay beneath dir; see the agent for the rules.
func (c *Client) WriteTar(ctx context.Context, dir string, sudo bool, r io.Reader) (WriteResult, error) {
	var res WriteResult
	q := url.Values{"dir": {dir}, "sudo": {strconv.FormatBool(sudo)}}
	resp, err := c.do(ctx, http.MethodPut, "/v1/files?"+q.Encode(), r, "application/x-tar")
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	err = decodeAnswer(resp.Body, "/v1/files", maxSmallAnswer, &res)
	return res, err
}

// ReadFile streams one regular file from the sandbox, read as the
// sandbox's user, or as root with sudo.
func (c *Client) ReadFile(ctx context.Context, path string, sudo bool) (io.ReadCloser, FileInfo, error) {
	q := url.Values{"path": {path}, "sudo": {strconv.FormatBool(sudo)}}
	resp, err := c.do(ctx, http.MethodGet, "/v1/files?"+q.Encode(), nil, "")
	if err != nil {
		return nil, FileInfo{}, err
	}
	mode, _ := strconv.ParseUint(resp.Header.Get(HeaderFileMode), 8, 32)
	return resp.Body, FileInfo{Size: resp.ContentLength, Mode: uint32(mode)}, nil
}

// ReadArchive streams path from the sandbox as a tar: a directory's
// contents with names relative to it, or a regular file as one entry named
// by its base name. Symlinks below path are entries, never followed. The
// entries come from inside the sandbox: whoever extracts them must treat
// them as hostile. A stream the agent could not finish ends in an error
// (io.ErrUnexpectedEOF), never in a clean EOF. It is read as the
// sandbox's user (entries the user cannot read are left out), or as root
// with sudo.
func (c *Client) ReadArchive(ctx context.Context, path string, sudo bool) (io.ReadCloser, error) {
	q := url.Values{"path": {path}, "sudo": {strconv.FormatBool(sudo)}}
	resp, err := c.do(ctx, http.MethodGet, "/v1/archive?"+q.Encode(), nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Changes streams what the sandbox changed in its root filesystem since
// the agent started, as the changes tar (see TypeDirNames), read by the
// agent as root. The entries come from inside the sandbox: whoever
// extracts them must treat them as hostile. A stream the agent could not
// finish ends in an error, never in a clean EOF.
func (c *Client) Changes(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/changes", nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// HeaderFileMode carries a read file's mode, in octal.
const HeaderFileMode = "X-Paddock-File-Mode"

// Ports lists the TCP ports listening inside the sandbox.
func (c *Client) Ports(ctx context.Context) ([]ListeningPort, error) {
	var ports []ListeningPort
	err := c.doJSON(ctx, http.MethodGet, "/v1/ports", maxListAnswer, nil, &ports)
	return ports, err
}

// Stats returns the sandbox cgroup's figures as the agent reads them.
// They come from inside the sandbox: a figure for display and limits
// checks, never for anything a sandbox gains by lowering.
func (c *Client) Stats(ctx context.Context) (CgroupStats, error) {
	var st CgroupStats
	err := c.doJSON(ctx, http.MethodGet, "/v1/stats", maxSmallAnswer, nil, &st)
	return st, err
}

// Mkdir creates a directory and its parents.
func (c *Client) Mkdir(ctx context.Context, req MkdirRequest) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/mkdir", 0, req, nil)
}

// maxWatchLine bounds one watch event line: a path (PATH_MAX) and a name,
// JSON-escaped.
const maxWatchLine = 64 << 10

// Watch streams the changes below the directory path in the sandbox (and
// with recursive, its subdirectories), watched as the sandbox's user, or
// as root with sudo. It returns once every directory is watched.
func (c *Client) Watch(ctx context.Context, path string, recursive, sudo bool) (*WatchReader, error) {
	q := url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}, "sudo": {strconv.FormatBool(sudo)}}
	resp, err := c.do(ctx, http.MethodGet, "/v1/watch?"+q.Encode(), nil, "")
	if err != nil {
		return nil, err
	}
	return &WatchReader{body: resp.Body, r: bufio.NewReaderSize(resp.Body, 4096)}, nil
}

// WatchReader decodes a watch's events.
type WatchReader struct {
	body io.Closer
	r    *bufio.Reader
}

// Next returns the next event, or io.EOF once the watch ended (the
// directory went).
func (w *WatchReader) Next() (WatchEvent, error) {
	var line []byte
	for {
		part, err := w.r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxWatchLine {
			return WatchEvent{}, sandbox.Errorf(sandbox.ErrAgentProtocol, "agent_answer_too_large", "watch event over %d bytes", maxWatchLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return WatchEvent{}, fmt.Errorf("agent watch: truncated event: %w", sandbox.ErrAgentProtocol)
			}
			return WatchEvent{}, err
		}
		break
	}
	var ev WatchEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return WatchEvent{}, fmt.Errorf("agent watch: %w: %w", sandbox.ErrAgentProtocol, err)
	}
	return ev, nil
}

// Close ends the watch.
func (w *WatchReader) Close() error { return w.body.Close() }

// Stat describes path itself (a symlink is not followed), as the
// sandbox's user, or as root with sudo.
func (c *Client) Stat(ctx context.Context, path string, sudo bool) (Entry, error) {
	var e Entry
	q := url.Values{"path": {path}, "sudo": {strconv.FormatBool(sudo)}}
	err := c.doJSON(ctx, http.MethodGet, "/v1/stat?"+q.Encode(), maxSmallAnswer, nil, &e)
	return e, err
}

// ListDir lists the entries below the directory path to depth levels (1:
// its own entries), at most MaxListEntries, in a sorted depth-first order.
func (c *Client) ListDir(ctx context.Context, path string, depth int, sudo bool) ([]Entry, error) {
	var entries []Entry
	q := url.Values{"path": {path}, "depth": {strconv.Itoa(depth)}, "sudo": {strconv.FormatBool(sudo)}}
	err := c.doJSON(ctx, http.MethodGet, "/v1/list?"+q.Encode(), maxListAnswer, nil, &entries)
	return entries, err
}

// Move renames a file, symlink or directory and describes it at its new
// path.
func (c *Client) Move(ctx context.Context, req MoveRequest) (Entry, error) {
	var e Entry
	err := c.doJSON(ctx, http.MethodPost, "/v1/move", maxSmallAnswer, req, &e)
	return e, err
}

// Remove removes a file, symlink or directory tree; a missing path is an
// ErrNotFound.
func (c *Client) Remove(ctx context.Context, req RemoveRequest) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/remove", 0, req, nil)
}

// WriteFile writes r to the file path (replacing what is there, creating
// missing parents) with mode's permission bits (0: 0644), as the
// sandbox's user or as root with sudo, and describes the file written.
func (c *Client) WriteFile(ctx context.Context, path string, mode uint32, sudo bool, r io.Reader) (Entry, error) {
	var e Entry
	q := url.Values{"path": {path}, "sudo": {strconv.FormatBool(sudo)}}
	if mode != 0 {
		q.Set("mode", strconv.FormatUint(uint64(mode), 8))
	}
	resp, err := c.do(ctx, http.MethodPut, "/v1/file?"+q.Encode(), r, "application/octet-stream")
	if err != nil {
		return e, err
	}
	defer resp.Body.Close()
	err = decodeAnswer(resp.Body, "/v1/file", maxSmallAnswer, &e)
	return e, err
}
