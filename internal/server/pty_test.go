package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/sdk"
)

func TestPTY(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sb := e.client.Sandbox("run")
	p, err := sb.StartPTY(ctx, api.PTYRequest{Tag: "t1", Env: map[string]string{"X": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	ex := e.sbs.LastExec()
	if ex.PTY == nil || ex.PTY.Rows != 24 || ex.PTY.Cols != 80 || ex.Cmd != "" || ex.Tag != "t1" || ex.Wait || ex.Env["X"] != "1" {
		t.Errorf("exec request: %+v", ex)
	}
	if p.PTY == nil || p.Tag != "t1" {
		t.Errorf("started: %+v", p.Command.Command)
	}

	// Typed input comes back as the terminal's echo; a reader that
	// reconnects at a line's offset gets only what followed.
	if err := p.Write(ctx, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	var after int64
	for l, err := range p.Output(ctx, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if string(l.Data) != "ls\n" || l.Offset == 0 {
			t.Fatalf("first line %+v", l)
		}
		after = l.Offset
		break
	}
	if err := p.Write(ctx, []byte("pwd\n")); err != nil {
		t.Fatal(err)
	}
	for l, err := range p.Output(ctx, after) {
		if err != nil {
			t.Fatal(err)
		}
		if string(l.Data) != "pwd\n" {
			t.Errorf("after reconnect: %+v", l)
		}
		break
	}

	// From now: only what is typed after the stream opened. Until it is
	// open a keystroke may be missed, so type until one comes back; what
	// was typed before ("z") never does.
	if err := p.Write(ctx, []byte("z")); err != nil {
		t.Fatal(err)
	}
	now, stopNow := context.WithCancel(ctx)
	lines := make(chan api.PTYOutput, 64)
	go func() {
		defer close(lines)
		for l, err := range p.OutputFromNow(now) {
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	var first api.PTYOutput
	for first.Offset == 0 {
		if err := p.Write(ctx, []byte("q")); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-lines:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("nothing came from now on")
		}
	}
	if string(first.Data) != "q" || first.Offset <= after {
		t.Errorf("from now: %+v", first)
	}
	stopNow()
	for range lines {
	}

	if err := p.Resize(ctx, 40, 100); err != nil {
		t.Fatal(err)
	}
	again, err := sb.AttachPTY(ctx, p.ID)
	if err != nil || again.PTY == nil || *again.PTY != (api.PTYSize{Rows: 40, Cols: 100}) {
		t.Errorf("attach after resize: %+v %v", again, err)
	}
	for _, tc := range []struct {
		name, method, path, body, code string
	}{
		{"resize to zero", "POST", "/sandboxes/run/pty/" + p.ID + "/resize", `{"rows":0,"cols":80}`, "invalid_pty_size"},
		{"resize too large", "POST", "/sandboxes/run/pty/" + p.ID + "/resize", `{"rows":10,"cols":5000}`, "invalid_pty_size"},
		{"negative offset", "GET", "/sandboxes/run/pty/" + p.ID + "/output?offset=-1", "", "invalid_offset"},
		{"size too large at start", "POST", "/sandboxes/run/pty", `{"rows":5000}`, "invalid_pty_size"},
		{"unknown command", "POST", "/sandboxes/run/pty/cmd-99/input", "x", "command_not_found"},
		{"stopped sandbox's output", "GET", "/sandboxes/stopped/pty/cmd-1/output", "", "sandbox_not_running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, body := e.raw(t, tc.method, api.Prefix+tc.path, strings.NewReader(tc.body), nil)
			if got := errorCode(t, body); got.Code != tc.code {
				t.Errorf("%s %s: %+v, want %s", tc.method, tc.path, got, tc.code)
			}
		})
	}
	plain, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AttachPTY(ctx, plain.ID); !sdk.IsCode(err, "not_a_pty") {
		t.Errorf("attach to a command without a terminal: %v", err)
	}

	e.agent.Finish(p.ID, agent.StatusExited, 5, "")
	var exit *api.Command
	for l, err := range p.Output(ctx, after) {
		if err != nil {
			t.Fatal(err)
		}
		exit = l.Exit
	}
	if exit == nil || exit.ExitCode == nil || *exit.ExitCode != 5 || p.ExitCodeOr(-1) != 5 {
		t.Errorf("exit line %+v, pty %+v", exit, p.Command.Command)
	}
}

func TestWatch(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sb := e.client.Sandbox("run")
	w, err := sb.Watch(ctx, "/w", sdk.Recursive())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := []api.WatchEvent{
		{Type: api.WatchCreate, Name: "a/b.txt", Path: "/w/a/b.txt"},
		{Type: api.WatchOverflow},
		{Type: api.WatchRemove, Path: "/w", Dir: true},
	}
	for i, ev := range want {
		got, err := w.Next()
		if err != nil || got != ev {
			t.Errorf("event %d: %+v %v, want %+v", i, got, err, ev)
		}
	}
	w.Close()
	if _, err := w.Next(); err == nil {
		t.Error("Next after Close succeeded")
	}
	reads := strings.Join(e.agent.Reads(), "\n")
	if !strings.Contains(reads, "WATCH /w recursive=true sudo=false") {
		t.Errorf("agent saw %q", reads)
	}

	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"not found", "/nope", http.StatusNotFound},
		{"relative", "w", http.StatusBadRequest},
		{"dot dot", "/w/../etc", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sb.Watch(ctx, tc.path)
			var ae *sdk.APIError
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Errorf("watch %s: %v, want %d", tc.path, err, tc.status)
			}
		})
	}
	if _, err := e.client.Sandbox("stopped").Watch(ctx, "/w"); !errors.Is(err, sdk.ErrNotRunning) {
		t.Errorf("watch in a stopped sandbox: %v", err)
	}
}
