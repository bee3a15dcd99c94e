package soak

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// APIClient is Client over paddock's HTTP API, through the Go SDK, the way
// any other client calls it.
type APIClient struct {
	c       *sdk.Client
	tr      *http.Transport
	image   string
	timeout time.Duration
}

var _ Client = (*APIClient)(nil)

// NewAPIClient talks to the server at url with token. Its sandboxes run
// image ("" for the server's default) and stop on their own after timeout,
// should the soak be killed before it destroys them. Its connection pool
// holds one idle connection per worker, as a client of that many parallel
// callers would.
func NewAPIClient(url, token, image string, timeout time.Duration, workers int) *APIClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = workers
	return &APIClient{c: sdk.New(url, token, sdk.WithHTTPClient(&http.Client{Transport: tr})), tr: tr, image: image, timeout: timeout}
}

// Create implements Client.
func (a *APIClient) Create(ctx context.Context) (string, error) {
	sb, err := a.c.Create(ctx, api.CreateSandboxRequest{Image: a.image, TimeoutMs: a.timeout.Milliseconds()})
	if err != nil {
		return "", err
	}
	if sb.Status != api.StatusRunning {
		return sb.ID, fmt.Errorf("created sandbox is %s", sb.Status)
	}
	return sb.ID, nil
}

// Write implements Client: one file, as a tar, into its directory.
func (a *APIClient) Write(ctx context.Context, id, p string, data []byte) error {
	_, err := a.c.Sandbox(id).WriteFiles(ctx, path.Dir(p), []sdk.File{{Path: path.Base(p), Content: data}})
	return err
}

// Exec implements Client: the command runs to its end in one request, and
// its stdout comes from the command's logs.
func (a *APIClient) Exec(ctx context.Context, id string, argv []string, max int) ([]byte, int, error) {
	cmd, err := a.c.Sandbox(id).RunCommand(ctx, api.CommandRequest{Cmd: argv[0], Args: argv[1:]})
	if err != nil {
		return nil, 0, err
	}
	var out []byte
	for l, err := range cmd.Logs(ctx) {
		if err != nil {
			return nil, 0, err
		}
		if l.Exit == nil && l.Stream == api.StreamStdout {
			out = append(out, l.Bytes()...)
			if len(out) > max {
				return nil, 0, fmt.Errorf("stdout is longer than %d bytes", max)
			}
		}
	}
	return out, cmd.ExitCodeOr(-1), nil
}

// Read implements Client.
func (a *APIClient) Read(ctx context.Context, id, p string, max int) ([]byte, error) {
	f, err := a.c.Sandbox(id).ReadFile(ctx, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, int64(max)))
}

// Destroy implements Client.
func (a *APIClient) Destroy(ctx context.Context, id string) error {
	return a.c.Sandbox(id).Delete(ctx)
}

// List implements Client.
func (a *APIClient) List(ctx context.Context) ([]string, error) {
	var ids []string
	for sb, err := range a.c.List(ctx, sdk.ListOptions{}) {
		if err != nil {
			return nil, err
		}
		ids = append(ids, sb.ID)
	}
	return ids, nil
}

// CloseIdle implements Client.
func (a *APIClient) CloseIdle() { a.tr.CloseIdleConnections() }
