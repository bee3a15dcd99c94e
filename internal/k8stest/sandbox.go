package k8stest

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/hostimage"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
)

// SandboxImages are the images the kubernetes driver runs a sandbox
// from, in a registry on this machine that the cluster's node pulls from.
type SandboxImages struct {
	// Registry is the registry's host:port (127.0.0.1).
	Registry string
	// Agent holds the static agent at /paddock-agent (the driver's
	// AgentImage).
	Agent string
	// Host is the image "host" as the runc driver has it: its skeleton
	// (a made-up /etc, the mountpoints) as the image, and HostBinds, the
	// host's /usr and the like, to bind read-only over it (the driver's
	// HostImage).
	Host      string
	HostBinds []runtime.Bind
}

// PushSandboxImages starts a registry that lives until tb ends, lets the
// node pull from it, and pushes the agent (built from this tree) and host
// images there.
func (c *Cluster) PushSandboxImages(tb testing.TB) SandboxImages {
	tb.Helper()
	im := SandboxImages{Registry: imagetest.Registry(tb)}
	c.TrustRegistry(tb, im.Registry)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		tb.Fatalf("agent binary: %v", err)
	}
	bin, err := os.ReadFile(agentPath)
	if err != nil {
		tb.Fatal(err)
	}
	im.Agent = im.Registry + "/paddock/agent:test"
	imagetest.Push(tb, im.Agent, imagetest.Image(tb, nil, "/", imagetest.Layer(tb, func(tw *tar.Writer) {
		imagetest.File(tb, tw, "paddock-agent", bin, 0o755)
	})))

	host, err := hostimage.Build(tb.TempDir())
	if err != nil {
		tb.Fatalf("host image: %v", err)
	}
	im.Host = im.Registry + "/paddock/host:test"
	imagetest.Push(tb, im.Host, imagetest.Image(tb, nil, "/", imagetest.DirLayer(tb, host.Lower)))
	im.HostBinds = host.ReadOnlyBinds
	return im
}
