package control

import (
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sandboxes is what the control plane needs from the host's sandboxes.
// internal/daemon adapts node.Manager to it; tests use a fake.
type Sandboxes interface {
	Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	Get(ctx context.Context, id string) (sandbox.Sandbox, error)
	Stop(ctx context.Context, id string) (sandbox.Sandbox, error)
	Delete(ctx context.Context, id string) error
	// List pages through this host's sandboxes (node.Manager's List).
	List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error)
	// Agent returns the in-sandbox agent of a running sandbox.
	Agent(ctx context.Context, id string) (Agent, error)
	// Exec starts a command in a running sandbox, with the sandbox's env
	// and working dir as defaults, and records it in the history (see
	// node.Manager.Exec).
	Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error)
	// ImageCommand is an image's Entrypoint followed by its Cmd, the
	// command a project with no Start runs.
	ImageCommand(team, ref string) ([]string, error)
}

// Agent is the part of the in-sandbox agent the control plane uses.
type Agent interface {
	Start(ctx context.Context, req agent.CommandRequest) (agent.Command, error)
	Get(ctx context.Context, id string) (agent.Command, error)
	Wait(ctx context.Context, id string) (agent.Command, error)
	Signal(ctx context.Context, id string, sig int) error
	// Tail returns up to max bytes of the end of a command's output,
	// stdout and stderr interleaved as written.
	Tail(ctx context.Context, id string, max int) (string, error)
	Mkdir(ctx context.Context, req agent.MkdirRequest) error
	WriteTar(ctx context.Context, dir string, sudo bool, r io.Reader) (agent.WriteResult, error)
	// ReadArchive streams a path as a tar; its entries are hostile.
	ReadArchive(ctx context.Context, path string) (io.ReadCloser, error)
}

// AgentClient adapts the host's client of a sandbox's agent to Agent.
func AgentClient(c *agent.Client) Agent { return agentClient{c} }

// agentClient adds Tail to *agent.Client and fixes who reads state.
type agentClient struct{ *agent.Client }

// Tail implements Agent: it reads the output from the start and keeps the
// last max bytes, so the host holds at most max plus one frame.
func (a agentClient) Tail(ctx context.Context, id string, max int) (string, error) {
	out, err := a.Output(ctx, id, 0, false)
	if err != nil {
		return "", err
	}
	defer out.Close()
	var buf []byte
	for {
		f, err := out.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Callers keep what was read even then (as the failure's log
			// tail), so it gets the same cleaning as a whole one.
			return validUTF8(buf), err
		}
		if f.Kind != agent.FrameStdout && f.Kind != agent.FrameStderr {
			continue
		}
		buf = append(buf, f.Data...)
		if len(buf) > max {
			buf = append(buf[:0:0], buf[len(buf)-max:]...)
		}
	}
	return validUTF8(buf), nil
}

// ReadArchive implements Agent. State is read as the sandbox's user, who
// runs the app and owns what restore writes back: files only root can read
// stay out of the saved state rather than come back readable by the user.
func (a agentClient) ReadArchive(ctx context.Context, path string) (io.ReadCloser, error) {
	return a.Client.ReadArchive(ctx, path, false)
}

// validUTF8 is b as a string the store and JSON keep as they are: the cut
// at max bytes can split a character, and the app can write anything.
func validUTF8(b []byte) string { return string(bytes.ToValidUTF8(b, []byte("?"))) }
