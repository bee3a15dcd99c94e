package server_test

import (
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

var (
	_ server.Sandboxes = (*fake.Sandboxes)(nil)
	_ server.Pauser    = (*fake.Sandboxes)(nil)
	_ server.Snapshots = (*fake.Snapshots)(nil)
)

// newFakeSandboxes is fake.Sandboxes with node's defaults and bounds, the
// host image only and a fixed clock, answering with ac (nil: no agent).
func newFakeSandboxes(ac *agent.Client) *fake.Sandboxes {
	return fake.NewSandboxes(fake.SandboxesConfig{
		Agent:        ac,
		Now:          fake.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)).Now,
		Resources:    sandbox.Resources{VCPUs: 1, MemoryMB: 512, PIDs: 256},
		MaxResources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192, PIDs: 4096},
		MaxTimeout:   time.Hour,
		Images:       []string{"host"},
	})
}

// startFakeAgent is the agent of the server's tests: fake.Agent running
// fake.Echo on a fixed clock.
func startFakeAgent(t *testing.T) (*fake.Agent, *agent.Client) {
	t.Helper()
	fa := fake.StartAgent(t, fake.AgentConfig{Now: fake.NewClock(time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)).Now})
	return fa, fa.Client()
}
