package vercel

import (
	"fmt"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/server"
)

var (
	_ server.Sandboxes = (*fake.Sandboxes)(nil)
	_ server.Snapshots = (*fake.Snapshots)(nil)
)

// startFakeAgent is an agent that runs every command to completion at
// once: stdout is its args joined by spaces and a newline, in two frames
// split mid-way (mid-rune when it has a multi-byte one, as a pipe read
// may), exit code 0 (or the number in the first arg for "exit"). A
// command on a terminal runs until it is signalled or the test ends it;
// the fake terminal echoes its input.
func startFakeAgent(t *testing.T) *fake.Agent {
	t.Helper()
	return fake.StartAgent(t, fake.AgentConfig{Script: func(c *fake.Cmd) {
		if c.Req.PTY != nil {
			return
		}
		code := 0
		if c.Req.Cmd == "exit" && len(c.Req.Args) > 0 {
			fmt.Sscan(c.Req.Args[0], &code)
		}
		out := []byte(strings.Join(c.Req.Args, " ") + "\n")
		cut := len(out) / 2
		c.Emit(agent.FrameStdout, out[:cut])
		c.Emit(agent.FrameStdout, out[cut:])
		c.Exit(code)
	}})
}
