package server_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/sdk"
)

type testEnv struct {
	srv    *server.Server
	sbs    *fake.Sandboxes
	agent  *fake.Agent
	url    string
	token  string
	client *sdk.Client
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

const maxUpload = 64 << 10

func setup(t *testing.T) *testEnv {
	t.Helper()
	fa, ac := startFakeAgent(t)
	sbs := newFakeSandboxes(ac)
	tokens, err := server.OpenFileTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, created, err := tokens.EnsureAdminToken()
	if err != nil || !created {
		t.Fatalf("EnsureAdminToken = %v, %v", created, err)
	}
	logs := &syncBuffer{mu: make(chan struct{}, 1)}
	srv, err := server.New(server.Config{
		Sandboxes:      sbs,
		Tokens:         tokens,
		Logger:         slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxUploadBytes: maxUpload,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	sbs.Add(sandbox.Sandbox{ID: "run", State: sandbox.Running, Image: "host",
		Env: map[string]string{"A": "sandbox", "B": "sandbox"}, CreatedAt: time.Unix(0, 0), ExpiresAt: time.Unix(300, 0)})
	sbs.Add(sandbox.Sandbox{ID: "stopped", State: sandbox.Stopped, Image: "host", CreatedAt: time.Unix(0, 0)})
	return &testEnv{srv: srv, sbs: sbs, agent: fa, url: hs.URL, token: token, client: sdk.New(hs.URL, token), logs: logs}
}

// raw sends a request with the admin token (unless headers override it) and
// returns the status, headers and body.
func (e *testEnv) raw(t *testing.T, method, path string, body io.Reader, headers map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

func errorCode(t *testing.T, body []byte) api.ErrorDetail {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error
}

func TestAuth(t *testing.T) {
	e := setup(t)
	tests := []struct {
		name, path, auth string
		status           int
		code             string
	}{
		{"missing", "/api/v1/sandboxes", "", 401, "missing_token"},
		{"wrong scheme", "/api/v1/sandboxes", "Basic dXNlcjpwdw==", 401, "missing_token"},
		{"empty bearer", "/api/v1/sandboxes", "Bearer ", 401, "missing_token"},
		{"unknown token", "/api/v1/sandboxes", "Bearer pdk_nope", 401, "invalid_token"},
		{"unknown route still needs auth", "/api/v1/nothing", "", 401, "missing_token"},
		{"valid", "/api/v1/sandboxes", "Bearer " + e.token, 200, ""},
		{"valid lower-case scheme", "/api/v1/sandboxes/run", "bearer " + e.token, 200, ""},
		{"valid unknown route", "/api/v1/nothing", "Bearer " + e.token, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := tt.auth
			if auth == "" {
				auth = "" // deletes the header
			}
			status, h, body := e.raw(t, "GET", tt.path, nil, map[string]string{"Authorization": auth})
			if status != tt.status {
				t.Fatalf("status = %d, want %d: %s", status, tt.status, body)
			}
			if tt.code != "" {
				if got := errorCode(t, body).Code; got != tt.code {
					t.Errorf("code = %q, want %q", got, tt.code)
				}
			}
			if status == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	_, err := sdk.New(e.url, "pdk_wrong").Get(context.Background(), "run")
	if !errors.Is(err, sdk.ErrUnauthorized) || !sdk.IsCode(err, "invalid_token") {
		t.Errorf("sdk with a bad token: %v", err)
	}
}

// TestBadInput sends requests the server must refuse with a clear code,
// and checks that nothing changed: no sandbox mutation, no agent call that
// changes anything.
func TestBadInput(t *testing.T) {
	e := setup(t)
	big := `{"image":"` + strings.Repeat("a", 2<<20) + `"}`
	tests := []struct {
		name, method, path, body string
		headers                  map[string]string
		status                   int
		code                     string
		msgHas                   string
	}{
		{"malformed json", "POST", "/api/v1/sandboxes", `{"image":`, nil, 400, "invalid_json", ""},
		{"not an object", "POST", "/api/v1/sandboxes", `[1]`, nil, 400, "invalid_json", ""},
		{"null", "POST", "/api/v1/sandboxes", ` null `, nil, 400, "invalid_json", ""},
		{"null where a body may be empty", "POST", "/api/v1/sandboxes/run/commands/cmd-1/kill", `null`, nil, 400, "invalid_json", ""},
		{"trailing data", "POST", "/api/v1/sandboxes", `{} {}`, nil, 400, "invalid_json", ""},
		{"empty body", "POST", "/api/v1/sandboxes", ``, nil, 400, "invalid_json", ""},
		{"unknown field", "POST", "/api/v1/sandboxes", `{"imag":"host"}`, nil, 400, "invalid_json", `"imag"`},
		{"wrong type", "POST", "/api/v1/sandboxes", `{"timeoutMs":"soon"}`, nil, 400, "invalid_json", "timeoutMs"},
		{"json too large", "POST", "/api/v1/sandboxes", big, nil, 413, "too_large", ""},
		{"negative resources", "POST", "/api/v1/sandboxes", `{"resources":{"vcpus":-1}}`, nil, 400, "invalid_resources", ""},
		{"impossible resources", "POST", "/api/v1/sandboxes", `{"resources":{"vcpus":64}}`, nil, 400, "invalid_resources", ""},
		{"timeout past max", "POST", "/api/v1/sandboxes", `{"timeoutMs":86400000}`, nil, 400, "invalid_timeout", ""},
		{"negative timeout", "POST", "/api/v1/sandboxes", `{"timeoutMs":-5}`, nil, 400, "invalid_timeout", ""},
		{"bad env", "POST", "/api/v1/sandboxes", `{"env":{"A=B":"x"}}`, nil, 400, "invalid_env", ""},
		{"unknown image", "POST", "/api/v1/sandboxes", `{"image":"nope"}`, nil, 404, "image_not_found", ""},
		{"unknown sandbox", "GET", "/api/v1/sandboxes/sb-999", ``, nil, 404, "sandbox_not_found", ""},
		{"malformed sandbox id", "GET", "/api/v1/sandboxes/NOT_AN_ID", ``, nil, 404, "sandbox_not_found", ""},
		{"stop unknown", "POST", "/api/v1/sandboxes/sb-999/stop", ``, nil, 404, "sandbox_not_found", ""},
		{"delete unknown", "DELETE", "/api/v1/sandboxes/sb-999", ``, nil, 404, "sandbox_not_found", ""},
		{"extend zero", "POST", "/api/v1/sandboxes/run/extend-timeout", `{"durationMs":0}`, nil, 400, "invalid_duration", ""},
		{"extend past max", "POST", "/api/v1/sandboxes/run/extend-timeout", `{"durationMs":7200000}`, nil, 400, "invalid_timeout", ""},
		{"bad limit", "GET", "/api/v1/sandboxes?limit=0", ``, nil, 400, "invalid_limit", ""},
		{"bad state", "GET", "/api/v1/sandboxes?state=sleepy", ``, nil, 400, "invalid_state", ""},
		{"command without cmd", "POST", "/api/v1/sandboxes/run/commands", `{"args":["x"]}`, nil, 400, "invalid_command", ""},
		{"command relative cwd", "POST", "/api/v1/sandboxes/run/commands", `{"cmd":"ls","cwd":"tmp"}`, nil, 400, "invalid_path", ""},
		{"command unknown field", "POST", "/api/v1/sandboxes/run/commands", `{"cmd":"ls","detach":true}`, nil, 400, "invalid_json", `"detach"`},
		{"command on stopped sandbox", "POST", "/api/v1/sandboxes/stopped/commands", `{"cmd":"ls"}`, nil, 409, "sandbox_not_running", ""},
		{"command on unknown sandbox", "POST", "/api/v1/sandboxes/sb-999/commands", `{"cmd":"ls"}`, nil, 404, "sandbox_not_found", ""},
		{"unknown command", "GET", "/api/v1/sandboxes/run/commands/cmd-999", ``, nil, 404, "command_not_found", ""},
		{"unknown command wait", "GET", "/api/v1/sandboxes/run/commands/cmd-999/wait", ``, nil, 404, "command_not_found", ""},
		{"unknown command logs", "GET", "/api/v1/sandboxes/run/commands/cmd-999/logs", ``, nil, 404, "command_not_found", ""},
		{"kill unknown command", "POST", "/api/v1/sandboxes/run/commands/cmd-999/kill", ``, nil, 404, "command_not_found", ""},
		{"bad signal", "POST", "/api/v1/sandboxes/run/commands/cmd-1/kill", `{"signal":"SIGNOPE"}`, nil, 400, "invalid_signal", ""},
		{"signal out of range", "POST", "/api/v1/sandboxes/run/commands/cmd-1/kill", `{"signal":99}`, nil, 400, "invalid_signal", ""},
		{"bad follow", "GET", "/api/v1/sandboxes/run/commands/cmd-1/logs?follow=maybe", ``, nil, 400, "invalid_query", ""},
		{"mkdir relative", "POST", "/api/v1/sandboxes/run/directories", `{"path":"a/b"}`, nil, 400, "invalid_path", ""},
		{"mkdir dotdot", "POST", "/api/v1/sandboxes/run/directories", `{"path":"/a/../../etc"}`, nil, 400, "invalid_path", ""},
		{"mkdir NUL", "POST", "/api/v1/sandboxes/run/directories", `{"path":"/a\u0000b"}`, nil, 400, "invalid_path", ""},
		{"mkdir on stopped", "POST", "/api/v1/sandboxes/stopped/directories", `{"path":"/a"}`, nil, 409, "sandbox_not_running", ""},
		{"read relative", "GET", "/api/v1/sandboxes/run/files?path=etc/passwd", ``, nil, 400, "invalid_path", ""},
		{"read dotdot", "GET", "/api/v1/sandboxes/run/files?path=/tmp/../../x", ``, nil, 400, "invalid_path", ""},
		{"read no path", "GET", "/api/v1/sandboxes/run/files", ``, nil, 400, "invalid_path", ""},
		{"read missing file", "GET", "/api/v1/sandboxes/run/files?path=/nope", ``, nil, 404, "file_not_found", ""},
		{"archive relative", "GET", "/api/v1/sandboxes/run/archive?path=etc", ``, nil, 400, "invalid_path", ""},
		{"archive dotdot", "GET", "/api/v1/sandboxes/run/archive?path=/tmp/../../x", ``, nil, 400, "invalid_path", ""},
		{"archive NUL", "GET", "/api/v1/sandboxes/run/archive?path=/a%00b", ``, nil, 400, "invalid_path", ""},
		{"archive no path", "GET", "/api/v1/sandboxes/run/archive", ``, nil, 400, "invalid_path", ""},
		{"archive missing", "GET", "/api/v1/sandboxes/run/archive?path=/nope", ``, nil, 404, "file_not_found", ""},
		{"archive of stopped", "GET", "/api/v1/sandboxes/stopped/archive?path=/tmp", ``, nil, 409, "sandbox_not_running", ""},
		{"archive of unknown sandbox", "GET", "/api/v1/sandboxes/sb-999/archive?path=/tmp", ``, nil, 404, "sandbox_not_found", ""},
		{"archive wrong method", "POST", "/api/v1/sandboxes/run/archive?path=/tmp", ``, nil, 405, "method_not_allowed", ""},
		{"upload dotdot", "PUT", "/api/v1/sandboxes/run/files?path=/a/..", `x`, map[string]string{"Content-Type": "application/x-tar"}, 400, "invalid_path", ""},
		{"upload NUL", "PUT", "/api/v1/sandboxes/run/files?path=/a%00b", `x`, map[string]string{"Content-Type": "application/x-tar"}, 400, "invalid_path", ""},
		{"upload media type", "PUT", "/api/v1/sandboxes/run/files?path=/tmp", `x`, map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type", ""},
		{"upload too large", "PUT", "/api/v1/sandboxes/run/files?path=/tmp", strings.Repeat("x", maxUpload+1), map[string]string{"Content-Type": "application/x-tar"}, 413, "too_large", ""},
		{"upload to stopped", "PUT", "/api/v1/sandboxes/stopped/files?path=/tmp", `x`, map[string]string{"Content-Type": "application/x-tar"}, 409, "sandbox_not_running", ""},
		{"wrong method", "PATCH", "/api/v1/sandboxes/run", `{}`, nil, 405, "method_not_allowed", ""},
		{"wrong method on collection", "DELETE", "/api/v1/sandboxes", ``, nil, 405, "method_not_allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeAgent := e.sbs.Mutations(), e.agent.Mutations()
			status, h, body := e.raw(t, tt.method, tt.path, strings.NewReader(tt.body), tt.headers)
			if status != tt.status {
				t.Fatalf("status = %d, want %d: %s", status, tt.status, body)
			}
			got := errorCode(t, body)
			if got.Code != tt.code {
				t.Errorf("code = %q, want %q (%s)", got.Code, tt.code, got.Message)
			}
			if !strings.Contains(got.Message, tt.msgHas) {
				t.Errorf("message %q does not name %s", got.Message, tt.msgHas)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if status == 405 && h.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if after := e.sbs.Mutations(); !slices.Equal(before, after) {
				t.Errorf("sandboxes changed: %v -> %v", before, after)
			}
			if e.agent.Mutations() != beforeAgent {
				t.Error("the agent was asked to change something")
			}
		})
	}
}

func TestUploadTooLargeChunked(t *testing.T) {
	e := setup(t)
	// No Content-Length: the bound trips while streaming.
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte("y"), 4096)
		for i := 0; i < (maxUpload/4096)+4; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	status, _, body := e.raw(t, "PUT", "/api/v1/sandboxes/run/files?path=/tmp", pr, map[string]string{"Content-Type": "application/x-tar"})
	pr.Close()
	if status != 413 || errorCode(t, body).Code != "too_large" {
		t.Fatalf("status %d body %s", status, body)
	}
}

func TestPanicRecovered(t *testing.T) {
	e := setup(t)
	e.sbs.Add(sandbox.Sandbox{ID: "panic"})
	status, _, body := e.raw(t, "GET", "/api/v1/sandboxes/panic", nil, nil)
	if status != 500 || errorCode(t, body).Code != "internal" {
		t.Fatalf("status %d body %s", status, body)
	}
	if strings.Contains(string(body), "fake panic") {
		t.Error("internal detail sent to the client")
	}
	if !strings.Contains(e.logs.String(), "fake panic") {
		t.Error("panic not logged")
	}
}

func TestSandboxLifecycle(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb, err := e.client.Create(ctx, api.CreateSandboxRequest{
		Resources: api.Resources{VCPUs: 2}, TimeoutMs: 60_000, Env: map[string]string{"K": "V"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Status != api.StatusRunning || sb.Resources.VCPUs != 2 || sb.Env["K"] != "V" || sb.ExpiresAt.IsZero() {
		t.Errorf("created %+v", sb.Sandbox)
	}
	got, err := e.client.Get(ctx, sb.ID)
	if err != nil || got.ID != sb.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	before := sb.ExpiresAt
	if err := sb.ExtendTimeout(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d := sb.ExpiresAt.Sub(before); d != time.Minute {
		t.Errorf("extended by %s", d)
	}
	st, err := sb.Stats(ctx)
	if err != nil || st.CPUUsageMs != 1500 || st.PIDs != 3 {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	ports, err := sb.Ports(ctx)
	if err != nil || len(ports) != 1 || ports[0] != (api.Port{Port: 3000, Address: "0.0.0.0"}) {
		t.Errorf("Ports = %+v, %v", ports, err)
	}
	if err := sb.Stop(ctx); err != nil || sb.Status != api.StatusStopped {
		t.Fatalf("Stop: %v, status %s", err, sb.Status)
	}
	_, err = sb.RunCommand(ctx, api.CommandRequest{Cmd: "ls"})
	if !errors.Is(err, sdk.ErrNotRunning) || !errors.Is(err, sdk.ErrConflict) {
		t.Errorf("command on stopped sandbox: %v", err)
	}
	if err := sb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Get(ctx, sb.ID); !errors.Is(err, sdk.ErrNotFound) || !sdk.IsCode(err, "sandbox_not_found") {
		t.Errorf("Get after delete: %v", err)
	}
	want := []string{"create sb-001", "extend sb-001", "stop sb-001", "delete sb-001"}
	if got := e.sbs.Mutations(); !slices.Equal(got, want) {
		t.Errorf("mutations = %v, want %v", got, want)
	}
	// The request log names the sandbox under the stable key.
	if !strings.Contains(e.logs.String(), `"sandbox":"sb-001"`) {
		t.Error("request log lacks the sandbox attribute")
	}
}

// TestPauseResume: pause and resume through the SDK; the sandbox keeps its
// id, shows what the pause kept, and gets the paused run's timeout back.
func TestPauseResume(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	sb, err := e.client.Create(ctx, api.CreateSandboxRequest{TimeoutMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if sb.Status != api.StatusPaused || sb.Paused == nil || sb.Paused.Memory || sb.Paused.TimeoutMs != 60_000 || !sb.ExpiresAt.IsZero() {
		t.Fatalf("paused = %s %+v, expires %s", sb.Status, sb.Paused, sb.ExpiresAt)
	}
	page, err := e.client.ListPage(ctx, sdk.ListOptions{State: api.StatusPaused})
	if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].ID != sb.ID {
		t.Errorf("list paused = %+v, %v", page, err)
	}
	if err := sb.Resume(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if sb.Status != api.StatusRunning || sb.Paused != nil || sb.ExpiresAt.Sub(sb.StartedAt) != time.Minute {
		t.Errorf("resumed = %s, started %s, expires %s", sb.Status, sb.StartedAt, sb.ExpiresAt)
	}
	status, _, body := e.raw(t, "POST", "/api/v1/sandboxes/stopped/resume", nil, nil)
	if status != http.StatusConflict || errorCode(t, body).Code != "sandbox_not_paused" {
		t.Errorf("resume a stopped sandbox = %d %s", status, body)
	}
	status, _, body = e.raw(t, "POST", "/api/v1/sandboxes/run/resume", strings.NewReader(`{"timeoutMs":-1}`), nil)
	if status != http.StatusBadRequest || errorCode(t, body).Code != "invalid_timeout" {
		t.Errorf("resume with a negative timeout = %d %s", status, body)
	}
}

func TestListPagination(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	for range 5 {
		if _, err := e.client.Create(ctx, api.CreateSandboxRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := e.client.ListPage(ctx, sdk.ListOptions{Limit: 2, State: api.StatusRunning})
	if err != nil || len(page.Sandboxes) != 2 || page.NextCursor == "" {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	var ids []string
	for sb, err := range e.client.List(ctx, sdk.ListOptions{Limit: 2, State: api.StatusRunning}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sb.ID)
	}
	want := []string{"run", "sb-001", "sb-002", "sb-003", "sb-004", "sb-005"}
	if !slices.Equal(ids, want) {
		t.Errorf("ids = %v, want %v", ids, want)
	}
	// Breaking out of the loop early stops fetching.
	n := 0
	for range e.client.List(ctx, sdk.ListOptions{Limit: 1}) {
		n++
		break
	}
	if n != 1 {
		t.Errorf("iterated %d after break", n)
	}
}

func TestRunCommand(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb := e.client.Sandbox("run")
	tests := []struct {
		name     string
		req      api.CommandRequest
		exitCode *int
		status   string
	}{
		{"waits for exit", api.CommandRequest{Cmd: "echo", Args: []string{"hi"}}, ptr(0), api.CommandExited},
		{"non-zero exit is no error", api.CommandRequest{Cmd: "fail"}, ptr(3), api.CommandExited},
		{"detached returns at once", api.CommandRequest{Cmd: "sleep", Args: []string{"1000"}, Detached: true}, nil, api.CommandRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := sb.RunCommand(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Status != tt.status || (tt.exitCode == nil) != (cmd.ExitCode == nil) ||
				(tt.exitCode != nil && *tt.exitCode != *cmd.ExitCode) {
				t.Errorf("command = %+v", cmd.Command)
			}
			if cmd.SandboxID != "run" || cmd.ID == "" {
				t.Errorf("ids: %+v", cmd.Command)
			}
		})
	}
	// The request goes to the sandbox layer's Exec as it came (the env
	// merge and the defaults are node's); not detached is a wait.
	if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "echo", Args: []string{"x"}, Env: map[string]string{"B": "req", "C": "req"}, Sudo: true, Cwd: "/tmp", TimeoutMs: 5000, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	want := sandbox.ExecRequest{Cmd: "echo", Args: []string{"x"}, Cwd: "/tmp", Env: map[string]string{"B": "req", "C": "req"},
		Sudo: true, TimeoutMs: 5000, Stdin: true, Wait: true}
	if got := e.sbs.LastExec(); !reflect.DeepEqual(got, want) {
		t.Errorf("Exec got %+v, want %+v", got, want)
	}
	cmds, err := sb.Commands(ctx)
	if err != nil || len(cmds) != 4 {
		t.Fatalf("Commands = %d, %v", len(cmds), err)
	}
	c, err := sb.Command(ctx, cmds[0].ID)
	if err != nil || c.Cmd != "echo" || c.ExitCodeOr(-1) != 0 {
		t.Errorf("Command = %+v, %v", c, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestLogs(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	// "héllo" split inside the two bytes of é, interleaved with stderr
	// holding the other half of a split "€", then bytes that are not UTF-8.
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("h\xc3"))
	e.agent.Emit(cmd.ID, agent.FrameStderr, []byte("\xe2\x82"))
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("\xa9llo\n"))
	e.agent.Emit(cmd.ID, agent.FrameStderr, []byte("\xac!"))

	// Replay without following: what exists now, and no exit line.
	var lines []api.LogLine
	for l, err := range cmd.Logs(ctx, sdk.NoFollow()) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	want := []api.LogLine{
		{Stream: "stdout", Data: "h"},
		{Stream: "stdout", Data: "éllo\n"},
		{Stream: "stderr", Data: "€!"},
	}
	if !equalLines(lines, want) {
		t.Errorf("replay = %s, want %s", dump(lines), dump(want))
	}

	// Follow: replay, then live lines as the test emits them, then exit.
	got := make(chan api.LogLine, 16)
	errc := make(chan error, 1)
	go func() {
		defer close(got)
		for l, err := range cmd.Logs(ctx) {
			if err != nil {
				errc <- err
				return
			}
			got <- l
		}
	}()
	for range want {
		<-got
	}
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte{0xff, 0xfe, 'x'})
	if l := <-got; l.Stream != "stdout" || !bytes.Equal(l.DataBase64, []byte{0xff, 0xfe, 'x'}) || l.Data != "" {
		t.Errorf("binary chunk = %+v", l)
	}
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("live\xf0\x9f"))
	if l := <-got; l.Data != "live" {
		t.Errorf("live chunk = %+v", l)
	}
	e.agent.Finish(cmd.ID, agent.StatusExited, 7, "")
	// The incomplete tail can never complete: it goes out as base64 before exit.
	if l := <-got; !bytes.Equal(l.DataBase64, []byte{0xf0, 0x9f}) {
		t.Errorf("tail = %+v", l)
	}
	l := <-got
	if l.Exit == nil || l.Exit.ExitCode == nil || *l.Exit.ExitCode != 7 || l.Exit.SandboxID != "run" {
		t.Errorf("exit line = %+v", l)
	}
	if _, ok := <-got; ok {
		t.Error("lines after the exit line")
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	out, err := cmd.Output(ctx, "stdout")
	if err != nil || out != "héllo\n\xff\xfexlive\xf0\x9f" {
		t.Errorf("Output(stdout) = %q, %v", out, err)
	}
	out, err = cmd.Output(ctx, "stderr")
	if err != nil || out != "€!" {
		t.Errorf("Output(stderr) = %q, %v", out, err)
	}

	// Raw answer: the exact NDJSON content type, one JSON object per line.
	status, h, body := e.raw(t, "GET", "/api/v1/sandboxes/run/commands/"+cmd.ID+"/logs", nil, nil)
	if status != 200 || h.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, Content-Type %q", status, h.Get("Content-Type"))
	}
	rawLines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(rawLines) != 7 || !strings.HasPrefix(rawLines[6], `{"exit":{`) {
		t.Errorf("raw NDJSON:\n%s", body)
	}
}

func TestLogsClientDisconnect(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("one\n"))
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, err := range cmd.Logs(lctx) {
			if err != nil {
				return
			}
			cancel() // leave after the first line
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("log stream did not end when the client left")
	}
	// The server is still fine and the command still runs.
	c, err := e.client.Sandbox("run").Command(ctx, cmd.ID)
	if err != nil || c.Status != api.CommandRunning {
		t.Errorf("after disconnect: %+v, %v", c, err)
	}
}

func equalLines(a, b []api.LogLine) bool {
	return slices.EqualFunc(a, b, func(x, y api.LogLine) bool {
		return x.Stream == y.Stream && x.Data == y.Data && bytes.Equal(x.DataBase64, y.DataBase64) &&
			x.Dropped == y.Dropped && (x.Exit == nil) == (y.Exit == nil)
	})
}

// TestLogsDropped: output the agent's capped log dropped is a line saying
// how much, not an error; a character split across the gap is not joined.
func TestLogsDropped(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "yes", Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("y\n\xc3")) // 8 bytes of log
	e.agent.Emit(cmd.ID, agent.FrameGap, binary.BigEndian.AppendUint64(nil, 1000))
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("\xa9y\n"))
	e.agent.Finish(cmd.ID, agent.StatusKilled, 137, "SIGKILL")
	var lines []api.LogLine
	for l, err := range cmd.Logs(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	want := []api.LogLine{
		{Stream: "stdout", Data: "y\n"},
		{Stream: "stdout", DataBase64: []byte{0xc3}},
		{Dropped: 992},
		{Stream: "stdout", DataBase64: []byte("\xa9y\n")},
		{Exit: &api.Command{}},
	}
	if !equalLines(lines, want) {
		t.Errorf("logs = %s, want %s", dump(lines), dump(want))
	}
}

func dump(ls []api.LogLine) string {
	b, _ := json.Marshal(ls)
	return string(b)
}

func TestKillAndWait(t *testing.T) {
	tests := []struct {
		name, signal string
		want         int
		wantSignal   string
	}{
		{"default is SIGKILL", "", 9, "SIGKILL"},
		{"by name", "SIGTERM", 15, "SIGTERM"},
		{"short name", "int", 2, "SIGINT"},
		{"by number", "15", 15, "SIGTERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Detached: true})
			if err != nil {
				t.Fatal(err)
			}
			waited := make(chan *sdk.Command, 1)
			go func() {
				c := &sdk.Command{}
				*c = *cmd
				w, err := c.Wait(ctx)
				if err != nil {
					t.Error(err)
				}
				waited <- w
			}()
			if err := cmd.Kill(ctx, tt.signal); err != nil {
				t.Fatal(err)
			}
			if cmd.Status != api.CommandKilled || cmd.Signal != tt.wantSignal {
				t.Errorf("after kill: %+v", cmd.Command)
			}
			w := <-waited
			if w == nil || w.ExitCodeOr(-1) != 128+tt.want {
				t.Errorf("Wait = %+v", w)
			}
			if sigs := e.agent.Signals(); !slices.Equal(sigs, []int{tt.want}) {
				t.Errorf("agent got signals %v", sigs)
			}
		})
	}
}

func TestStdin(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "cat", Stdin: true, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Stdin(ctx, strings.NewReader("hello "), false); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Stdin(ctx, strings.NewReader("world"), true); err != nil {
		t.Fatal(err)
	}
	_, got, closed, _ := e.agent.Command(cmd.ID)
	if got != "hello world" || !closed {
		t.Errorf("stdin = %q closed=%v", got, closed)
	}
	if _, err := e.client.Sandbox("run").Command(ctx, "cmd-77"); !sdk.IsCode(err, "command_not_found") {
		t.Errorf("unknown command: %v", err)
	}
}

func TestFiles(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb := e.client.Sandbox("run")
	tests := []struct {
		name string
		opts []sdk.WriteOption
		sudo bool
	}{
		{"plain tar", nil, false},
		{"gzip as root", []sdk.WriteOption{sdk.Gzip(), sdk.Sudo()}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := sb.WriteFiles(ctx, "/work", []sdk.File{
				{Path: "a.txt", Content: []byte("alpha")},
				{Path: "bin/run.sh", Reader: strings.NewReader("#!/bin/sh\n"), Size: 10, Mode: 0o755},
				{Path: "unsized", Reader: strings.NewReader("xyz")},
			}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Files != 3 || res.Bytes != 18 {
				t.Errorf("result = %+v", res)
			}
			writes := e.agent.Writes()
			w := writes[len(writes)-1]
			if w.Dir != "/work" || w.Sudo != tt.sudo || w.Entries["a.txt"] != "alpha" ||
				w.Entries["bin/run.sh"] != "#!/bin/sh\n" || w.Modes["bin/run.sh"] != 0o755 || w.Modes["a.txt"] != 0o644 {
				t.Errorf("agent got %+v", w)
			}
			if _, ok := w.Entries["bin/"]; !ok {
				t.Error("no parent directory entry")
			}
		})
	}
	if _, err := sb.WriteFiles(ctx, "/work", []sdk.File{{Path: "../escape", Content: []byte("x")}}); err == nil {
		t.Error("a path leaving the directory was accepted")
	}
	// Raw gzip upload with application/gzip and octet-stream.
	for _, ct := range []string{"application/gzip", "application/octet-stream"} {
		status, _, body := e.raw(t, "POST", "/api/v1/sandboxes/run/files?path=/w", bytes.NewReader(gzipTar(t)), map[string]string{"Content-Type": ct})
		if status != 200 || !strings.Contains(string(body), `"files":1`) {
			t.Errorf("%s upload: %d %s", ct, status, body)
		}
	}

	e.agent.PutFile("/etc/motd", []byte("welcome\n"), 0o640)
	f, err := sb.ReadFile(ctx, "/etc/motd")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "welcome\n" || f.Info.Mode != 0o640 || f.Info.Size != 8 {
		t.Errorf("ReadFile = %q %+v", data, f.Info)
	}
	status, h, _ := e.raw(t, "GET", "/api/v1/sandboxes/run/files?path=/etc/motd", nil, nil)
	if status != 200 || h.Get("Content-Type") != "application/octet-stream" || h.Get("Content-Length") != "8" || h.Get("X-Paddock-File-Mode") != "640" {
		t.Errorf("read headers: %d %v", status, h)
	}
	// Reads are the sandbox user's unless asked for as root.
	f, err = sb.ReadFile(ctx, "/etc/motd", sdk.ReadSudo())
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if rc, err := sb.ReadArchive(ctx, "/etc", sdk.ReadSudo()); err == nil {
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	reads := strings.Join(e.agent.Reads(), "; ")
	if want := "/v1/files /etc/motd sudo=false; /v1/files /etc/motd sudo=false; /v1/files /etc/motd sudo=true; /v1/archive /etc sudo=true"; reads != want {
		t.Errorf("the agent was asked\n  %s\nwant\n  %s", reads, want)
	}
	if status, _, _ := e.raw(t, "GET", "/api/v1/sandboxes/run/files?path=/etc/motd&sudo=maybe", nil, nil); status != 400 {
		t.Errorf("sudo=maybe: %d, want 400", status)
	}
	if _, err := sb.ReadFile(ctx, "/missing"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
	if err := sb.MkDir(ctx, "/work/deep/dir", true); err != nil {
		t.Fatal(err)
	}
	if got := e.agent.Mkdirs(); len(got) != 1 || got[0].Path != "/work/deep/dir" || !got[0].Sudo {
		t.Errorf("mkdirs = %+v", got)
	}
}

func TestReadArchive(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb := e.client.Sandbox("run")
	e.agent.PutFile("/work/a.txt", []byte("alpha"), 0o644)
	e.agent.PutFile("/work/bin/run.sh", []byte("#!/bin/sh\n"), 0o755)
	e.agent.PutFile("/cut/one", []byte("1"), 0o644)
	e.agent.PutFile("/cut/two", []byte("2"), 0o644)

	tests := []struct {
		name, path string
		want       map[string]string
	}{
		{"directory", "/work", map[string]string{"a.txt": "alpha", "bin/run.sh": "#!/bin/sh\n"}},
		{"trailing slash", "/work/", map[string]string{"a.txt": "alpha", "bin/run.sh": "#!/bin/sh\n"}},
		{"one file", "/work/bin/run.sh", map[string]string{"run.sh": "#!/bin/sh\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := sb.ReadArchive(ctx, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got := map[string]string{}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(tr)
				got[h.Name] = string(data)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("entries = %v, want %v", got, tt.want)
			}
		})
	}
	status, h, _ := e.raw(t, "GET", "/api/v1/sandboxes/run/archive?path=/work", nil, nil)
	if status != 200 || h.Get("Content-Type") != "application/x-tar" {
		t.Errorf("archive headers: %d %v", status, h)
	}
	if _, err := sb.ReadArchive(ctx, "/missing"); !errors.Is(err, sdk.ErrNotFound) || !sdk.IsCode(err, "file_not_found") {
		t.Errorf("missing: %v", err)
	}
	if _, err := sb.ReadArchive(ctx, "rel"); !sdk.IsCode(err, "invalid_path") {
		t.Errorf("relative: %v", err)
	}

	// An agent that breaks off mid-stream: the client must see an error,
	// not a tar that ends after the first entry as if complete.
	rc, err := sb.ReadArchive(ctx, "/cut")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err == nil {
		t.Error("a cut archive read to a clean end")
	}
}

func TestCloseStreams(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := e.client.Sandbox("run").RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	e.agent.Emit(cmd.ID, agent.FrameStdout, []byte("one\n"))
	logErr := make(chan error, 1)
	waitErr := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		for _, err := range cmd.Logs(ctx) {
			if err != nil {
				logErr <- err
				return
			}
			close(started)
		}
		logErr <- nil
	}()
	<-started
	go func() {
		c := *cmd
		_, err := c.Wait(ctx)
		waitErr <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the wait reach the agent
	e.srv.CloseStreams()
	if err := <-logErr; !sdk.IsCode(err, "server_shutting_down") {
		t.Errorf("log stream ended with %v", err)
	}
	if err := <-waitErr; !errors.Is(err, sdk.ErrUnavailable) || !sdk.IsCode(err, "server_shutting_down") {
		t.Errorf("wait ended with %v", err)
	}
	if c, err := e.client.Sandbox("run").Command(ctx, cmd.ID); err != nil || c.Status != api.CommandRunning {
		t.Errorf("the command did not keep running: %+v, %v", c, err)
	}
}
