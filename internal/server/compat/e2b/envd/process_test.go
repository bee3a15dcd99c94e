package envd

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddock-dev/paddock/internal/agent"
)

// rpc is a Connect client of the env's server for one sandbox and user,
// over HTTP/1.1 or h2c.
type rpc struct {
	e      *testEnv
	hc     *http.Client
	header http.Header
}

func (e *testEnv) rpc(t *testing.T, h2c bool, sandboxID, token, user string) *rpc {
	t.Helper()
	hc := e.srv.Client()
	if h2c {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		hc = &http.Client{Transport: tr}
		t.Cleanup(tr.CloseIdleConnections)
	}
	hdr := http.Header{HeaderSandboxID: {sandboxID}, HeaderSandboxPort: {"49983"}}
	if token != "" {
		hdr.Set(HeaderAccessToken, token)
	}
	if user != "" {
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return &rpc{e: e, hc: hc, header: hdr}
}

func unary[Req, Res any](ctx context.Context, c *rpc, method string, msg *Req) (*Res, error) {
	cl := connect.NewClient[Req, Res](c.hc, c.e.srv.URL+processService+method, connect.WithCodec(codec{}))
	req := connect.NewRequest(msg)
	for k, v := range c.header {
		req.Header()[k] = v
	}
	res, err := cl.CallUnary(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func serverStream[Req any](ctx context.Context, c *rpc, method string, msg *Req, header http.Header) (*connect.ServerStreamForClient[eventResponse], error) {
	cl := connect.NewClient[Req, eventResponse](c.hc, c.e.srv.URL+processService+method, connect.WithCodec(codec{}))
	req := connect.NewRequest(msg)
	for k, v := range c.header {
		req.Header()[k] = v
	}
	for k, v := range header {
		req.Header()[k] = v
	}
	return cl.CallServerStream(ctx, req)
}

// events reads a stream to its end.
func events(t *testing.T, s *connect.ServerStreamForClient[eventResponse]) []processEvent {
	t.Helper()
	var out []processEvent
	for s.Receive() {
		out = append(out, s.Msg().Event)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return out
}

// next reads one event, failing the test at the stream's end.
func next(t *testing.T, s *connect.ServerStreamForClient[eventResponse]) processEvent {
	t.Helper()
	if !s.Receive() {
		t.Fatalf("stream ended: %v", s.Err())
	}
	return s.Msg().Event
}

func ptr[T any](v T) *T { return &v }

func TestStartStreamsOutputAndEnd(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := "http1"
		if h2c {
			name = "h2c"
		}
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			c := e.rpc(t, h2c, sbA, e.tokens.Access(sbA), "")
			ctx := t.Context()
			tests := []struct {
				name string
				cmd  string
				args []string
				want []processEvent
			}{
				{"exit 0", "echo", []string{"hi"}, []processEvent{
					{Start: &startEvent{PID: 42}}, {Data: &dataEvent{Stdout: Bytes("hi\n")}},
					{End: &endEvent{ExitCode: 0, Exited: true, Status: "exit status 0"}}}},
				{"exit 3 with stderr", "fail", nil, []processEvent{
					{Start: &startEvent{PID: 42}}, {Data: &dataEvent{Stderr: Bytes("boom\n")}},
					{End: &endEvent{ExitCode: 3, Exited: true, Status: "exit status 3", Error: ptr("exit status 3")}}}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					s, err := serverStream(ctx, c, "Start", &startRequest{Process: &processConfig{Cmd: tc.cmd, Args: tc.args}}, nil)
					if err != nil {
						t.Fatal(err)
					}
					got := events(t, s)
					if !equalJSON(t, got, tc.want) {
						t.Fatalf("events %s, want %s", mustJSON(t, got), mustJSON(t, tc.want))
					}
				})
			}
		})
	}
}

func TestStartRequest(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c := e.rpc(t, false, sbA, e.tokens.Access(sbA), "root")
	s, err := serverStream(ctx, c, "Start", &startRequest{
		Process: &processConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", "echo hi"}, Envs: map[string]string{"A": "1"}, Cwd: ptr("/work")},
		Tag:     ptr("job"), Stdin: ptr(true),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev := next(t, s); ev.Start == nil {
		t.Fatalf("first event %s is not start", mustJSON(t, ev))
	}
	got := e.sbs.LastExec()
	switch {
	case got.Cmd != "/bin/bash" || strings.Join(got.Args, " ") != "-l -c echo hi" || got.Env["A"] != "1" || got.Cwd != "/work":
		t.Fatalf("exec %+v", got)
	case !got.Sudo:
		t.Fatal("user root did not run with sudo")
	case got.Tag != "job" || !got.Stdin:
		t.Fatalf("tag %q stdin %v", got.Tag, got.Stdin)
	case got.TimeoutMs <= 0 || got.TimeoutMs > 60_000:
		t.Fatalf("the call's deadline gave timeout %d ms, want (0, 60000]", got.TimeoutMs)
	}
}

func TestProcessControl(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	c := e.rpc(t, false, sbA, e.tokens.Access(sbA), "")
	s, err := serverStream(ctx, c, "Start", &startRequest{Process: &processConfig{Cmd: "cat"}, Tag: ptr("cat-1"), Stdin: ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := next(t, s)
	if start.Start == nil || start.Start.PID != 42 {
		t.Fatalf("start event %s", mustJSON(t, start))
	}
	byPID := &processSelector{PID: ptr(uint32(42))}
	byTag := &processSelector{Tag: ptr("cat-1")}

	list, err := unary[listRequest, listResponse](ctx, c, "List", &listRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Processes) != 1 || list.Processes[0].Config.Cmd != "cat" || list.Processes[0].Tag == nil || *list.Processes[0].Tag != "cat-1" {
		t.Fatalf("list %s", mustJSON(t, list))
	}
	if _, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: byPID, Input: &processInput{Stdin: Bytes("one ")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: byTag, Input: &processInput{Stdin: Bytes("two")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := unary[closeStdinRequest, empty](ctx, c, "CloseStdin", &closeStdinRequest{Process: byTag}); err != nil {
		t.Fatal(err)
	}
	cmds := e.agent.Commands()
	if _, stdin, closed, _ := e.agent.Command(cmds[len(cmds)-1].ID); stdin != "one two" || !closed {
		t.Fatalf("stdin %q closed %v, want %q closed", stdin, closed, "one two")
	}

	wrong := []struct {
		name   string
		method string
		call   func() error
		code   connect.Code
	}{
		{"pty input to a pipe", "SendInput", func() error {
			_, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: byPID, Input: &processInput{PTY: Bytes("x")}})
			return err
		}, connect.CodeInvalidArgument},
		{"no selector", "SendInput", func() error {
			_, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Input: &processInput{Stdin: Bytes("x")}})
			return err
		}, connect.CodeInvalidArgument},
		{"unknown pid", "SendSignal", func() error {
			_, err := unary[sendSignalRequest, empty](ctx, c, "SendSignal", &sendSignalRequest{Process: &processSelector{PID: ptr(uint32(7))}, Signal: 9})
			return err
		}, connect.CodeNotFound},
		{"unknown tag", "CloseStdin", func() error {
			_, err := unary[closeStdinRequest, empty](ctx, c, "CloseStdin", &closeStdinRequest{Process: &processSelector{Tag: ptr("nope")}})
			return err
		}, connect.CodeNotFound},
		{"unspecified signal", "SendSignal", func() error {
			_, err := unary[sendSignalRequest, empty](ctx, c, "SendSignal", &sendSignalRequest{Process: byPID})
			return err
		}, connect.CodeInvalidArgument},
		{"resize a pipe", "Update", func() error {
			_, err := unary[updateRequest, empty](ctx, c, "Update", &updateRequest{Process: byPID, PTY: &ptyConfig{Size: &ptySize{Cols: 10, Rows: 10}}})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tc := range wrong {
		t.Run(tc.name, func(t *testing.T) {
			if got := connect.CodeOf(tc.call()); got != tc.code {
				t.Fatalf("%s: code %v, want %v", tc.method, got, tc.code)
			}
		})
	}

	if _, err := unary[sendSignalRequest, empty](ctx, c, "SendSignal", &sendSignalRequest{Process: byPID, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	end := events(t, s)
	want := []processEvent{{End: &endEvent{ExitCode: -1, Status: "signal: killed", Error: ptr("signal: killed")}}}
	if !equalJSON(t, end, want) {
		t.Fatalf("events after the kill %s, want %s", mustJSON(t, end), mustJSON(t, want))
	}
	if sigs := e.agent.Signals(); len(sigs) != 1 || sigs[0] != 9 {
		t.Fatalf("signals %v", sigs)
	}
	if list, err := unary[listRequest, listResponse](ctx, c, "List", &listRequest{}); err != nil || len(list.Processes) != 0 {
		t.Fatalf("list after the kill: %v %v", list, err)
	}
}

func TestPTY(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	c := e.rpc(t, true, sbA, e.tokens.Access(sbA), "")
	s, err := serverStream(ctx, c, "Start", &startRequest{Process: &processConfig{Cmd: "/bin/bash", Args: []string{"-i", "-l"}},
		PTY: &ptyConfig{Size: &ptySize{Cols: 100, Rows: 30}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev := next(t, s); ev.Start == nil {
		t.Fatalf("first event %s", mustJSON(t, ev))
	}
	if pty := e.sbs.LastExec().PTY; pty == nil || pty.Cols != 100 || pty.Rows != 30 {
		t.Fatalf("exec pty %+v", pty)
	}
	sel := &processSelector{PID: ptr(uint32(42))}
	if _, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: sel, Input: &processInput{PTY: Bytes("ls\r")}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s); ev.Data == nil || string(ev.Data.PTY) != "ls\r" {
		t.Fatalf("after input: %s, want the terminal's echo as pty data", mustJSON(t, ev))
	}
	if _, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: sel, Input: &processInput{Stdin: Bytes("x")}}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("stdin to a terminal: %v", err)
	}
	if _, err := unary[updateRequest, empty](ctx, c, "Update", &updateRequest{Process: sel, PTY: &ptyConfig{Size: &ptySize{Cols: 120, Rows: 40}}}); err != nil {
		t.Fatal(err)
	}
	cmds := e.agent.Commands()
	if pty := cmds[len(cmds)-1].PTY; pty == nil || pty.Cols != 120 || pty.Rows != 40 {
		t.Fatalf("size after update %+v", pty)
	}
	if _, err := unary[updateRequest, empty](ctx, c, "Update", &updateRequest{Process: sel, PTY: &ptyConfig{Size: &ptySize{Cols: 0, Rows: 40}}}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("resize to 0 columns: %v", err)
	}

	// A second client connects by pid and sees what comes next.
	s2, err := serverStream(ctx, c, "Connect", &connectRequest{Process: sel}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if ev := next(t, s2); ev.Start == nil || ev.Start.PID != 42 {
		t.Fatalf("connect's first event %s", mustJSON(t, ev))
	}
	if _, err := unary[sendInputRequest, empty](ctx, c, "SendInput", &sendInputRequest{Process: sel, Input: &processInput{PTY: Bytes("pwd\r")}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s2); ev.Data == nil || string(ev.Data.PTY) != "pwd\r" {
		t.Fatalf("connected stream: %s, want only the new output", mustJSON(t, ev))
	}
}

func TestKeepalive(t *testing.T) {
	e := newTestEnv(t, nil)
	c := e.rpc(t, false, sbA, e.tokens.Access(sbA), "")
	s, err := serverStream(t.Context(), c, "Start", &startRequest{Process: &processConfig{Cmd: "sleep"}}, http.Header{HeaderKeepalive: {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next(t, s) // start
	if ev := next(t, s); ev.Keepalive == nil {
		t.Fatalf("a quiet stream sent %s, want a keepalive", mustJSON(t, ev))
	}
}

func TestProcessAuth(t *testing.T) {
	e := newTestEnv(t, nil)
	tests := []struct {
		name    string
		sandbox string
		token   string
		user    string
		code    connect.Code
	}{
		{"no token", sbA, "", "", connect.CodeUnauthenticated},
		{"another sandbox's token", sbA, e.tokens.Access(sbB), "", connect.CodeUnauthenticated},
		{"a traffic token", sbA, e.tokens.Traffic(sbA), "", connect.CodeUnauthenticated},
		{"unknown user", sbA, e.tokens.Access(sbA), "mallory", connect.CodeInvalidArgument},
		{"gone sandbox", "sb-gone", e.tokens.Access("sb-gone"), "", connect.CodeNotFound},
		{"paused sandbox", sbP, e.tokens.Access(sbP), "", connect.CodeUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.rpc(t, false, tc.sandbox, tc.token, tc.user)
			_, err := unary[listRequest, listResponse](t.Context(), c, "List", &listRequest{})
			if got := connect.CodeOf(err); got != tc.code {
				t.Fatalf("list: %v, want code %v", err, tc.code)
			}
			s, err := serverStream(t.Context(), c, "Start", &startRequest{Process: &processConfig{Cmd: "echo"}}, nil)
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
			}
			if got := connect.CodeOf(err); got != tc.code {
				t.Fatalf("start: %v, want code %v", err, tc.code)
			}
		})
	}
	if n := len(e.sbs.Execs()); n != 0 {
		t.Fatalf("%d commands ran without a valid credential", n)
	}
}

func TestEndOf(t *testing.T) {
	code := func(n int) *int { return &n }
	tests := []struct {
		name string
		cmd  agent.Command
		want endEvent
	}{
		{"exited 0", agent.Command{Status: agent.StatusExited, ExitCode: code(0)}, endEvent{Exited: true, Status: "exit status 0"}},
		{"exited 2", agent.Command{Status: agent.StatusExited, ExitCode: code(2)}, endEvent{ExitCode: 2, Exited: true, Status: "exit status 2", Error: ptr("exit status 2")}},
		{"terminated", agent.Command{Status: agent.StatusKilled, ExitCode: code(143), Signal: "SIGTERM"}, endEvent{ExitCode: -1, Status: "signal: terminated", Error: ptr("signal: terminated")}},
		{"timed out", agent.Command{Status: agent.StatusTimedOut, ExitCode: code(137), Signal: "SIGKILL"},
			endEvent{ExitCode: -1, Status: "signal: killed", Error: ptr("signal: killed")}},
		{"failed to start", agent.Command{Status: agent.StatusFailed, ExitCode: code(127), Error: "no such file"},
			endEvent{ExitCode: 127, Status: "failed", Error: ptr("no such file")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := endOf(tc.cmd); !equalJSON(t, got, tc.want) {
				t.Fatalf("end %s, want %s", mustJSON(t, got), mustJSON(t, tc.want))
			}
		})
	}
}

func TestStreamInput(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	c := e.rpc(t, true, sbA, e.tokens.Access(sbA), "")
	s, err := serverStream(ctx, c, "Start", &startRequest{Process: &processConfig{Cmd: "cat"}, Tag: ptr("in"), Stdin: ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next(t, s) // start
	send := func(msgs ...*streamInputRequest) error {
		cl := connect.NewClient[streamInputRequest, empty](c.hc, e.srv.URL+processService+"StreamInput", connect.WithCodec(codec{}))
		st := cl.CallClientStream(ctx)
		for k, v := range c.header {
			st.RequestHeader()[k] = v
		}
		for _, m := range msgs {
			if err := st.Send(m); err != nil {
				return err
			}
		}
		_, err := st.CloseAndReceive()
		return err
	}
	startMsg := &streamInputRequest{}
	startMsg.Start = &struct {
		Process *processSelector `json:"process"`
	}{&processSelector{Tag: ptr("in")}}
	data := func(s string) *streamInputRequest {
		m := &streamInputRequest{}
		m.Data = &struct {
			Input *processInput `json:"input"`
		}{&processInput{Stdin: Bytes(s)}}
		return m
	}
	if err := send(startMsg, data("a"), &streamInputRequest{Keepalive: &struct{}{}}, data("b")); err != nil {
		t.Fatal(err)
	}
	cmds := e.agent.Commands()
	if _, stdin, _, _ := e.agent.Command(cmds[len(cmds)-1].ID); stdin != "ab" {
		t.Fatalf("stdin %q, want %q", stdin, "ab")
	}
	if err := send(data("x")); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("data before start: %v", err)
	}
}
