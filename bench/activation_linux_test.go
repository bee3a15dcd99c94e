package bench

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
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
	agentPath, dir := benchDir(b)
	d, hs := startDaemon(b, daemon.Config{DataDir: dir, NetworkPool: activationPool, Domain: "localhost"}, agentPath)
	importStandin(b, d, dir)
	svc := d.Projects()
	// A team of its own, with a token for the app proxy's requests.
	tm, err := d.Auth().CreateTeam(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	token, _, err := d.Auth().CreateToken(ctx, tm.ID, "", "bench", store.RoleAdmin, 0)
	if err != nil {
		b.Fatal(err)
	}
	team := auth.Principal{TeamID: tm.ID, Role: store.RoleAdmin}
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
		tot, prov, _ := activateTimed(b, svc, team, p.ID)
		b.StopTimer()
		total = append(total, tot)
		provision = append(provision, prov)
		start = append(start, tot-prov)
		if _, err := svc.Deactivate(ctx, team, p.ID, ""); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	report(b, "", total, nil)
	b.ReportMetric(ms(pct(provision, 50)), "to-start-p50-ms")
	b.ReportMetric(ms(pct(start, 50)), "start-to-healthy-p50-ms")

	b.StopTimer()
	direct, proxied := measureAppProxy(b, svc, team, p.ID, hs.URL, token)
	b.ReportMetric(ms(pct(direct, 50)), "app-direct-p50-ms")
	b.ReportMetric(ms(pct(direct, 99)), "app-direct-p99-ms")
	b.ReportMetric(ms(pct(proxied, 50)), "app-proxy-p50-ms")
	b.ReportMetric(ms(pct(proxied, 99)), "app-proxy-p99-ms")
	b.ReportMetric(ms(pct(proxied, 50))-ms(pct(direct, 50)), "app-added-p50-ms")
}

// importStandin builds the goose stand-in's image and imports it into the
// daemon as standinimage.DefaultRef.
func importStandin(b *testing.B, d *daemon.Daemon, dir string) {
	b.Helper()
	bin, err := standinimage.Build(context.Background(), "", filepath.Join(dir, "standin"))
	if err != nil {
		b.Fatalf("build the stand-in: %v", err)
	}
	tarPath := filepath.Join(dir, "standin", "image.tar")
	if err := standinimage.WriteImage(bin, tarPath, ""); err != nil {
		b.Fatal(err)
	}
	if _, err := d.Images().Import(context.Background(), image.Published, tarPath); err != nil {
		b.Fatalf("import the stand-in: %v", err)
	}
}

// activateTimed activates a project and follows its progress to ready:
// the whole (Activate → ready), the part until the app's command started,
// and the sandbox it ran in. Any other end fails the benchmark.
func activateTimed(b *testing.B, svc *control.Service, team auth.Principal, projectID string) (total, provision time.Duration, sandboxID string) {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now()
	a, err := svc.Activate(ctx, team, projectID)
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
	got, err := svc.GetActivation(ctx, team, a.ID)
	if err != nil {
		b.Fatal(err)
	}
	return ready.Sub(t0), starting.Sub(t0), got.SandboxID
}

// appRequests bounds the proxied-vs-direct comparison.
const appRequests = 1000

// measureAppProxy activates the project once more and times GET
// /sessions (authenticated by the app's secret) straight to the app's
// address with the secret, and through the daemon's app proxy, path form,
// with the team's API token: the API authenticates it, the proxy resolves
// the project, strips and injects the secret header and records activity;
// the two interleaved, one request at a time.
func measureAppProxy(b *testing.B, svc *control.Service, team auth.Principal, projectID, base, token string) (direct, proxied []time.Duration) {
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
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, Timeout: 10 * time.Second}
	b.Cleanup(client.CloseIdleConnections)
	get := func(url string, secret bool) time.Duration {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if secret {
			req.Header.Set(target.SecretHeader, target.Secret)
		} else {
			req.Header.Set("Authorization", "Bearer "+token)
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
	proxyURL := base + app.PathPrefix(projectID) + "/sessions"
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
