package vercel

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestDefaultCwd: a session of a sandbox made through this API works in
// /vercel/sandbox, which is made for the sandbox's user as the session
// starts; a record from before the cwd was kept keeps the old default.
func TestDefaultCwd(t *testing.T) {
	e := newEnv(t)
	out := e.create("cwd", nil)
	sid := out["session"].(map[string]any)["id"].(string)
	if got := out["session"].(map[string]any)["cwd"]; got != DefaultCwd {
		t.Errorf("session cwd %v, want %s", got, DefaultCwd)
	}
	if got := out["sandbox"].(map[string]any)["cwd"]; got != DefaultCwd {
		t.Errorf("sandbox cwd %v, want %s", got, DefaultCwd)
	}
	want := agent.MkdirRequest{Path: DefaultCwd, Mode: 0o755, Sudo: true, ForUser: true}
	if !containsMkdir(e.agent.Mkdirs(), want) {
		t.Errorf("mkdirs %+v, want one %+v", e.agent.Mkdirs(), want)
	}
	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", map[string]any{"path": "rel.txt"}, "")
	wantError(t, resp, data, 404, "file_not_found")
	if reads := e.agent.Reads(); len(reads) == 0 || !strings.Contains(reads[len(reads)-1], DefaultCwd+"/rel.txt") {
		t.Errorf("reads %v, want %s/rel.txt", reads, DefaultCwd)
	}

	// A record written before: no cwd kept, the user's home as before.
	ctx := context.Background()
	rec, err := e.h.store.get(ctx, Scope{Team: "team_1", Project: "prj_1"}, "cwd")
	if err != nil {
		t.Fatal(err)
	}
	rec.Config.Cwd = ""
	if err := e.h.store.update(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "true"}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("run: %d %s", resp.StatusCode, data)
	}
	if got := e.sbs.LastExec().Cwd; got != "/home/user" {
		t.Errorf("legacy record's command ran in %q, want /home/user", got)
	}
}

func containsMkdir(got []agent.MkdirRequest, want agent.MkdirRequest) bool {
	for _, m := range got {
		if m == want {
			return true
		}
	}
	return false
}

// fakeMeter answers every query with rows of the sandboxes it knows.
type fakeMeter struct{ rows map[string][]metering.Row }

func (m fakeMeter) Query(_ context.Context, q metering.Query) (metering.Page, error) {
	var out []metering.Row
	for _, r := range m.rows[q.SandboxID] {
		if r.TeamID == q.TeamID {
			out = append(out, r)
		}
	}
	return metering.Page{Rows: out}, nil
}

// TestUsageFields: a running session reports its counters, a stopped one
// what it used until the stop (the meter's figure when there is one), one
// that ended on its own the meter's; the sandbox sums its sessions.
func TestUsageFields(t *testing.T) {
	e := newEnv(t)
	out := e.create("usage", nil)
	sid := out["session"].(map[string]any)["id"].(string)
	e.sbs.SetStats(sid, runtime.Stats{CPUUsage: 2500 * time.Millisecond, NetworkRxBytes: 100, NetworkTxBytes: 200})

	usageOf := func(m map[string]any) (cpu any, transfer any) { return m["activeCpuDurationMs"], m["networkTransfer"] }
	resp, data := e.do("GET", "/v2/sandboxes/usage", nil, "projectId=prj_1")
	if resp.StatusCode != 200 {
		t.Fatalf("get: %d %s", resp.StatusCode, data)
	}
	got := decode(t, data)
	cpu, tr := usageOf(got["session"].(map[string]any))
	if cpu != 2500.0 || !reflect.DeepEqual(tr, map[string]any{"ingress": 100.0, "egress": 200.0}) {
		t.Errorf("running session usage %v %v, want 2500 ms, 100 in, 200 out", cpu, tr)
	}
	sb := got["sandbox"].(map[string]any)
	if sb["totalActiveCpuDurationMs"] != 2500.0 || sb["totalIngressBytes"] != 100.0 || sb["totalEgressBytes"] != 200.0 {
		t.Errorf("sandbox totals %v %v %v", sb["totalActiveCpuDurationMs"], sb["totalIngressBytes"], sb["totalEgressBytes"])
	}

	// The meter booked the stop's last figures.
	e.h.meter = fakeMeter{rows: map[string][]metering.Row{
		sid: {{TeamID: "team_1", SandboxID: sid, Totals: metering.Totals{CPUSeconds: 2, NetRxBytes: 60, NetTxBytes: 90}},
			{TeamID: "team_1", SandboxID: sid, Totals: metering.Totals{CPUSeconds: 0.75, NetRxBytes: 40, NetTxBytes: 120}}},
	}}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("stop: %d %s", resp.StatusCode, data)
	}
	cpu, tr = usageOf(decode(t, data)["session"].(map[string]any))
	if cpu != 2750.0 || !reflect.DeepEqual(tr, map[string]any{"ingress": 100.0, "egress": 210.0}) {
		t.Errorf("stopped session usage %v %v, want the meter's 2750 ms, 100 in, 210 out", cpu, tr)
	}
	e.h.meter = nil // what the stop recorded stays
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+sid, nil, "")
	if cpu, _ = usageOf(decode(t, data)["session"].(map[string]any)); resp.StatusCode != 200 || cpu != 2750.0 {
		t.Errorf("stopped session read again: %d %s", resp.StatusCode, data)
	}

	// Resumed, then ended on its own: the meter's figures, and none
	// without a meter.
	resp, data = e.do("GET", "/v2/sandboxes/usage", nil, "projectId=prj_1&resume=true")
	if resp.StatusCode != 200 {
		t.Fatalf("resume: %d %s", resp.StatusCode, data)
	}
	sid2 := decode(t, data)["session"].(map[string]any)["id"].(string)
	e.sbs.SetState(sid2, sandbox.Stopped)
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+sid2, nil, "")
	if cpu, tr = usageOf(decode(t, data)["session"].(map[string]any)); cpu != nil || tr != nil {
		t.Errorf("no meter, no record: usage %v %v, want none", cpu, tr)
	}
	e.h.meter = fakeMeter{rows: map[string][]metering.Row{
		sid2: {{TeamID: "team_1", SandboxID: sid2, Totals: metering.Totals{CPUSeconds: 1, NetRxBytes: 5, NetTxBytes: 6}}},
		// Another team's sandbox of the same id is not this one.
	}}
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+sid2, nil, "")
	if cpu, tr = usageOf(decode(t, data)["session"].(map[string]any)); cpu != 1000.0 || !reflect.DeepEqual(tr, map[string]any{"ingress": 5.0, "egress": 6.0}) {
		t.Errorf("ended on its own: usage %v %v, want the meter's", cpu, tr)
	}
}

// dialInteractive opens the session's terminal as the CLI does: POST
// .../interactive, then the WebSocket at url?token=, here on the test
// server (the URL names the public URL).
func (e *env) dialInteractive(sid string) (*websocket.Conn, string) {
	e.t.Helper()
	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/interactive", map[string]any{}, "")
	if resp.StatusCode != 200 {
		e.t.Fatalf("open interactive: %d %s", resp.StatusCode, data)
	}
	var open struct{ URL, Token string }
	if err := json.Unmarshal(data, &open); err != nil {
		e.t.Fatal(err)
	}
	if want := "ws://localhost:7420" + Prefix + "/interactive/" + sid; open.URL != want || open.Token == "" {
		e.t.Fatalf("open: %s, want url %s and a token", data, want)
	}
	u := strings.Replace(open.URL, "ws://localhost:7420", "ws"+strings.TrimPrefix(e.srv.URL, "http"), 1)
	c, _, err := websocket.Dial(context.Background(), u+"?token="+url.QueryEscape(open.Token), nil)
	if err != nil {
		e.t.Fatalf("dial %s: %v", u, err)
	}
	e.t.Cleanup(func() { c.CloseNow() })
	return c, open.Token
}

func writeText(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := c.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInteractive: openInteractive's WebSocket runs the start frame's
// command on a terminal in the session's cwd, relays input, output and
// resizes, and ends with the exit frame and a normal close.
func TestInteractive(t *testing.T) {
	e := newEnv(t)
	// The CLI's private create flag asks for nothing paddock needs.
	sid := e.create("tty", map[string]any{"__interactive": true})["session"].(map[string]any)["id"].(string)
	c, _ := e.dialInteractive(sid)
	writeText(t, c, map[string]any{"type": "start", "command": "bash", "args": []string{"-l"}, "env": []string{"TERM=xterm-256color", "PS1=$ "},
		"cols": 100, "rows": 30})
	waitFor(t, "the terminal to start", func() bool { return e.sbs.LastExec().Cmd == "bash" })
	want := sandbox.ExecRequest{Cmd: "bash", Args: []string{"-l"}, Cwd: DefaultCwd, Env: map[string]string{"TERM": "xterm-256color", "PS1": "$ "},
		PTY: &sandbox.PTYSize{Rows: 30, Cols: 100}}
	if got := e.sbs.LastExec(); !reflect.DeepEqual(got, want) {
		t.Errorf("exec %+v, want %+v", got, want)
	}
	// Exec is recorded before the agent has the command.
	var id string
	waitFor(t, "the agent's terminal", func() bool {
		for _, c := range e.agent.Commands() {
			if c.Cmd == "bash" {
				id = c.ID
			}
		}
		return id != ""
	})

	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("echo hi\r")); err != nil {
		t.Fatal(err)
	}
	typ, data, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || string(data) != "echo hi\r" {
		t.Fatalf("output: %v %q %v, want the echo as a binary frame", typ, data, err)
	}
	writeText(t, c, map[string]any{"type": "resize", "cols": 132, "rows": 43})
	waitFor(t, "the resize", func() bool {
		cmd, err := e.agent.Client().Get(ctx, id) // a copy, not the fake's own
		return err == nil && cmd.PTY != nil && cmd.PTY.Rows == 43 && cmd.PTY.Cols == 132
	})
	writeText(t, c, map[string]any{"type": "resize", "cols": 0, "rows": 99999}) // ignored
	writeText(t, c, map[string]any{"type": "ping"})                             // a frame of a later version: ignored

	e.agent.Finish(id, agent.StatusExited, 7, "")
	typ, data, err = c.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("exit frame: %v %q %v", typ, data, err)
	}
	var exit map[string]any
	if json.Unmarshal(data, &exit) != nil || exit["type"] != "exit" || exit["code"] != 7.0 {
		t.Errorf("exit frame %s, want {type: exit, code: 7}", data)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after the exit: %v, want a normal close", err)
	}
	if sigs := e.agent.Signals(); len(sigs) != 0 {
		t.Errorf("signals %v: a command that ended is not hung up", sigs)
	}
}

// TestInteractiveHangUp: a client that leaves hangs the terminal up.
func TestInteractiveHangUp(t *testing.T) {
	e := newEnv(t)
	sid := e.create("hangup", nil)["session"].(map[string]any)["id"].(string)
	c, _ := e.dialInteractive(sid)
	writeText(t, c, map[string]any{"type": "start", "command": "sh"})
	waitFor(t, "the terminal to start", func() bool { return e.sbs.LastExec().Cmd == "sh" })
	if got := e.sbs.LastExec().PTY; got == nil || *got != (sandbox.PTYSize{Rows: defaultRows, Cols: defaultCols}) {
		t.Errorf("default size %+v", got)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	waitFor(t, "SIGHUP", func() bool { s := e.agent.Signals(); return len(s) > 0 && s[0] == 1 })
}

// TestInteractiveRefused: the WebSocket opens only with a token made for
// that session's terminal; POST .../interactive is the team's only.
func TestInteractiveRefused(t *testing.T) {
	e := newEnv(t)
	sid := e.create("tty-a", nil)["session"].(map[string]any)["id"].(string)
	other := e.create("tty-b", nil)["session"].(map[string]any)["id"].(string)
	_, tok := e.dialInteractive(sid)

	resp, data := e.doAs(tokenTwo, "team_2", "POST", "/v2/sandboxes/sessions/"+sid+"/interactive", map[string]any{}, "")
	wantError(t, resp, data, 404, "not_found")

	ws := "ws" + strings.TrimPrefix(e.srv.URL, "http") + Prefix + "/interactive/"
	cases := []struct{ name, url string }{
		{"no token", ws + sid},
		{"another session's token", ws + other + "?token=" + url.QueryEscape(tok)},
		{"a port token", ws + sid + "?token=" + url.QueryEscape(e.h.signer.Sign(sid, 3000, time.Minute))},
		{"an expired token", ws + sid + "?token=" + url.QueryEscape(e.h.signer.Sign(sid, interactiveTokenPort, -time.Minute))},
		{"a bearer token instead", ws + sid + "?token=" + testToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := websocket.Dial(context.Background(), tc.url, nil)
			if err == nil {
				c.CloseNow()
				t.Fatal("dial succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("answer %v, want 403", resp)
			}
		})
	}
}
