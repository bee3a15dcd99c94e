package control

import (
	"archive/tar"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeSandboxes is fake.Sandboxes as a Sandboxes: every sandbox has a
// fake.Agent of its own running the scripts below, and the apps they
// "serve" are real HTTP servers on loopback, so the health check and the
// app target are exercised for real.
type fakeSandboxes struct {
	*fake.Sandboxes
	imageCmd []string // what ImageCommand answers

	mu     sync.Mutex // guards agents
	agents map[string]*fakeAgent
}

var _ Sandboxes = (*fakeSandboxes)(nil)

func newFakeSandboxes(t *testing.T) *fakeSandboxes {
	f := &fakeSandboxes{agents: map[string]*fakeAgent{}}
	f.Sandboxes = fake.NewSandboxes(fake.SandboxesConfig{
		Address: netip.MustParseAddr("127.0.0.1"),
		NewAgent: func(sb sandbox.Sandbox) *agent.Client {
			a := &fakeAgent{}
			// Archives end with hostile entries the state saver must drop.
			a.Agent = fake.StartAgent(t, fake.AgentConfig{Script: a.run, ArchiveTail: []tar.Header{
				{Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc/shadow"},
				{Typeflag: tar.TypeReg, Name: "../escape"},
			}})
			f.mu.Lock()
			f.agents[sb.ID] = a
			f.mu.Unlock()
			return a.Client()
		},
		// Stopping a sandbox ends its commands.
		OnStop: func(id string) {
			if a := f.agentOf(id); a != nil {
				a.KillAll()
			}
		},
	})
	return f
}

func (f *fakeSandboxes) Agent(ctx context.Context, id string) (Agent, error) {
	ac, err := f.Sandboxes.Agent(ctx, id)
	if err != nil {
		return nil, err
	}
	return AgentClient(ac), nil
}

func (f *fakeSandboxes) ImageCommand(team, ref string) ([]string, error) { return f.imageCmd, nil }

// live returns the IDs of sandboxes that exist.
func (f *fakeSandboxes) live() []string { return f.IDs() }

func (f *fakeSandboxes) createCount() int { return len(f.Creates()) }

func (f *fakeSandboxes) agentOf(id string) *fakeAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.agents[id]
}

// fakeAgent runs scripts: "serve PORT" serves /status on 127.0.0.1:PORT
// (200 with the right secret header, else 401) until signalled; "redirect
// PORT URL" answers every request on 127.0.0.1:PORT with 302 to URL;
// "stubborn PORT" serves but ignores SIGTERM; "exit N MSG" prints MSG and
// exits N; "hang" runs until signalled.
type fakeAgent struct {
	*fake.Agent

	mu  sync.Mutex // guards app
	app string     // the command that serves, if any
}

func (a *fakeAgent) run(c *fake.Cmd) {
	script := strings.Join(append([]string{c.Req.Cmd}, c.Req.Args...), " ")
	if c.Req.Cmd == "sh" && len(c.Req.Args) == 2 {
		script = c.Req.Args[1]
	}
	out := func(s string) { c.Emit(agent.FrameStdout, []byte(s)) }
	serve := func(port string, h http.Handler) bool {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			out(err.Error())
			c.Exit(1)
			return false
		}
		srv := &http.Server{Handler: h}
		go srv.Serve(ln) // owned: closed when the command ends
		c.OnEnd(func() { srv.Close() })
		a.mu.Lock()
		a.app = c.ID
		a.mu.Unlock()
		return true
	}
	f := strings.Fields(script)
	switch {
	case len(f) >= 2 && f[0] == "exit":
		code, _ := strconv.Atoi(f[1])
		out(strings.Join(f[2:], " ") + "\n")
		c.Exit(code)
	case len(f) == 2 && (f[0] == "serve" || f[0] == "stubborn"):
		secret := c.Req.Env[DefaultAppSecretEnv]
		if !serve(f[1], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(DefaultAppSecretHeader) != secret {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "ok")
		})) {
			return
		}
		if f[0] == "stubborn" {
			c.OnSignal(func(sig int) bool { return sig != 15 })
		}
		out("listening\n")
	case len(f) == 3 && f[0] == "redirect":
		if serve(f[1], http.RedirectHandler(f[2], http.StatusFound)) {
			out("redirecting\n")
		}
	case len(f) == 1 && f[0] == "hang":
		out("hanging\n")
	default:
		out("unknown script " + script)
		c.Exit(127)
	}
}

func (a *fakeAgent) writeFile(p string, b []byte) { a.PutFile(p, b, 0o644) }

func (a *fakeAgent) readFile(p string) ([]byte, bool) { return a.ReadFile(p) }

// crash ends a sandbox's app as if it had died on its own.
func (a *fakeAgent) crash(out string) {
	a.mu.Lock()
	app := a.app
	a.mu.Unlock()
	a.Emit(app, agent.FrameStdout, []byte(out))
	a.Finish(app, agent.StatusExited, 2, "")
}
