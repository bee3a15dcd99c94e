package sdk

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// Sandbox is a sandbox and the client that reaches it. Its api.Sandbox
// fields are a snapshot; Refresh updates them.
type Sandbox struct {
	api.Sandbox
	c *Client
}

// Sandbox returns a handle on a sandbox by id without a request.
func (c *Client) Sandbox(id string) *Sandbox {
	return &Sandbox{Sandbox: api.Sandbox{ID: id}, c: c}
}

// Refresh reloads the sandbox's fields.
func (s *Sandbox) Refresh(ctx context.Context) error {
	return s.c.do(ctx, http.MethodGet, sandboxPath(s.ID), nil, nil, &s.Sandbox)
}

// Stop stops the sandbox; its record stays until Delete.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/stop", nil, nil, &s.Sandbox)
}

// Delete stops the sandbox if needed and removes it.
func (s *Sandbox) Delete(ctx context.Context) error {
	return s.c.do(ctx, http.MethodDelete, sandboxPath(s.ID), nil, nil, nil)
}

// ExtendTimeout pushes the sandbox's expiry d further.
func (s *Sandbox) ExtendTimeout(ctx context.Context, d time.Duration) error {
	return s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/extend-timeout", nil,
		api.ExtendTimeoutRequest{DurationMs: d.Milliseconds()}, &s.Sandbox)
}

// Pause keeps the sandbox's filesystem as a snapshot and stops it; it
// keeps its id, ports, env and policy, and its timeout clock stops.
// Processes and memory are not kept (Sandbox.Paused.Memory is false).
func (s *Sandbox) Pause(ctx context.Context) error {
	return s.replace(ctx, "/pause", nil)
}

// Resume runs a paused sandbox again under its id, from its pause
// snapshot, with timeout from now (0: the timeout it had when paused).
func (s *Sandbox) Resume(ctx context.Context, timeout time.Duration) error {
	return s.replace(ctx, "/resume", api.ResumeRequest{TimeoutMs: timeout.Milliseconds()})
}

// replace POSTs body to one of the sandbox's routes and replaces s with
// the sandbox answered, whole: fields it no longer has (a paused
// sandbox's expiresAt) must not keep their old values.
func (s *Sandbox) replace(ctx context.Context, route string, body any) error {
	var out api.Sandbox
	if err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+route, nil, body, &out); err != nil {
		return err
	}
	s.Sandbox = out
	return nil
}

// Stats returns the sandbox's resource figures.
func (s *Sandbox) Stats(ctx context.Context) (api.Stats, error) {
	var st api.Stats
	err := s.c.do(ctx, http.MethodGet, sandboxPath(s.ID)+"/stats", nil, nil, &st)
	return st, err
}

// Ports lists the TCP ports listening inside the sandbox.
func (s *Sandbox) Ports(ctx context.Context) ([]api.Port, error) {
	var list api.PortList
	err := s.c.do(ctx, http.MethodGet, sandboxPath(s.ID)+"/ports", nil, nil, &list)
	return list.Ports, err
}

// RunCommand starts a command. With req.Detached it returns as soon as the
// command runs; otherwise it returns once it finished, with ExitCode set.
// A non-zero exit code is not an error.
func (s *Sandbox) RunCommand(ctx context.Context, req api.CommandRequest) (*Command, error) {
	cmd := &Command{c: s.c}
	if err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/commands", nil, req, &cmd.Command); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Command returns a command of the sandbox by id.
func (s *Sandbox) Command(ctx context.Context, id string) (*Command, error) {
	cmd := &Command{c: s.c}
	if err := s.c.do(ctx, http.MethodGet, commandPath(s.ID, id), nil, nil, &cmd.Command); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Commands lists the sandbox's commands, oldest first.
func (s *Sandbox) Commands(ctx context.Context) ([]*Command, error) {
	var list api.CommandList
	if err := s.c.do(ctx, http.MethodGet, sandboxPath(s.ID)+"/commands", nil, nil, &list); err != nil {
		return nil, err
	}
	out := make([]*Command, 0, len(list.Commands))
	for _, c := range list.Commands {
		out = append(out, &Command{Command: c, c: s.c})
	}
	return out, nil
}

// MkDir creates dir and its parents in the sandbox (mkdir -p). With sudo
// root owns them, else the sandbox user.
func (s *Sandbox) MkDir(ctx context.Context, dir string, sudo bool) error {
	return s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/directories", nil, api.MkdirRequest{Path: dir, Sudo: sudo}, nil)
}

// WriteTar unpacks a tar stream (plain or gzip) into dir in the sandbox.
// r is streamed, not buffered.
func (s *Sandbox) WriteTar(ctx context.Context, dir string, r io.Reader, opts ...WriteOption) (api.WriteFilesResult, error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	var res api.WriteFilesResult
	q := url.Values{"path": {dir}}
	if o.sudo {
		q.Set("sudo", "true")
	}
	ct := api.ContentTypeTar
	if o.gzip {
		ct = api.ContentTypeGzip
	}
	req, err := s.c.request(ctx, http.MethodPut, sandboxPath(s.ID)+"/files", q, r, ct)
	if err != nil {
		return res, err
	}
	resp, err := s.c.send(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if err := decodeJSONBody(resp.Body, &res); err != nil {
		return res, fmt.Errorf("paddock: decode write result: %w", err)
	}
	return res, nil
}

// ListDir lists the entries below the directory dir to depth levels (0
// or 1: its own entries), sorted by path, read as the sandbox user unless
// ReadSudo. dir resolves inside the sandbox as it would for its own
// processes; below it symlinks are listed, not followed. The entries come
// from inside the sandbox: a name is any bytes but "/" and NUL.
func (s *Sandbox) ListDir(ctx context.Context, dir string, depth int, opts ...ReadOption) (api.DirectoryListing, error) {
	q := readQuery(dir, opts)
	if depth > 1 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out api.DirectoryListing
	err := s.c.do(ctx, http.MethodGet, sandboxPath(s.ID)+"/directories", q, nil, &out)
	return out, err
}

// FileInfo is what ReadFile learns of a file besides its content.
type FileInfo struct {
	Size int64 // -1 when unknown
	Mode uint32
}

// FileReader is an open file read from a sandbox.
type FileReader struct {
	io.ReadCloser
	Info FileInfo
}

// ReadFile streams a regular file from the sandbox, read as the sandbox
// user unless ReadSudo; the caller closes it. A missing file is an error
// matching ErrNotFound, one the reader may not read ErrForbidden.
func (s *Sandbox) ReadFile(ctx context.Context, path string, opts ...ReadOption) (*FileReader, error) {
	req, err := s.c.request(ctx, http.MethodGet, sandboxPath(s.ID)+"/files", readQuery(path, opts), nil, "")
	if err != nil {
		return nil, err
	}
	resp, err := s.c.send(req)
	if err != nil {
		return nil, err
	}
	mode, _ := strconv.ParseUint(resp.Header.Get(api.HeaderFileMode), 8, 32)
	return &FileReader{ReadCloser: resp.Body, Info: FileInfo{Size: resp.ContentLength, Mode: uint32(mode)}}, nil
}

// ReadArchive streams path from the sandbox as a tar (application/x-tar):
// a directory's contents with names relative to it, or a regular file as
// one entry named by its base name. Symlinks inside are symlink entries.
// The caller closes the stream. The entries come from inside the sandbox:
// extract them as untrusted input (absolute names, "..", symlinks leading
// out). A stream the sandbox could not finish ends in a read error, not in
// a clean end of the tar. It is read as the sandbox user, leaving out what
// the user cannot read, unless ReadSudo.
func (s *Sandbox) ReadArchive(ctx context.Context, path string, opts ...ReadOption) (io.ReadCloser, error) {
	req, err := s.c.request(ctx, http.MethodGet, sandboxPath(s.ID)+"/archive", readQuery(path, opts), nil, "")
	if err != nil {
		return nil, err
	}
	resp, err := s.c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
