package sdk

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strings"

	"github.com/paddock-dev/paddock/api"
)

// Command is a command run in a sandbox and the client that reaches it.
type Command struct {
	api.Command
	c *Client
}

// Refresh reloads the command's fields.
func (c *Command) Refresh(ctx context.Context) error {
	return c.c.do(ctx, http.MethodGet, commandPath(c.SandboxID, c.ID), nil, nil, &c.Command)
}

// Wait blocks until the command finished and returns it with ExitCode set.
// Ending ctx ends the wait, not the command.
func (c *Command) Wait(ctx context.Context) (*Command, error) {
	if err := c.c.do(ctx, http.MethodGet, commandPath(c.SandboxID, c.ID)+"/wait", nil, nil, &c.Command); err != nil {
		return nil, err
	}
	return c, nil
}

// Kill sends signal ("SIGTERM", "TERM", "15"; "" means SIGKILL) to the
// command's process group.
func (c *Command) Kill(ctx context.Context, signal string) error {
	return c.c.do(ctx, http.MethodPost, commandPath(c.SandboxID, c.ID)+"/kill", nil,
		api.KillRequest{Signal: api.Signal(signal)}, &c.Command)
}

// Stdin streams r to the command's stdin (it must have been started with
// Stdin: true). With closeAfter the server closes stdin once r is drained.
func (c *Command) Stdin(ctx context.Context, r io.Reader, closeAfter bool) error {
	q := url.Values{}
	if closeAfter {
		q.Set("close", "true")
	}
	req, err := c.c.request(ctx, http.MethodPost, commandPath(c.SandboxID, c.ID)+"/stdin", q, r, api.ContentTypeBinary)
	if err != nil {
		return err
	}
	resp, err := c.c.send(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// LogsOption changes what Logs streams.
type LogsOption func(url.Values)

// NoFollow makes Logs stop at the output written so far instead of
// following the command until it exits.
func NoFollow() LogsOption { return func(q url.Values) { q.Set("follow", "false") } }

// Logs streams the command's output from its start, then live until the
// command exits. The last line yielded carries Exit. Output the sandbox
// no longer keeps (each command's log is capped, the oldest output goes
// first) is a line with Dropped set instead of an error. A stream that ends
// without it yields ErrStreamEndedEarly (unless NoFollow); an error line from
// the server yields an *APIError. Stopping the loop closes the stream.
func (c *Command) Logs(ctx context.Context, opts ...LogsOption) iter.Seq2[api.LogLine, error] {
	return func(yield func(api.LogLine, error) bool) {
		q := url.Values{}
		for _, o := range opts {
			o(q)
		}
		follow := q.Get("follow") != "false"
		req, err := c.c.request(ctx, http.MethodGet, commandPath(c.SandboxID, c.ID)+"/logs", q, nil, "")
		if err != nil {
			yield(api.LogLine{}, err)
			return
		}
		resp, err := c.c.send(req)
		if err != nil {
			yield(api.LogLine{}, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		// A line holds one output frame (at most 1 MiB, base64 adds a third).
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var l api.LogLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				yield(api.LogLine{}, fmt.Errorf("paddock: decode log line: %w", err))
				return
			}
			if l.Error != nil {
				yield(api.LogLine{}, &APIError{Code: l.Error.Code, Message: l.Error.Message})
				return
			}
			if !yield(l, nil) {
				return
			}
			if l.Exit != nil {
				c.Command = *l.Exit
				return
			}
		}
		if err := sc.Err(); err != nil {
			yield(api.LogLine{}, fmt.Errorf("paddock: read logs: %w", err))
			return
		}
		if follow {
			yield(api.LogLine{}, ErrStreamEndedEarly)
		}
	}
}

// Output returns the command's output of stream "stdout", "stderr" or
// "both" (interleaved as written), waiting for the command to finish.
// Output that is not UTF-8 is returned as the raw bytes.
func (c *Command) Output(ctx context.Context, stream string) (string, error) {
	switch stream {
	case api.StreamStdout, api.StreamStderr, "both":
	default:
		return "", fmt.Errorf("paddock: output stream must be stdout, stderr or both, not %q", stream)
	}
	var b strings.Builder
	for l, err := range c.Logs(ctx) {
		if err != nil {
			return b.String(), err
		}
		if l.Exit == nil && (stream == "both" || l.Stream == stream) {
			b.Write(l.Bytes())
		}
	}
	return b.String(), nil
}

// ExitCodeOr returns the exit code, or def while the command runs.
func (c *Command) ExitCodeOr(def int) int {
	if c.ExitCode == nil {
		return def
	}
	return *c.ExitCode
}
