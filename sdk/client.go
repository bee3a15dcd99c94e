// Package sdk is the Go client of paddock's HTTP API (/api/v1). It imports
// only the api package and the standard library, so programs that drive
// sandboxes stay free of the server's dependencies.
//
//	c := sdk.New("http://127.0.0.1:7420", token)
//	sb, err := c.Create(ctx, api.CreateSandboxRequest{})
//	cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "echo", Args: []string{"hi"}})
//	fmt.Println(*cmd.ExitCode)
package sdk

import (
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
	"strings"

	"github.com/paddock-dev/paddock/api"
)

// Client calls one paddock server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send requests through hc. Leave its
// Timeout at zero: log streams and non-detached commands last as long as
// the command; bound calls with their context instead. The client uses a
// copy of hc whose redirects never carry the bearer token (see New).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// New returns a client of the server at baseURL (such as
// "http://127.0.0.1:7420") that authenticates with token.
//
// The token goes only to the request the client builds, never to a
// redirect's target: an app behind the app proxy, or a sandbox port, can
// answer with a redirect to another sandbox on the API's own origin, and
// net/http would resend Authorization there.
func New(baseURL, token string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	c.hc = withoutCredentialsOnRedirect(c.hc)
	return c
}

// maxRedirects is net/http's own default bound.
const maxRedirects = 10

// withoutCredentialsOnRedirect returns a shallow copy of hc (the caller's
// client is not changed) that strips paddock's credentials from every
// redirected request before its own CheckRedirect, if any, decides.
func withoutCredentialsOnRedirect(hc *http.Client) *http.Client {
	cp := *hc
	next := hc.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		req.Header.Del("Authorization")
		req.Header.Del(api.HeaderPortToken)
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &cp
}

// request builds a request to path (below /api/v1).
func (c *Client) request(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) (*http.Request, error) {
	u := c.base + api.Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("paddock: build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req, nil
}

// send performs req and returns the response if its status is 2xx, else the
// decoded *APIError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("paddock: %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeAPIError(resp)
	}
	return resp, nil
}

// do sends in as JSON (if not nil) and decodes the answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("paddock: encode request: %w", err)
		}
		body, ct = bytes.NewReader(data), api.ContentTypeJSON
	}
	req, err := c.request(ctx, method, path, q, body, ct)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("paddock: decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func sandboxPath(id string) string { return "/sandboxes/" + url.PathEscape(id) }

func commandPath(sandboxID, cmdID string) string {
	return sandboxPath(sandboxID) + "/commands/" + url.PathEscape(cmdID)
}

// Create creates a sandbox and returns once it runs.
func (c *Client) Create(ctx context.Context, req api.CreateSandboxRequest) (*Sandbox, error) {
	sb := &Sandbox{c: c}
	if err := c.do(ctx, http.MethodPost, "/sandboxes", nil, req, &sb.Sandbox); err != nil {
		return nil, err
	}
	return sb, nil
}

// Get returns a sandbox by id. A missing one is an error matching ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (*Sandbox, error) {
	sb := &Sandbox{c: c}
	if err := c.do(ctx, http.MethodGet, sandboxPath(id), nil, nil, &sb.Sandbox); err != nil {
		return nil, err
	}
	return sb, nil
}

// ListOptions selects sandboxes. Zero values mean the server's defaults.
type ListOptions struct {
	Cursor string
	Limit  int
	State  string // one of api.StatusRunning...; "" for all
	// Labels keeps sandboxes carrying every one of these labels.
	Labels map[string]string
}

// ListPage returns one page of sandboxes; pass its NextCursor back in
// opts.Cursor for the next one.
func (c *Client) ListPage(ctx context.Context, opts ListOptions) (api.SandboxList, error) {
	q := url.Values{}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	labelQuery(q, opts.Labels)
	var page api.SandboxList
	err := c.do(ctx, http.MethodGet, "/sandboxes", q, nil, &page)
	return page, err
}

// List iterates over every sandbox, fetching pages of opts.Limit as it goes.
// It stops at the first error, which it yields.
func (c *Client) List(ctx context.Context, opts ListOptions) iter.Seq2[*Sandbox, error] {
	return func(yield func(*Sandbox, error) bool) {
		for {
			page, err := c.ListPage(ctx, opts)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, s := range page.Sandboxes {
				if !yield(&Sandbox{Sandbox: s, c: c}, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			opts.Cursor = page.NextCursor
		}
	}
}

// APIError is an error answer of the server.
type APIError struct {
	Status  int    // HTTP status; 0 for an error line that ended a log stream
	Code    string // stable machine-readable code, such as "sandbox_not_found"
	Message string
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("paddock: %s (%s)", e.Message, e.Code)
	}
	return fmt.Sprintf("paddock: %s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// Errors an *APIError matches with errors.Is, by HTTP status.
var (
	ErrInvalid          = errors.New("invalid request")     // 400
	ErrUnauthorized     = errors.New("unauthorized")        // 401
	ErrBudgetExceeded   = errors.New("budget exceeded")     // 402: the team's hard cap refuses new work
	ErrForbidden        = errors.New("forbidden")           // 403
	ErrNotFound         = errors.New("not found")           // 404
	ErrConflict         = errors.New("conflict")            // 409
	ErrTooLarge         = errors.New("too large")           // 413
	ErrRateLimited      = errors.New("rate limited")        // 429
	ErrUnavailable      = errors.New("unavailable")         // 503
	ErrNotRunning       = errors.New("sandbox not running") // 409 sandbox_not_running
	ErrStreamEndedEarly = errors.New("paddock: log stream ended before the command's exit line")
)

// Is lets errors.Is(err, sdk.ErrNotFound) and friends match.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrBudgetExceeded:
		return e.Status == http.StatusPaymentRequired
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	case ErrNotRunning:
		return e.Code == "sandbox_not_running"
	}
	return false
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

func decodeAPIError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body api.Error
	if err := json.Unmarshal(data, &body); err != nil || body.Error.Code == "" {
		msg := strings.TrimSpace(string(data))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: msg}
	}
	return &APIError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
}
