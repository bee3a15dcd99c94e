package bench

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// activationPool is this benchmark's address pool, apart from the proxy
// benchmark's.
var activationPool = netip.MustParsePrefix("10.213.252.0/24")

// BenchmarkActivation measures a cold activation of a project running the
// goose stand-in: from Activate to the app answering its health check
// (provision a networked sandbox from the stand-in's image, start the app,
// poll /status). Each iteration deactivates untimed. Reported: p50/p99 of
// the whole, and of its two halves (until the app's command started; from
// there until healthy), from the activation's own events.
func BenchmarkActivation(b *testing.B) {
	ctx := context.Background()
	if why := doctor.SandboxReady(ctx); why != "" {
		b.Skip("sandboxes cannot run here: " + why)
	}
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "pb-")
	if err != nil {
		b.Fatal(err)
	}
	before := leakcheck.Snapshot(leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"sb-*"}, LinkPrefix: "pd"})
	b.Cleanup(func() {
		before.Check(b)
		os.RemoveAll(dir)
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	drv, err := runc.New(runc.Config{DataDir: dir, AgentPath: agentPath, Logger: log})
	if err != nil {
		b.Fatalf("runc driver: %v", err)
	}
	b.Cleanup(func() { drv.Close() })
	nm, err := netns.New(netns.Config{DataDir: dir, Pool: activationPool, Upstream: []netip.AddrPort{unreachableDNS}, Logger: log})
	if err != nil {
		b.Fatalf("netns: %v", err)
	}
	b.Cleanup(func() { nm.Close() })
	images, err := image.OpenStore(filepath.Join(dir, "images"), image.StoreOptions{Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	bin, err := standinimage.Build(ctx, "", filepath.Join(dir, "standin"))
	if err != nil {
		b.Fatalf("build the stand-in: %v", err)
	}
	tarPath := filepath.Join(dir, "standin", "image.tar")
	if err := standinimage.WriteImage(bin, tarPath, ""); err != nil {
		b.Fatal(err)
	}
	if _, err := images.Import(ctx, tarPath); err != nil {
		b.Fatalf("import the stand-in: %v", err)
	}
	mgr, err := node.New(node.Config{DataDir: dir, Driver: drv, Network: nm, Images: images, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	if err := mgr.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mgr.Close() })
	st, err := sqlite.Open(filepath.Join(dir, "paddock.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	svc, err := control.New(control.Config{Store: st, Sandboxes: control.NodeSandboxes{Manager: mgr, Images: images},
		DataDir: dir, Key: key, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })

	team := auth.Principal{TeamID: "bench", Role: store.RoleAdmin}
	p, err := svc.CreateProject(ctx, team, control.ProjectRequest{Name: "standin",
		Source: control.Source{Image: standinimage.DefaultRef}, MaxLifetime: time.Hour,
		// The image's GOOSE_PATH_ROOT is root's; the app runs as the sandbox's user.
		Env:       map[string]string{"GOOSE_PATH_ROOT": "/home/user/goose"},
		Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		b.Fatal(err)
	}
	var total, provision, start []time.Duration
	for b.Loop() {
		t0 := time.Now()
		a, err := svc.Activate(ctx, team, p.ID)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := svc.Watch(ctx, team, a.ID, 0)
		if err != nil {
			b.Fatal(err)
		}
		var starting, ready time.Time
		var last store.Event
		for ev := range ch {
			last = ev
			switch ev.Type {
			case control.StateStarting:
				starting = time.Now()
			case control.StateReady:
				ready = time.Now()
			}
		}
		if last.Type != control.StateReady {
			b.Fatalf("activation ended %s: %s\n%s", last.Type, last.Message, last.Data["logTail"])
		}
		b.StopTimer()
		total = append(total, ready.Sub(t0))
		provision = append(provision, starting.Sub(t0))
		start = append(start, ready.Sub(starting))
		if _, err := svc.Deactivate(ctx, team, p.ID, ""); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	report(b, "", total, nil)
	b.ReportMetric(ms(pct(provision, 50)), "to-start-p50-ms")
	b.ReportMetric(ms(pct(start, 50)), "start-to-healthy-p50-ms")
}
