package sdk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	"github.com/paddock-dev/paddock/api"
)

// PTY is a terminal session: a command started on a pseudo-terminal. It is
// a Command too (Wait, Kill, Refresh; ExitCode once it ended).
type PTY struct {
	Command
}

// StartPTY starts req.Cmd (default the user's login shell) on a new
// terminal of req.Rows × req.Cols (default 24 × 80).
func (s *Sandbox) StartPTY(ctx context.Context, req api.PTYRequest) (*PTY, error) {
	p := &PTY{Command: Command{c: s.c}}
	if err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/pty", nil, req, &p.Command.Command); err != nil {
		return nil, err
	}
	return p, nil
}

// AttachPTY returns the running terminal session id, to reconnect to it.
func (s *Sandbox) AttachPTY(ctx context.Context, id string) (*PTY, error) {
	cmd, err := s.Command(ctx, id)
	if err != nil {
		return nil, err
	}
	if cmd.PTY == nil {
		return nil, &APIError{Status: http.StatusBadRequest, Code: "not_a_pty", Message: fmt.Sprintf("command %s has no terminal", id)}
	}
	return &PTY{Command: *cmd}, nil
}

func (p *PTY) path() string { return sandboxPath(p.SandboxID) + "/pty/" + url.PathEscape(p.ID) }

// Write types data into the terminal (control characters included: "\x03"
// is ^C, "\x04" ^D).
func (p *PTY) Write(ctx context.Context, data []byte) error {
	req, err := p.c.request(ctx, http.MethodPost, p.path()+"/input", nil, bytes.NewReader(data), api.ContentTypeBinary)
	if err != nil {
		return err
	}
	resp, err := p.c.send(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Resize changes the terminal's size; its programs get SIGWINCH.
func (p *PTY) Resize(ctx context.Context, rows, cols uint16) error {
	return p.c.do(ctx, http.MethodPost, p.path()+"/resize", nil, api.PTYSize{Rows: rows, Cols: cols}, nil)
}

// Output streams what the terminal prints from offset (0: the oldest
// output kept; pass a line's Offset to reconnect after it) until the
// session ends: the last line carries Exit, and the PTY's fields are
// updated from it. Output the capped log dropped is a line with Dropped
// set. A stream that ends without the exit line yields ErrStreamEndedEarly;
// an error line from the server an *APIError. Stopping the loop closes the
// stream.
func (p *PTY) Output(ctx context.Context, offset int64) iter.Seq2[api.PTYOutput, error] {
	return p.output(ctx, strconv.FormatInt(offset, 10))
}

// OutputFromNow is Output of only what the terminal prints from now on.
func (p *PTY) OutputFromNow(ctx context.Context) iter.Seq2[api.PTYOutput, error] {
	return p.output(ctx, "end")
}

func (p *PTY) output(ctx context.Context, offset string) iter.Seq2[api.PTYOutput, error] {
	return func(yield func(api.PTYOutput, error) bool) {
		q := url.Values{"offset": {offset}}
		req, err := p.c.request(ctx, http.MethodGet, p.path()+"/output", q, nil, "")
		if err != nil {
			yield(api.PTYOutput{}, err)
			return
		}
		resp, err := p.c.send(req)
		if err != nil {
			yield(api.PTYOutput{}, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		// A line holds one output frame (at most 1 MiB, base64 adds a third).
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var l api.PTYOutput
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				yield(api.PTYOutput{}, fmt.Errorf("paddock: decode terminal output: %w", err))
				return
			}
			if l.Error != nil {
				yield(api.PTYOutput{}, &APIError{Code: l.Error.Code, Message: l.Error.Message})
				return
			}
			if l.Exit != nil {
				p.Command.Command = *l.Exit
			}
			if !yield(l, nil) || l.Exit != nil {
				return
			}
		}
		if err := sc.Err(); err != nil {
			yield(api.PTYOutput{}, fmt.Errorf("paddock: read terminal output: %w", err))
			return
		}
		yield(api.PTYOutput{}, ErrStreamEndedEarly)
	}
}

// WatchOption changes what Watch watches.
type WatchOption func(url.Values)

// Recursive watches the subdirectories too, new ones as they appear.
func Recursive() WatchOption { return func(q url.Values) { q.Set("recursive", "true") } }

// WatchSudo watches as root instead of the sandbox's user.
func WatchSudo() WatchOption { return func(q url.Values) { q.Set("sudo", "true") } }

// Watcher reads the changes below a watched directory.
type Watcher struct {
	body io.Closer
	sc   *bufio.Scanner
}

// Watch watches the directory dir of a running sandbox. It returns once
// the watch is in place: every change after that is reported by Next.
func (s *Sandbox) Watch(ctx context.Context, dir string, opts ...WatchOption) (*Watcher, error) {
	q := url.Values{"path": {dir}}
	for _, o := range opts {
		o(q)
	}
	req, err := s.c.request(ctx, http.MethodGet, sandboxPath(s.ID)+"/watch", q, nil, "")
	if err != nil {
		return nil, err
	}
	resp, err := s.c.send(req)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	return &Watcher{body: resp.Body, sc: sc}, nil
}

// ErrWatchEnded is Next's error once the watch ended: the directory was
// removed (its remove event came first), or the server closed the stream.
var ErrWatchEnded = errors.New("paddock: the watch ended")

// Next blocks for the next event. An overflow event (api.WatchOverflow)
// says events were lost. Closing the watcher or ending the context of
// Watch ends a pending Next.
func (w *Watcher) Next() (api.WatchEvent, error) {
	if !w.sc.Scan() {
		if err := w.sc.Err(); err != nil {
			return api.WatchEvent{}, fmt.Errorf("paddock: read watch: %w", err)
		}
		return api.WatchEvent{}, ErrWatchEnded
	}
	var ev api.WatchEvent
	if err := json.Unmarshal(w.sc.Bytes(), &ev); err != nil {
		return api.WatchEvent{}, fmt.Errorf("paddock: decode watch event: %w", err)
	}
	if ev.Error != nil {
		return api.WatchEvent{}, &APIError{Code: ev.Error.Code, Message: ev.Error.Message}
	}
	return ev, nil
}

// Close ends the watch.
func (w *Watcher) Close() error { return w.body.Close() }
