package bench

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
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
	drv, nm := networkedDriver(b, dir, agentPath, activationPool, log)
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
	if _, err := images.Import(ctx, image.Published, tarPath); err != nil {
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
			switch control.State(ev.Type) {
			case control.StateStarting:
				starting = time.Now()
			case control.StateReady:
				ready = time.Now()
			}
		}
		if control.State(last.Type) != control.StateReady {
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

	b.StopTimer()
	direct, proxied := measureAppProxy(b, svc, team, p.ID)
	b.ReportMetric(ms(pct(direct, 50)), "app-direct-p50-ms")
	b.ReportMetric(ms(pct(direct, 99)), "app-direct-p99-ms")
	b.ReportMetric(ms(pct(proxied, 50)), "app-proxy-p50-ms")
	b.ReportMetric(ms(pct(proxied, 99)), "app-proxy-p99-ms")
	b.ReportMetric(ms(pct(proxied, 50))-ms(pct(direct, 50)), "app-added-p50-ms")
}

// appRequests bounds the proxied-vs-direct comparison.
const appRequests = 1000

// measureAppProxy activates the project once more and times GET
// /sessions (authenticated by the app's secret) straight to the app's
// address with the secret, and through the app proxy's path form, where the
// proxy resolves the project, strips and injects the secret header and
// records activity; the two interleaved, one request at a time.
func measureAppProxy(b *testing.B, svc *control.Service, team auth.Principal, projectID string) (direct, proxied []time.Duration) {
	ctx := context.Background()
	a, err := svc.Activate(ctx, team, projectID)
	if err != nil {
		b.Fatal(err)
	}
	ch, err := svc.Watch(ctx, team, a.ID, 0)
	if err != nil {
		b.Fatal(err)
	}
	for range ch {
	}
	b.Cleanup(func() { svc.Deactivate(context.Background(), team, projectID, "") })
	target, err := svc.AppTarget(ctx, team, projectID)
	if err != nil {
		b.Fatal(err)
	}
	apps, err := proxy.NewApp(proxy.AppConfig{
		Resolve: func(ctx context.Context, p auth.Principal, id string) (proxy.AppTarget, error) {
			t, err := svc.AppTarget(ctx, p, id)
			return proxy.AppTarget(t), err
		},
		Touch:  svc.Touch,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { apps.Close() })
	// The API's middleware puts the caller in the context; this stands in
	// for it with the project's team.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apps.PathHandler().ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), team)))
	}))
	b.Cleanup(front.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, Timeout: 10 * time.Second}
	b.Cleanup(client.CloseIdleConnections)
	get := func(url string, secret bool) time.Duration {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if secret {
			req.Header.Set(target.SecretHeader, target.Secret)
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %s", url, resp.Status)
		}
		return took
	}
	directURL := target.URL.String() + "/sessions"
	proxyURL := front.URL + proxy.AppPathPrefix(projectID) + "/sessions"
	for range 20 { // warm both keep-alive pools
		get(directURL, true)
		get(proxyURL, false)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < appRequests && time.Now().Before(deadline); i++ {
		direct = append(direct, get(directURL, true))
		proxied = append(proxied, get(proxyURL, false))
	}
	return direct, proxied
}
