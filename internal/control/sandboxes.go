package control

import (
	"bytes"
	"context"
	"errors"
	"io"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sandboxes is what the control plane needs from the host's sandboxes.
// NodeSandboxes adapts node.Manager; tests use a fake.
type Sandboxes interface {
	Create(ctx context.Context, req node.CreateRequest) (sandbox.Sandbox, error)
	Get(ctx context.Context, id string) (sandbox.Sandbox, error)
	Stop(ctx context.Context, id string) (sandbox.Sandbox, error)
	Delete(ctx context.Context, id string) error
	// Agent returns the in-sandbox agent of a running sandbox.
	Agent(ctx context.Context, id string) (Agent, error)
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

// NodeSandboxes adapts this host's node.Manager (and its image store, for
// image commands; nil allows only images without one) to Sandboxes.
type NodeSandboxes struct {
	Manager *node.Manager
	Images  node.Images
}

var _ Sandboxes = NodeSandboxes{}

// Create implements Sandboxes.
func (n NodeSandboxes) Create(ctx context.Context, req node.CreateRequest) (sandbox.Sandbox, error) {
	return n.Manager.Create(ctx, req)
}

// Get implements Sandboxes.
func (n NodeSandboxes) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	return n.Manager.Get(ctx, id)
}

// Stop implements Sandboxes.
func (n NodeSandboxes) Stop(ctx context.Context, id string) (sandbox.Sandbox, error) {
	return n.Manager.Stop(ctx, id)
}

// Delete implements Sandboxes.
func (n NodeSandboxes) Delete(ctx context.Context, id string) error {
	return n.Manager.Delete(ctx, id)
}

// Agent implements Sandboxes.
func (n NodeSandboxes) Agent(ctx context.Context, id string) (Agent, error) {
	c, err := n.Manager.Agent(ctx, id)
	if err != nil {
		return nil, err
	}
	return agentClient{c}, nil
}

// ImageCommand implements Sandboxes.
func (n NodeSandboxes) ImageCommand(team, ref string) ([]string, error) {
	if ref == "" || ref == "host" || n.Images == nil {
		return nil, nil
	}
	img, err := n.Images.Get(team, ref)
	if err != nil {
		return nil, err
	}
	return append(append([]string(nil), img.Config.Entrypoint...), img.Config.Cmd...), nil
}

// agentClient adds Tail to *agent.Client.
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

// validUTF8 is b as a string the store and JSON keep as they are: the cut
// at max bytes can split a character, and the app can write anything.
func validUTF8(b []byte) string { return string(bytes.ToValidUTF8(b, []byte("?"))) }
