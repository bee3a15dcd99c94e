package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/sdk"
)

func TestMain(m *testing.M) {
	runc.Init() // the test binary is re-executed as every container's init
	// Runs the tests and stops the FerretDB the replica tests start.
	mongotest.Main(m)
}

// testPool is the runc case's address pool, apart from the e2e tests' and
// the benchmarks' so that none share a veth name or address.
var testPool = netip.MustParsePrefix("10.213.246.0/24")

// unreachableDNS: a loopback port nobody serves, so no lookup leaves the
// machine.
var unreachableDNS = netip.MustParseAddrPort("127.0.0.1:9")

// noGoroutinesLeft fails t if a goroutine started after this call is still
// running once every later cleanup has run. Call it first.
func noGoroutinesLeft(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// newDataDir is a data dir short enough for the agents' unix sockets,
// removed after the test.
func newDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pdmn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// served is a started daemon behind a test listener.
type served struct {
	d      *Daemon
	url    string
	hc     *http.Client
	client *sdk.Client
}

// serve starts a daemon on cfg behind an httptest listener, whose port
// makes cfg.PublicURL; the cleanup closes both (and fails the test if
// Close does).
func serve(t *testing.T, cfg Config, opts ...Option) *served {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	cfg.PublicURL = "http://localhost:" + portOf(hs.Listener.Addr())
	d, err := Start(t.Context(), cfg, opts...)
	if err != nil {
		hs.Close()
		t.Fatalf("Start: %v", err)
	}
	hs.Config.Handler = d.Handler()
	hs.Start()
	hc := &http.Client{Transport: &http.Transport{}}
	token, created := d.AdminToken()
	if !created || token == "" {
		t.Fatalf("first start made no admin token: %q, %v", token, created)
	}
	s := &served{d: d, url: hs.URL, hc: hc, client: sdk.New(hs.URL, token, sdk.WithHTTPClient(hc))}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { s.close(t, hs) }) })
	return s
}

func (s *served) close(t *testing.T, hs *httptest.Server) {
	t.Helper()
	s.d.CloseStreams()
	hs.Close()
	s.hc.CloseIdleConnections()
	if err := s.d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// probe GETs path and returns the status and the error code of a JSON
// error body ("" for another body).
func (s *served) probe(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := s.hc.Get(s.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string }
	}
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, e.Error.Code
}

// TestDaemon starts the stack, probes it, drives a sandbox through the API
// and closes it: nothing may be left running. The fake driver case runs
// anywhere; the runc case needs a host that runs sandboxes.
func TestDaemon(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) (Config, []Option)
	}{
		{"loopback sandboxes on a fake driver", func(t *testing.T, dir string) (Config, []Option) {
			return Config{DataDir: dir, NoNetwork: true}, []Option{WithDriver(fake.NewDriver(t, fake.DriverConfig{}))}
		}},
		{"runc with networking", func(t *testing.T, dir string) (Config, []Option) {
			if why := doctor.SandboxReady(t.Context()); why != "" {
				t.Skip("sandboxes cannot run here: " + why)
			}
			agent, err := agentbin.Path(t.Context(), filepath.Join(os.TempDir(), "paddock-test-agent"))
			if err != nil {
				t.Fatalf("agent binary: %v", err)
			}
			leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"sb-*"}, LinkPrefix: "pd"})
			return Config{DataDir: dir, NetworkPool: testPool, Domain: "localhost"},
				[]Option{WithAgentPath(agent), WithDNSUpstream(unreachableDNS)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noGoroutinesLeft(t)
			dir := newDataDir(t)
			cfg, opts := tc.setup(t, dir)
			s := serve(t, cfg, opts...)
			for _, path := range []string{"/healthz", "/readyz"} {
				if status, code := s.probe(t, path); status != http.StatusOK {
					t.Errorf("%s = %d %s, want 200", path, status, code)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			sb, err := s.client.Create(ctx, api.CreateSandboxRequest{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if sb.Status != api.StatusRunning {
				t.Errorf("created sandbox is %s", sb.Status)
			}
			page, err := s.client.ListPage(ctx, sdk.ListOptions{})
			if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].ID != sb.ID {
				t.Errorf("list = %+v, %v; want %s", page, err, sb.ID)
			}
			if err := sb.Delete(ctx); err != nil {
				t.Fatalf("delete: %v", err)
			}
		})
	}
}

// TestReadyz: readyz says what is not ready once the store stops answering
// or the daemon shuts down.
func TestReadyz(t *testing.T) {
	for _, tc := range []struct {
		name     string
		breakIt  func(t *testing.T, s *served, st *sqlite.Store)
		wantCode string
	}{
		{"store closed", func(t *testing.T, s *served, st *sqlite.Store) { st.Close() }, "store_unavailable"},
		{"daemon closed", func(t *testing.T, s *served, st *sqlite.Store) {
			if err := s.d.Close(); err != nil {
				t.Fatal(err)
			}
		}, "shutting_down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noGoroutinesLeft(t)
			dir := newDataDir(t)
			st, err := sqlite.Open(filepath.Join(dir, "given.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			s := serve(t, Config{DataDir: dir, NoNetwork: true}, WithDriver(fake.NewDriver(t, fake.DriverConfig{})), WithStore(st))
			if status, code := s.probe(t, "/readyz"); status != http.StatusOK {
				t.Fatalf("readyz = %d %s before, want 200", status, code)
			}
			tc.breakIt(t, s, st)
			status, code := s.probe(t, "/readyz")
			if status != http.StatusServiceUnavailable || code != tc.wantCode {
				t.Errorf("readyz = %d %q, want 503 %s", status, code, tc.wantCode)
			}
			if status, _ := s.probe(t, "/healthz"); status != http.StatusOK {
				t.Errorf("healthz = %d, want 200 while the process serves", status)
			}
		})
	}
}

// TestStartFails: a Start that fails half-way closes what it had started
// (the sandbox manager, the GC loop, the store...) and returns no daemon;
// Close on that is safe, and the data dir starts again once repaired.
func TestStartFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		repair func(dir string) error
	}{
		{"the store cannot open",
			func(dir string) error { return os.MkdirAll(filepath.Join(dir, storeFile, "x"), 0o700) },
			func(dir string) error { return os.RemoveAll(filepath.Join(dir, storeFile)) }},
		{"a damaged secrets key, after the sandbox manager started",
			func(dir string) error {
				return os.WriteFile(filepath.Join(dir, secretsKeyName), []byte("short"), 0o600)
			},
			func(dir string) error { return os.Remove(filepath.Join(dir, secretsKeyName)) }},
		{"a key other users can read",
			func(dir string) error {
				return os.WriteFile(filepath.Join(dir, secretsKeyName), make([]byte, secretsKeyLen), 0o644)
			},
			func(dir string) error { return os.Chmod(filepath.Join(dir, secretsKeyName), 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noGoroutinesLeft(t)
			dir := newDataDir(t)
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			drv := fake.NewDriver(t, fake.DriverConfig{})
			cfg := Config{DataDir: dir, NoNetwork: true}
			d, err := Start(t.Context(), cfg, WithDriver(drv))
			if err == nil {
				d.Close()
				t.Fatal("Start succeeded on a damaged data dir")
			}
			t.Logf("Start: %v", err)
			if d != nil {
				t.Fatalf("a failed Start returned a daemon")
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close after a failed Start: %v", err)
			}
			if err := tc.repair(dir); err != nil {
				t.Fatal(err)
			}
			d, err = Start(t.Context(), cfg, WithDriver(drv))
			if err != nil {
				t.Fatalf("Start after the repair: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestDataDirPrivate: a data dir made by someone else (systemd's
// StateDirectory= makes it 0755) is 0700 once paddock has started.
func TestDataDirPrivate(t *testing.T) {
	noGoroutinesLeft(t)
	dir := newDataDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	serve(t, Config{DataDir: dir, NoNetwork: true}, WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v after start, want 0700", fi.Mode().Perm())
	}
}

// TestConfigValidate: settings that cannot work are refused before
// anything starts.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{DataDir: "/d"}, true},
		{"no data dir", Config{}, false},
		{"negative timeout", Config{DataDir: "/d", MaxTimeout: -time.Second}, false},
		{"negative volume size", Config{DataDir: "/d", MaxVolumeSize: -1}, false},
		{"NAT without networking", Config{DataDir: "/d", NoNetwork: true, NAT: true}, false},
		{"IPv6 pool", Config{DataDir: "/d", NetworkPool: netip.MustParsePrefix("fd00::/64")}, false},
		{"public URL", Config{DataDir: "/d", PublicURL: "https://sandbox.example.com"}, true},
		{"public URL without a scheme", Config{DataDir: "/d", PublicURL: "sandbox.example.com"}, false},
		{"negative webhook backlog", Config{DataDir: "/d", WebhookMaxBacklog: -1}, false},
		{"advertise URL", Config{DataDir: "/d", AdvertiseURL: "http://10.1.2.3:7420"}, true},
		{"advertise URL without a scheme", Config{DataDir: "/d", AdvertiseURL: "10.1.2.3:7420"}, false},
		{"advertise URL with a path", Config{DataDir: "/d", AdvertiseURL: "http://10.1.2.3:7420/api"}, false},
		{"dashboard OIDC client", Config{DataDir: "/d", OIDC: &auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app", ClientID: "dash"}, OIDCClientSecret: "s"}, true},
		{"OIDC client secret without a client", Config{DataDir: "/d", OIDC: &auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app"}, OIDCClientSecret: "s"}, false},
		{"OIDC redirect URL without OIDC", Config{DataDir: "/d", OIDCRedirectURL: "https://p.example.com/ui/oidc/callback"}, false},
		{"gvisor runtime", Config{DataDir: "/d", Runtime: "gvisor"}, true},
		{"unknown runtime", Config{DataDir: "/d", Runtime: "kata"}, false},
		{"kubernetes runtime", Config{DataDir: "/d", Runtime: "kubernetes", Kubernetes: KubernetesConfig{Namespace: "sbx", AgentImage: "r/paddock:1"}}, true},
		{"kubernetes runtime without a namespace", Config{DataDir: "/d", Runtime: "kubernetes", Kubernetes: KubernetesConfig{AgentImage: "r/paddock:1"}}, false},
		{"kubernetes request fraction above 1", Config{DataDir: "/d", Runtime: "kubernetes", Kubernetes: KubernetesConfig{Namespace: "sbx", AgentImage: "a", RequestFraction: 2}}, false},
		{"kubernetes pull policy", Config{DataDir: "/d", Runtime: "kubernetes", Kubernetes: KubernetesConfig{Namespace: "sbx", AgentImage: "a", PullPolicy: "Sometimes"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := Start(t.Context(), Config{}); err == nil {
		t.Error("Start accepted a config without a data dir")
	}
	// The dashboard's redirect URI defaults to the public URL's callback.
	c := Config{PublicURL: "https://p.example.com/", OIDC: &auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app", ClientID: "dash"}}
	if l := c.oidcLogin(); l == nil || l.RedirectURL != "https://p.example.com/ui/oidc/callback" || l.ClientID != "dash" {
		t.Errorf("oidcLogin = %+v", l)
	}
}

// TestE2BMounted: the E2B layer answers under /compat/e2b and on the host
// api.<domain>, in E2B's error shape; other hosts' root paths stay the API's.
func TestE2BMounted(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, Domain: "paddock.localhost"},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	for _, tc := range []struct {
		name, host, path string
		status           int
		e2bShape         bool
	}{
		{"the prefix", "", "/compat/e2b/v2/sandboxes", http.StatusUnauthorized, true},
		{"the API host", "api.paddock.localhost", "/v2/sandboxes", http.StatusUnauthorized, true},
		{"another host", "", "/v2/sandboxes", http.StatusNotFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.url+tc.path, nil)
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := s.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			_, isE2B := body["code"].(float64)
			if resp.StatusCode != tc.status || isE2B != tc.e2bShape {
				t.Errorf("%s%s = %d %v, want %d in E2B's shape: %v", tc.host, tc.path, resp.StatusCode, body, tc.status, tc.e2bShape)
			}
		})
	}
}

// TestEventRetention: zero fields take the defaults, negative ones keep
// everything by that bound.
func TestEventRetention(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want events.Retention
	}{
		{"defaults", Config{}, events.Retention{MaxAge: events.DefaultRetentionAge, MaxEvents: events.DefaultMaxEvents}},
		{"set", Config{EventRetention: time.Hour, EventMaxCount: 10}, events.Retention{MaxAge: time.Hour, MaxEvents: 10}},
		{"forever", Config{EventRetention: -1, EventMaxCount: -1}, events.Retention{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.eventRetention(); got != tc.want {
				t.Errorf("eventRetention = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestE2BEnvdMounted: E2B's data plane answers ahead of everything else
// for its host form, its single host and any request naming a sandbox in
// E2b-Sandbox-Id (E2B_SANDBOX_URL at paddock's own address), with the
// token create handed out; other requests are the API's as before.
func TestE2BEnvdMounted(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, Domain: "paddock.localhost"},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx := t.Context()
	team, err := s.d.Auth().CreateTeam(ctx, "e2b")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := s.d.Auth().CreateTokenFormat(ctx, auth.FormatE2B, team.ID, "", "sdk", store.RoleMember, 0)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, host, path string, hdr map[string]string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
		if host != "" {
			req.Host = host
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := s.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := do("POST", "", "/compat/e2b/sandboxes", map[string]string{"X-API-Key": key}, `{}`)
	var created struct {
		SandboxID       string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if err := json.Unmarshal([]byte(body), &created); status != http.StatusCreated || err != nil || created.EnvdAccessToken == "" {
		t.Fatalf("create = %d %s", status, body)
	}
	id, tok := created.SandboxID, created.EnvdAccessToken
	list := `{}`
	rpc := map[string]string{"Content-Type": "application/json"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, tc := range []struct {
		name, host, path string
		hdr              map[string]string
		status           int
	}{
		{"single host at paddock's address", "", "/process.Process/List", with(rpc, "E2b-Sandbox-Id", id, "E2b-Sandbox-Port", "49983", "X-Access-Token", tok), 200},
		{"host form", "49983-" + id + ".paddock.localhost", "/process.Process/List", with(rpc, "X-Access-Token", tok), 200},
		{"sandbox.<domain>", "sandbox.paddock.localhost", "/process.Process/List", with(rpc, "E2b-Sandbox-Id", id, "X-Access-Token", tok), 200},
		{"no token", "", "/process.Process/List", with(rpc, "E2b-Sandbox-Id", id), 401},
		{"the API key is no envd token", "", "/process.Process/List", with(rpc, "E2b-Sandbox-Id", id, "X-Access-Token", key, "Authorization", "Bearer "+key), 401},
		{"the API unaffected", "", "/healthz", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, body := "POST", list
			if tc.path == "/healthz" {
				method, body = "GET", ""
			}
			if status, got := do(method, tc.host, tc.path, tc.hdr, body); status != tc.status {
				t.Fatalf("%s %s%s = %d %s, want %d", method, tc.host, tc.path, status, got, tc.status)
			}
		})
	}
}
