package sdk

import (
	"bufio"
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
	"time"

	"github.com/paddock-dev/paddock/api"
)

func projectPath(id string) string { return "/projects/" + url.PathEscape(id) }

// CreateProject creates a project in the caller's team.
func (c *Client) CreateProject(ctx context.Context, req api.ProjectRequest) (api.Project, error) {
	var out api.Project
	err := c.do(ctx, http.MethodPost, "/projects", nil, req, &out)
	return out, err
}

// GetProject returns a project; another team's is ErrNotFound.
func (c *Client) GetProject(ctx context.Context, id string) (api.Project, error) {
	var out api.Project
	err := c.do(ctx, http.MethodGet, projectPath(id), nil, nil, &out)
	return out, err
}

// UpdateProject replaces a project's spec; see api.ProjectRequest for what
// a field left out means.
func (c *Client) UpdateProject(ctx context.Context, id string, req api.ProjectRequest) (api.Project, error) {
	var out api.Project
	err := c.do(ctx, http.MethodPut, projectPath(id), nil, req, &out)
	return out, err
}

// DeleteProject deactivates a project if needed and deletes it.
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, projectPath(id), nil, nil, nil)
}

// PageOptions selects a page of a list; zero values mean the server's defaults.
type PageOptions struct {
	Cursor string
	Limit  int
	// Labels filters projects (within each page: a page may be short).
	Labels map[string]string
}

func (o PageOptions) query() url.Values {
	q := url.Values{}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	labelQuery(q, o.Labels)
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	return q
}

// ListProjectsPage returns one page of the caller's team's projects.
func (c *Client) ListProjectsPage(ctx context.Context, opts PageOptions) (api.ProjectList, error) {
	var out api.ProjectList
	err := c.do(ctx, http.MethodGet, "/projects", opts.query(), nil, &out)
	return out, err
}

// ListProjects iterates over every project of the caller's team; it stops
// at the first error, which it yields.
func (c *Client) ListProjects(ctx context.Context) iter.Seq2[api.Project, error] {
	return func(yield func(api.Project, error) bool) {
		var opts PageOptions
		for {
			page, err := c.ListProjectsPage(ctx, opts)
			if err != nil {
				yield(api.Project{}, err)
				return
			}
			for _, p := range page.Projects {
				if !yield(p, nil) {
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

// Activate starts the project's app (or joins the activation under way)
// and returns at once; see ActivateAndWait to follow it.
func (c *Client) Activate(ctx context.Context, projectID string) (api.Activation, error) {
	var out api.Activation
	err := c.do(ctx, http.MethodPost, projectPath(projectID)+"/activate", nil, nil, &out)
	return out, err
}

// ActivationFailedError is the error of an activation that ended failed.
type ActivationFailedError struct {
	Activation api.Activation
}

func (e *ActivationFailedError) Error() string {
	msg := "paddock: activation " + e.Activation.ID + " failed"
	if e.Activation.Error != "" {
		msg += ": " + e.Activation.Error
	}
	return msg
}

// ActivateAndWait activates a project and follows its progress until the
// app is ready, calling progress (may be nil) with each event. If the
// stream breaks it resumes where it stopped. A failed activation is an
// *ActivationFailedError, whose Activation has the log's tail.
func (c *Client) ActivateAndWait(ctx context.Context, projectID string, progress func(api.ActivationEvent)) (api.Activation, error) {
	req, err := c.request(ctx, http.MethodPost, projectPath(projectID)+"/activate", nil, nil, "")
	if err != nil {
		return api.Activation{}, err
	}
	req.Header.Set("Accept", api.ContentTypeEventStream)
	resp, err := c.send(req)
	if err != nil {
		return api.Activation{}, err
	}
	actID := resp.Header.Get("X-Paddock-Activation")
	last, done, streamErr := followEvents(resp.Body, progress)
	resp.Body.Close()
	if actID == "" {
		if streamErr == nil {
			streamErr = errors.New("the server named no activation")
		}
		return api.Activation{}, fmt.Errorf("paddock: activate %s: %w", projectID, streamErr)
	}
	// A stream cut before its end resumes from the last event seen; a few
	// tries cover a restarting proxy without hiding a server that is gone.
	for try := 0; !done && try < 5; try++ {
		if ctx.Err() != nil {
			return api.Activation{}, ctx.Err()
		}
		if try > 0 {
			select {
			case <-ctx.Done():
				return api.Activation{}, ctx.Err()
			case <-time.After(time.Duration(try) * 500 * time.Millisecond):
			}
		}
		var body io.ReadCloser
		body, streamErr = c.openActivationEvents(ctx, actID, last)
		if streamErr != nil {
			continue
		}
		var seq int64
		seq, done, streamErr = followEvents(body, progress)
		body.Close()
		last = max(last, seq)
	}
	if !done {
		if streamErr == nil {
			streamErr = io.ErrUnexpectedEOF
		}
		return api.Activation{}, fmt.Errorf("paddock: follow activation %s: %w", actID, streamErr)
	}
	a, err := c.GetActivation(ctx, actID)
	if err != nil {
		return a, err
	}
	if a.State == api.ActivationFailed {
		return a, &ActivationFailedError{Activation: a}
	}
	return a, nil
}

// followEvents reads activation events until a terminal one or the end of
// the stream; it returns the last sequence number seen and whether the
// terminal event came.
func followEvents(r io.Reader, progress func(api.ActivationEvent)) (last int64, done bool, err error) {
	for ev, err := range ReadSSE(r) {
		if err != nil {
			return last, false, err
		}
		var e api.ActivationEvent
		if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
			return last, false, fmt.Errorf("decode activation event: %w", err)
		}
		last = max(last, e.Seq)
		if progress != nil {
			progress(e)
		}
		if e.Terminal() {
			return last, true, nil
		}
	}
	return last, false, nil
}

func (c *Client) openActivationEvents(ctx context.Context, activationID string, afterSeq int64) (io.ReadCloser, error) {
	req, err := c.request(ctx, http.MethodGet, "/activations/"+url.PathEscape(activationID)+"/events", nil, nil, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", api.ContentTypeEventStream)
	if afterSeq > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(afterSeq, 10))
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ActivationEvents iterates over an activation's events after afterSeq,
// following them until ready or failed.
func (c *Client) ActivationEvents(ctx context.Context, activationID string, afterSeq int64) iter.Seq2[api.ActivationEvent, error] {
	return func(yield func(api.ActivationEvent, error) bool) {
		body, err := c.openActivationEvents(ctx, activationID, afterSeq)
		if err != nil {
			yield(api.ActivationEvent{}, err)
			return
		}
		defer body.Close()
		for ev, err := range ReadSSE(body) {
			if err != nil {
				yield(api.ActivationEvent{}, err)
				return
			}
			var e api.ActivationEvent
			if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
				yield(api.ActivationEvent{}, fmt.Errorf("paddock: decode activation event: %w", err))
				return
			}
			if !yield(e, nil) {
				return
			}
		}
	}
}

// Deactivate stops a project's app, saving its persistent paths.
func (c *Client) Deactivate(ctx context.Context, projectID string) (api.Activation, error) {
	var out api.Activation
	err := c.do(ctx, http.MethodPost, projectPath(projectID)+"/deactivate", nil, nil, &out)
	return out, err
}

// Heartbeat counts as activity for the project's idle timeout.
func (c *Client) Heartbeat(ctx context.Context, projectID string) error {
	return c.do(ctx, http.MethodPost, projectPath(projectID)+"/heartbeat", nil, nil, nil)
}

// GetActivation returns one activation.
func (c *Client) GetActivation(ctx context.Context, id string) (api.Activation, error) {
	var out api.Activation
	err := c.do(ctx, http.MethodGet, "/activations/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ListActivations returns one page of a project's activations.
func (c *Client) ListActivations(ctx context.Context, projectID string, opts PageOptions) (api.ActivationList, error) {
	var out api.ActivationList
	err := c.do(ctx, http.MethodGet, projectPath(projectID)+"/activations", opts.query(), nil, &out)
	return out, err
}

// AppURL returns a signed URL of the app's host form, for a browser.
func (c *Client) AppURL(ctx context.Context, projectID string, ttl time.Duration) (api.SignedURL, error) {
	var out api.SignedURL
	err := c.do(ctx, http.MethodPost, projectPath(projectID)+"/app-url", nil, api.AppURLRequest{TTLSeconds: int64(ttl / time.Second)}, &out)
	return out, err
}

// AppRequest builds a request to a project's app through the proxy: path
// (with any query) is the app's own, such as "/sessions". Send it with
// DoApp; the app's answers come back as they are, errors included.
func (c *Client) AppRequest(ctx context.Context, projectID, method, path string, body io.Reader) (*http.Request, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := c.base + api.Prefix + projectPath(projectID) + "/app" + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("paddock: build app request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return req, nil
}

// DoApp sends a request built by AppRequest. Errors of the proxy itself
// (project_not_active, not found, too large), which it marks with the
// X-Paddock-Error header, are *APIError; the app's own answers, whatever
// their status, are returned for the caller to read.
func (c *Client) DoApp(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("paddock: %s %s: %w", req.Method, req.URL.Path, err)
	}
	if code := resp.Header.Get(api.HeaderProxyError); code != "" {
		defer resp.Body.Close()
		return nil, decodeAPIError(resp)
	}
	return resp, nil
}

// SSEEvent is one server-sent event. Event is "" for an unnamed one (the
// client treats it as "message"); ID is "" when the event sets none.
type SSEEvent struct {
	Event string
	ID    string
	Data  string
}

// maxSSELine bounds one line of an event stream.
const maxSSELine = 8 << 20

// ReadSSE iterates over the events of a text/event-stream body as the
// WHATWG spec parses them: comments skipped, multi-line data joined with
// "\n", an event dispatched at each blank line. It ends at EOF (a final
// event without its blank line is dropped, as browsers do).
func ReadSSE(r io.Reader) iter.Seq2[SSEEvent, error] {
	return func(yield func(SSEEvent, error) bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), maxSSELine)
		var ev SSEEvent
		var data []string
		hasData := false
		for sc.Scan() {
			line := strings.TrimSuffix(sc.Text(), "\r")
			if line == "" {
				if hasData {
					ev.Data = strings.Join(data, "\n")
					if !yield(ev, nil) {
						return
					}
				}
				ev, data, hasData = SSEEvent{}, data[:0], false
				continue
			}
			if strings.HasPrefix(line, ":") {
				continue
			}
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Event = value
			case "id":
				if !strings.ContainsRune(value, 0) {
					ev.ID = value
				}
			case "data":
				data = append(data, value)
				hasData = true
			}
		}
		if err := sc.Err(); err != nil {
			yield(SSEEvent{}, fmt.Errorf("paddock: read event stream: %w", err))
		}
	}
}
