package control

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

var (
	teamA = auth.Principal{TeamID: "team-a", Name: "alice", Role: store.RoleMember}
	teamB = auth.Principal{TeamID: "team-b", Name: "bob", Role: store.RoleMember}
)

type env struct {
	svc   *Service
	store store.Store
	fs    *fakeSandboxes
	dir   string
	cfg   Config
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "paddock.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	fs := newFakeSandboxes(t)
	cfg := Config{Store: st, Sandboxes: fs, DataDir: dir, Key: key, HealthTimeout: 5 * time.Second,
		IdleCheckInterval: 20 * time.Millisecond, StopGrace: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{store: st, fs: fs, dir: dir, cfg: cfg}
	e.svc = e.start(t)
	return e
}

// start starts a Service on the env's store and sandboxes; closed at cleanup.
func (e *env) start(t *testing.T) *Service {
	t.Helper()
	s, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// create creates a project of team A, failing the test if it cannot.
func (e *env) create(t *testing.T, req ProjectRequest) ProjectView {
	t.Helper()
	v, err := e.svc.CreateProject(context.Background(), teamA, req)
	if err != nil {
		t.Fatalf("create project %s: %v", req.Name, err)
	}
	return v
}

// deactivate ends team A's project's activation, failing the test if it cannot.
func (e *env) deactivate(t *testing.T, projectID string) {
	t.Helper()
	if _, err := e.svc.Deactivate(context.Background(), teamA, projectID, ""); err != nil {
		t.Fatalf("deactivate %s: %v", projectID, err)
	}
}

// noSandboxesLeft fails the test if any activation's sandbox outlived it.
func (e *env) noSandboxesLeft(t *testing.T) {
	t.Helper()
	if ids := e.fs.live(); len(ids) != 0 {
		t.Fatalf("sandboxes left: %v", ids)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// appRequest is a project whose app the fake serves on a free port.
func appRequest(t *testing.T, name string) ProjectRequest {
	port := freePort(t)
	return ProjectRequest{Name: name, Source: Source{Image: "example/app"}, AppPort: port,
		Start: "serve " + strconv.Itoa(port), PersistentPaths: []string{"/home/user/.goose"}}
}

// waitFor polls an activation until it reaches state (or a terminal one).
func waitFor(t *testing.T, s *Service, id string, state State) store.Activation {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a, err := s.GetActivation(context.Background(), teamA, id)
		if err != nil {
			t.Fatal(err)
		}
		if stateOf(a) == state {
			return a
		}
		if stateOf(a).Terminal() || time.Now().After(deadline) {
			t.Fatalf("activation %s is %s (%s), want %s", id, a.State, a.Error, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func activateReady(t *testing.T, s *Service, projectID string) store.Activation {
	t.Helper()
	a, err := s.Activate(context.Background(), teamA, projectID)
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return waitFor(t, s, a.ID, StateReady)
}

func TestValidation(t *testing.T) {
	e := newEnv(t, nil)
	ok := ProjectRequest{Name: "app", Source: Source{Image: "img"}}
	for _, tc := range []struct {
		name string
		mod  func(*ProjectRequest)
		code string
	}{
		{"bad name", func(r *ProjectRequest) { r.Name = "-x" }, "invalid_name"},
		{"empty name", func(r *ProjectRequest) { r.Name = "" }, "invalid_name"},
		{"no source", func(r *ProjectRequest) { r.Source = Source{} }, "invalid_source"},
		{"two sources", func(r *ProjectRequest) {
			r.Source.Git = &sandbox.Source{URL: "https://example.com/r.git"}
		}, "invalid_source"},
		{"git not http", func(r *ProjectRequest) { r.Source = Source{Git: &sandbox.Source{URL: "file:///etc"}} }, "invalid_source"},
		{"git creds in url", func(r *ProjectRequest) {
			r.Source = Source{Git: &sandbox.Source{URL: "https://u:p@example.com/r.git"}}
		}, "invalid_source"},
		{"port too big", func(r *ProjectRequest) { r.AppPort = 70000 }, "invalid_port"},
		{"port negative", func(r *ProjectRequest) { r.AppPort = -1 }, "invalid_port"},
		{"health not absolute", func(r *ProjectRequest) { r.HealthPath = "status" }, "invalid_health_path"},
		{"health other host", func(r *ProjectRequest) { r.HealthPath = "//evil/x" }, "invalid_health_path"},
		{"relative path", func(r *ProjectRequest) { r.PersistentPaths = []string{"data"} }, "invalid_path"},
		{"unclean path", func(r *ProjectRequest) { r.PersistentPaths = []string{"/a/../etc"} }, "invalid_path"},
		{"root path", func(r *ProjectRequest) { r.PersistentPaths = []string{"/"} }, "invalid_path"},
		{"proc path", func(r *ProjectRequest) { r.PersistentPaths = []string{"/proc/1"} }, "invalid_path"},
		{"nested paths", func(r *ProjectRequest) { r.PersistentPaths = []string{"/data", "/data/x"} }, "invalid_path"},
		{"idle over lifetime", func(r *ProjectRequest) { r.IdleTimeout, r.MaxLifetime = time.Hour, 30*time.Minute }, "invalid_timeout"},
		{"lifetime too long", func(r *ProjectRequest) { r.MaxLifetime = 48 * time.Hour }, "invalid_timeout"},
		{"negative idle", func(r *ProjectRequest) { r.IdleTimeout = -time.Second }, "invalid_timeout"},
		{"health timeout too short", func(r *ProjectRequest) { r.HealthTimeout = time.Millisecond }, "invalid_timeout"},
		{"health timeout too long", func(r *ProjectRequest) { r.HealthTimeout = 2 * time.Hour }, "invalid_timeout"},
		{"bad env name", func(r *ProjectRequest) { r.Env = map[string]string{"A-B": "x"} }, "invalid_env"},
		{"bad secret name", func(r *ProjectRequest) { r.Secrets = map[string]string{"1X": "x"} }, "invalid_env"},
		{"env and secret", func(r *ProjectRequest) {
			r.Env, r.Secrets = map[string]string{"K": "a"}, map[string]string{"K": "b"}
		}, "invalid_env"},
		{"env shadows app secret", func(r *ProjectRequest) {
			r.Env = map[string]string{DefaultAppSecretEnv: "mine"}
		}, "invalid_env"},
		{"reserved header", func(r *ProjectRequest) { r.AppSecretHeader = "authorization" }, "invalid_header"},
		{"bad header", func(r *ProjectRequest) { r.AppSecretHeader = "X Secret" }, "invalid_header"},
		{"negative resources", func(r *ProjectRequest) { r.Resources.MemoryMB = -1 }, "invalid_resources"},
		{"bad label", func(r *ProjectRequest) { r.Labels = map[string]string{"bad key": "x"} }, "invalid_labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.mod(&req)
			_, err := e.svc.CreateProject(context.Background(), teamA, req)
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != tc.code {
				t.Fatalf("got %v (code %q), want ErrInvalid %q", err, sandbox.CodeOf(err), tc.code)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		v, err := e.svc.CreateProject(context.Background(), teamA, ok)
		if err != nil {
			t.Fatal(err)
		}
		sp := v.Spec
		if sp.AppPort != 3001 || sp.HealthPath != "/status" || sp.IdleTimeout != 15*time.Minute ||
			sp.MaxLifetime != 4*time.Hour || sp.AppSecretHeader != "X-Secret-Key" || sp.AppSecretEnv != "GOOSE_SERVER__SECRET_KEY" {
			t.Fatalf("defaults not applied: %+v", sp)
		}
		if v.TeamID != "team-a" || v.Version < 1 || v.CreatedAt.IsZero() {
			t.Fatalf("view: %+v", v)
		}
		_, err = e.svc.CreateProject(context.Background(), teamA, ok)
		if !errors.Is(err, sandbox.ErrConflict) {
			t.Fatalf("duplicate name: %v", err)
		}
	})

	t.Run("json uses milliseconds", func(t *testing.T) {
		var req ProjectRequest
		if err := json.Unmarshal([]byte(`{"name":"j","source":{"image":"i"},"idleTimeoutMs":60000}`), &req); err != nil {
			t.Fatal(err)
		}
		if req.IdleTimeout != time.Minute {
			t.Fatalf("idle timeout %s", req.IdleTimeout)
		}
		b, _ := json.Marshal(ProjectSpec{MaxLifetime: time.Hour})
		if !strings.Contains(string(b), `"maxLifetimeMs":3600000`) {
			t.Fatalf("spec json %s", b)
		}
	})
}

func TestSecretsNeverReturned(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	const secret = "s3cr3t-value-that-must-not-leak"
	req := appRequest(t, "sec")
	req.Secrets = map[string]string{"OPENAI_API_KEY": secret}
	req.Env = map[string]string{"GOOSE_PROVIDER": "openai"}
	v := e.create(t, req)
	check := func(what string, x any) {
		t.Helper()
		b, _ := json.Marshal(x)
		if strings.Contains(string(b), secret) {
			t.Fatalf("%s carries the secret: %s", what, b)
		}
	}
	check("create", v)
	if len(v.Spec.SecretNames) != 1 || v.Spec.SecretNames[0] != "OPENAI_API_KEY" {
		t.Fatalf("secret names: %v", v.Spec.SecretNames)
	}
	got, err := e.svc.GetProject(ctx, teamA, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("get", got)
	list, _, err := e.svc.ListProjects(ctx, teamA, store.Page{})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	check("list", list)

	// At rest: neither the record nor any file of the database holds it.
	raw, err := e.store.GetProject(ctx, "", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw.Spec), secret) {
		t.Fatalf("stored spec holds the secret: %s", raw.Spec)
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "paddock.db*"))
	if len(files) == 0 {
		t.Fatal("no database files")
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), secret) {
			t.Fatalf("%s holds the secret in plain text", f)
		}
	}

	// The app gets it, and the app secret, as command env, never as the
	// sandbox's recorded env.
	a := activateReady(t, e.svc, v.ID)
	sbEnv := e.fs.Creates()[0].Env
	if _, ok := sbEnv["OPENAI_API_KEY"]; ok || sbEnv["GOOSE_PROVIDER"] != "openai" {
		t.Fatalf("sandbox env: %v", sbEnv)
	}
	ag := e.fs.agentOf(a.SandboxID)
	appEnv := ag.Started()[0].Env
	if appEnv["OPENAI_API_KEY"] != secret || len(appEnv[DefaultAppSecretEnv]) != 64 {
		t.Fatalf("app env: %v", appEnv)
	}
	// Through Exec as env that is never recorded, not as the command's own.
	execs := e.fs.Execs()
	if len(execs) == 0 {
		t.Fatal("the app was not started through Exec")
	}
	for _, x := range execs {
		check("a command's recorded env", x.Env)
		if x.SecretEnv["OPENAI_API_KEY"] != secret || x.SecretEnv[DefaultAppSecretEnv] == "" {
			t.Fatalf("exec secret env: %v", x.SecretEnv)
		}
	}
	tgt, err := e.svc.AppTarget(ctx, teamA, v.ID)
	if err != nil || tgt.Secret != appEnv[DefaultAppSecretEnv] || tgt.SecretHeader != "X-Secret-Key" {
		t.Fatalf("app target %+v %v", tgt, err)
	}
	check("activation", a)
	evs, _ := e.store.ListEvents(ctx, store.EventFilter{ActivationID: a.ID})
	check("events", evs)
	if strings.Contains(string(raw.Spec), tgt.Secret) {
		t.Fatal("stored spec holds the app secret")
	}

	// Update without secrets keeps them; with a map replaces them.
	req.Secrets = nil
	up, err := e.svc.UpdateProject(ctx, teamA, v.ID, req)
	if err != nil || len(up.Spec.SecretNames) != 1 {
		t.Fatalf("update keeping secrets: %+v %v", up.Spec.SecretNames, err)
	}
	req.Secrets = map[string]string{}
	if up, err = e.svc.UpdateProject(ctx, teamA, v.ID, req); err != nil || len(up.Spec.SecretNames) != 0 {
		t.Fatalf("update clearing secrets: %+v %v", up.Spec.SecretNames, err)
	}
	e.deactivate(t, v.ID)

	// A different key cannot open what this one sealed.
	other, _ := newSealer(make([]byte, 32))
	doc, _ := decodeSpec(raw.Spec)
	if _, err := other.openSecrets(v.ID, doc.Secrets); err == nil {
		t.Fatal("secrets open with the wrong key")
	}
	if _, err := e.svc.seal.openSecrets("prj-other", doc.Secrets); err == nil {
		t.Fatal("secrets open under another project's id")
	}
}

func TestTeamIsolation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "mine"))
	a := activateReady(t, e.svc, v.ID)
	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("%s by another team: %v, want not found", what, err)
		}
	}
	_, err := e.svc.GetProject(ctx, teamB, v.ID)
	notFound("get", err)
	_, err = e.svc.Activate(ctx, teamB, v.ID)
	notFound("activate", err)
	_, err = e.svc.Deactivate(ctx, teamB, v.ID, "")
	notFound("deactivate", err)
	_, err = e.svc.AppTarget(ctx, teamB, v.ID)
	notFound("app target", err)
	_, err = e.svc.GetActivation(ctx, teamB, a.ID)
	notFound("activation", err)
	_, err = e.svc.Watch(ctx, teamB, a.ID, 0)
	notFound("watch", err)
	notFound("heartbeat", e.svc.Heartbeat(ctx, teamB, v.ID))
	_, err = e.svc.UpdateProject(ctx, teamB, v.ID, appRequest(t, "x"))
	notFound("update", err)
	notFound("delete", e.svc.DeleteProject(ctx, teamB, v.ID))
	if l, _, err := e.svc.ListProjects(ctx, teamB, store.Page{}); err != nil || len(l) != 0 {
		t.Fatalf("another team lists %v %v", l, err)
	}
	_, err = e.svc.GetProject(ctx, teamA, "prj-0000000000000000")
	notFound("unknown project", err)
	admin := auth.Principal{HostAdmin: true}
	if _, err := e.svc.GetProject(ctx, admin, v.ID); err != nil {
		t.Fatalf("host admin: %v", err)
	}
	if err := e.svc.DeleteProject(ctx, teamA, v.ID); err != nil {
		t.Fatal(err)
	}
	e.noSandboxesLeft(t)
	if got, _ := e.svc.GetActivation(ctx, teamA, a.ID); State(got.State) != StateStopped || got.EndReason != ReasonDeleted {
		t.Fatalf("activation after delete: %+v", got)
	}
}

func TestConcurrentActivationsShareOneSandbox(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "busy"))
	// A second Service on the same store stands in for another replica.
	other := e.start(t)
	var wg sync.WaitGroup
	ids := make([]string, 20)
	errs := make([]error, 20)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := e.svc
			if i%2 == 1 {
				s = other
			}
			a, err := s.Activate(ctx, teamA, v.ID)
			ids[i], errs[i] = a.ID, err
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatalf("activate %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("activations differ: %v", ids)
		}
	}
	a := waitFor(t, e.svc, ids[0], StateReady)
	if n := e.fs.createCount(); n != 1 {
		t.Fatalf("%d sandboxes created, want 1", n)
	}
	// Activating a ready project returns the same activation.
	again, err := e.svc.Activate(ctx, teamA, v.ID)
	if err != nil || again.ID != a.ID {
		t.Fatalf("re-activate: %v %v", again.ID, err)
	}
	// The app answers at its target with the secret (the replica that
	// drives the activation knows it).
	owner := e.svc
	if owner.runOf(a.ID) == nil {
		owner = other
	}
	tgt, err := owner.AppTarget(ctx, teamA, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", tgt.URL.String()+"/status", nil)
	req.Header.Set(tgt.SecretHeader, tgt.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("app: %v %v", resp, err)
	}
	resp.Body.Close()

	// Watch replays the whole progress and ends at ready.
	ch, err := e.svc.Watch(ctx, teamA, a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for ev := range ch {
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, ","); got != "queued,provisioning,restoring,starting,ready" {
		t.Fatalf("events %s", got)
	}

	// Deactivated through the replica that does not drive it: the request
	// goes through the store to the owner.
	nonOwner := other
	if owner == other {
		nonOwner = e.svc
	}
	got, err := nonOwner.Deactivate(ctx, teamA, v.ID, "")
	if err != nil || State(got.State) != StateStopped || got.EndReason != ReasonExplicit {
		t.Fatalf("deactivate: %+v %v", got, err)
	}
	e.noSandboxesLeft(t)
	if _, err := e.svc.AppTarget(ctx, teamA, v.ID); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("app target of an inactive project: %v", err)
	}
	if _, err := e.svc.Deactivate(ctx, teamA, v.ID, ""); sandbox.CodeOf(err) != "project_not_active" {
		t.Fatalf("second deactivate: %v", err)
	}
}

func TestStateSavedAndRestored(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "state"))
	a1 := activateReady(t, e.svc, v.ID)
	e.fs.agentOf(a1.SandboxID).writeFile("/home/user/.goose/sessions/s1.json", []byte(`{"messages":["hi"]}`))
	e.deactivate(t, v.ID)
	pr, _ := e.store.GetProject(ctx, "", v.ID)
	if pr.StateRef != a1.ID+".tar.gz" {
		t.Fatalf("state ref %q", pr.StateRef)
	}
	first := filepath.Join(e.dir, "state", v.ID, pr.StateRef)
	if fi, err := os.Stat(first); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	a2 := activateReady(t, e.svc, v.ID)
	ag := e.fs.agentOf(a2.SandboxID)
	b, ok := ag.readFile("/home/user/.goose/sessions/s1.json")
	if !ok || string(b) != `{"messages":["hi"]}` {
		t.Fatalf("restored %q %v", b, ok)
	}
	if _, ok := ag.readFile("/home/user/.goose/evil"); ok {
		t.Fatal("a symlink out of the path was kept")
	}
	ag.writeFile("/home/user/.goose/sessions/s2.json", []byte("2"))
	e.deactivate(t, v.ID)
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replaced state not removed: %v", err)
	}
	a3 := activateReady(t, e.svc, v.ID)
	ag = e.fs.agentOf(a3.SandboxID)
	for _, f := range []string{"s1.json", "s2.json"} {
		if _, ok := ag.readFile("/home/user/.goose/sessions/" + f); !ok {
			t.Fatalf("%s not restored", f)
		}
	}
	if err := e.svc.DeleteProject(ctx, teamA, v.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "state", v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state of a deleted project kept: %v", err)
	}
}

func TestIdleTimeoutAndLifetime(t *testing.T) {
	clk := fake.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := newEnv(t, func(c *Config) { c.Now = clk.Now })
	ctx := context.Background()
	req := appRequest(t, "idle")
	req.IdleTimeout, req.MaxLifetime = time.Minute, time.Hour
	v := e.create(t, req)
	a := activateReady(t, e.svc, v.ID)
	e.fs.agentOf(a.SandboxID).writeFile("/home/user/.goose/x", []byte("x"))

	// Activity keeps it alive past one idle timeout.
	for range 3 {
		clk.Advance(40 * time.Second)
		e.svc.Touch(a.ID)
		time.Sleep(100 * time.Millisecond) // several checks
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, _ := e.svc.GetActivation(ctx, teamA, a.ID)
		if State(got.State) != StateReady {
			t.Fatalf("touched activation %s", got.State)
		}
		if got.LastActivityAt.Equal(clk.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("activity not flushed: %s, now %s", got.LastActivityAt, clk.Now())
		}
	}
	if err := e.svc.Heartbeat(ctx, teamA, v.ID); err != nil {
		t.Fatal(err)
	}
	clk.Advance(61 * time.Second)
	got := waitFor(t, e.svc, a.ID, StateStopped)
	if got.EndReason != ReasonIdle {
		t.Fatalf("end reason %q", got.EndReason)
	}
	if pr, _ := e.store.GetProject(ctx, "", v.ID); pr.StateRef == "" || pr.ActiveActivation != "" {
		t.Fatalf("after idle: %+v", pr)
	}
	e.noSandboxesLeft(t)

	// Max lifetime ends an activation however busy it is.
	a = activateReady(t, e.svc, v.ID)
	for range 130 { // half an idle timeout a step: never idle between steps
		clk.Advance(30 * time.Second)
		e.svc.Touch(a.ID)
	}
	if got = waitFor(t, e.svc, a.ID, StateStopped); got.EndReason != ReasonLifetime {
		t.Fatalf("end reason %q", got.EndReason)
	}
}

func TestFailuresCleanUp(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mod  func(*ProjectRequest, *fakeSandboxes)
		code string
		tail string
	}{
		{"install fails", func(r *ProjectRequest, _ *fakeSandboxes) { r.Install = "exit 3 npm exploded" }, "install_failed", "npm exploded"},
		{"never healthy", func(r *ProjectRequest, _ *fakeSandboxes) { r.Start = "hang" }, "app_unhealthy", "hanging"},
		{"exits before healthy", func(r *ProjectRequest, _ *fakeSandboxes) { r.Start = "exit 1 bad config" }, "app_exited", "bad config"},
		{"health path 404", func(r *ProjectRequest, _ *fakeSandboxes) { r.AppSecretHeader = "X-Other" }, "app_unhealthy", "listening"},
		{"no start command", func(r *ProjectRequest, _ *fakeSandboxes) { r.Start = "" }, "no_start_command", ""},
		{"image start command", func(r *ProjectRequest, f *fakeSandboxes) {
			f.imageCmd = []string{"exit", "4", "from", "image"}
			r.Start = ""
		}, "app_exited", "from image"},
		{"create fails", func(r *ProjectRequest, f *fakeSandboxes) {
			f.SetCreateErr(sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "image example/app not found"))
		}, "provision_failed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.HealthTimeout = 500 * time.Millisecond })
			req := appRequest(t, "f")
			tc.mod(&req, e.fs)
			v := e.create(t, req)
			a, err := e.svc.Activate(ctx, teamA, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := e.svc.Watch(ctx, teamA, a.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			var last store.Event
			for ev := range ch {
				last = ev
			}
			if State(last.Type) != StateFailed || !strings.HasPrefix(last.Message, tc.code+":") || !strings.Contains(last.Data["logTail"], tc.tail) {
				t.Fatalf("last event %+v, want failed %s with %q", last, tc.code, tc.tail)
			}
			got := waitFor(t, e.svc, a.ID, StateFailed)
			if got.LogTail != last.Data["logTail"] || got.EndedAt.IsZero() {
				t.Fatalf("activation %+v", got)
			}
			e.noSandboxesLeft(t)
			if n := e.fs.createCount(); n != 1 {
				t.Fatalf("%d creates", n)
			}
			if pr, _ := e.store.GetProject(ctx, "", v.ID); pr.ActiveActivation != "" {
				t.Fatal("failed activation still holds the project")
			}
		})
	}
}

// TestHealthCheckStaysOnTheApp: the health check runs on the host, with the
// app secret, so an app answering with a redirect (to a loopback service,
// metadata, the LAN) is "not healthy yet", never followed; and the probe's
// client dials nothing but the app's address.
func TestHealthCheckStaysOnTheApp(t *testing.T) {
	var hits atomic.Int32
	var secrets sync.Map
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		secrets.Store(r.Header.Get(DefaultAppSecretHeader), true)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(canary.Close)

	e := newEnv(t, func(c *Config) { c.HealthTimeout = 500 * time.Millisecond })
	req := appRequest(t, "redirector")
	req.Start = fmt.Sprintf("redirect %d %s/status", req.AppPort, canary.URL)
	v := e.create(t, req)
	a, err := e.svc.Activate(context.Background(), teamA, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, e.svc, a.ID, StateFailed)
	if !strings.HasPrefix(got.Error, "app_unhealthy:") || !strings.Contains(got.Error, "status 302 (redirects are not followed)") {
		t.Errorf("activation failed with %q, want app_unhealthy after a 302", got.Error)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
	secrets.Range(func(k, _ any) bool {
		t.Errorf("the redirect target got the app secret %q", k)
		return true
	})

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app.Close()
	client, err := probeClient(app.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := probe(context.Background(), client, canary.URL+"/status", DefaultAppSecretHeader, "s3cret"); err == nil {
		t.Error("the probe's client reached an address other than the app's")
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the other address got %d requests", n)
	}
}

// TestProjectHealthTimeout: a project's own health timeout bounds the
// health check instead of the host's default, and the spec shows it.
func TestProjectHealthTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HealthTimeout = time.Hour })
	ctx := context.Background()
	req := appRequest(t, "slow")
	req.Start, req.HealthTimeout = "hang", 300*time.Millisecond
	v := e.create(t, req)
	if v.Spec.HealthTimeout != 300*time.Millisecond {
		t.Fatalf("spec health timeout %s", v.Spec.HealthTimeout)
	}
	a, err := e.svc.Activate(ctx, teamA, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, e.svc, a.ID, StateFailed)
	if !strings.HasPrefix(got.Error, "app_unhealthy:") || !strings.Contains(got.Error, "within 300ms") {
		t.Fatalf("activation failed with %q, want app_unhealthy within the project's 300ms", got.Error)
	}
	e.noSandboxesLeft(t)
}

func TestAppCrashAndStubbornStop(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "crashy"))
	a := activateReady(t, e.svc, v.ID)
	ag := e.fs.agentOf(a.SandboxID)
	ag.writeFile("/home/user/.goose/kept", []byte("k"))
	ag.crash("panic: nil map\n")
	got := waitFor(t, e.svc, a.ID, StateFailed)
	if !strings.HasPrefix(got.Error, "app_crashed") || !strings.Contains(got.LogTail, "panic: nil map") {
		t.Fatalf("crashed activation %+v", got)
	}
	if pr, _ := e.store.GetProject(ctx, "", v.ID); pr.StateRef != a.ID+".tar.gz" {
		t.Fatalf("crash did not save state: %q", pr.StateRef)
	}
	e.noSandboxesLeft(t)

	// A sandbox stopped under the app (its timeout, an admin) ends the
	// activation; there is nothing left to save.
	a = activateReady(t, e.svc, v.ID)
	if _, err := e.fs.Stop(ctx, a.SandboxID); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, e.svc, a.ID, StateStopped); got.EndReason != ReasonSandboxGone {
		t.Fatalf("sandbox stopped: %+v", got)
	}
	e.noSandboxesLeft(t)

	// An app that ignores SIGTERM is killed after StopGrace.
	req := appRequest(t, "stubborn")
	req.Start = strings.Replace(req.Start, "serve", "stubborn", 1)
	v2 := e.create(t, req)
	a2 := activateReady(t, e.svc, v2.ID)
	ag = e.fs.agentOf(a2.SandboxID)
	e.deactivate(t, v2.ID)
	if c, _, _, _ := ag.Command("cmd-1"); c.Signal != "SIGKILL" {
		t.Fatalf("stubborn app ended by %q", c.Signal)
	}
}

func TestRestartReadopts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "survivor"))
	a := activateReady(t, e.svc, v.ID)

	// An activation caught mid-way by a crash: its record says starting.
	v2 := e.create(t, appRequest(t, "halfway"))
	half := store.Activation{ID: "act-00000000000000aa", ProjectID: v2.ID, TeamID: "team-a", State: string(StateStarting), SandboxID: "sb-gone"}
	if err := e.store.CreateActivation(ctx, half); err != nil {
		t.Fatal(err)
	}
	pr, _ := e.store.GetProject(ctx, "", v2.ID)
	pr.ActiveActivation = half.ID
	if _, err := e.store.UpdateProject(ctx, pr); err != nil {
		t.Fatal(err)
	}

	e.svc.Close()
	if ids := e.fs.live(); len(ids) != 1 {
		t.Fatalf("Close stopped the ready app: %v", ids)
	}
	s2 := e.start(t)
	tgt, err := s2.AppTarget(ctx, teamA, v.ID)
	if err != nil || tgt.ActivationID != a.ID {
		t.Fatalf("re-adopted target %+v %v", tgt, err)
	}
	if got, _ := s2.GetActivation(ctx, teamA, half.ID); State(got.State) != StateFailed || !strings.Contains(got.Error, "interrupted by restart") {
		t.Fatalf("half-done activation %+v", got)
	}
	// The re-adopted app is still watched: a crash is noticed.
	e.fs.agentOf(a.SandboxID).crash("gone\n")
	if got := waitFor(t, s2, a.ID, StateFailed); !strings.Contains(got.LogTail, "gone") {
		t.Fatalf("crash after re-adoption %+v", got)
	}
	e.noSandboxesLeft(t)
}

func TestCloseFailsActivationInProgress(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HealthTimeout = time.Minute })
	ctx := context.Background()
	req := appRequest(t, "slow")
	req.Start = "hang"
	v := e.create(t, req)
	a, err := e.svc.Activate(ctx, teamA, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.svc, a.ID, StateStarting)
	e.svc.Close()
	got, _ := e.store.GetActivation(ctx, a.ID)
	if State(got.State) != StateFailed {
		t.Fatalf("after close: %+v", got)
	}
	e.noSandboxesLeft(t)
	if _, err := e.svc.Activate(ctx, teamA, v.ID); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("activate after close: %v", err)
	}
}

func TestGitCredentialsSealed(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	const token = "ghp_never-in-the-clear"
	req := appRequest(t, "git")
	req.Source = Source{Git: &sandbox.Source{URL: "https://example.com/r.git", Token: token, Dir: "/home/user/src"}}
	v := e.create(t, req)
	if v.Spec.Source.Git == nil || v.Spec.Source.Git.Token != "" || v.Spec.Source.Git.Type != sandbox.SourceGit {
		t.Fatalf("view source %+v", v.Spec.Source.Git)
	}
	raw, _ := e.store.GetProject(ctx, "", v.ID)
	if strings.Contains(string(raw.Spec), token) {
		t.Fatal("stored spec holds the git token")
	}
	// An update naming the same repository without credentials keeps them.
	req.Source.Git.Token = ""
	if _, err := e.svc.UpdateProject(ctx, teamA, v.ID, req); err != nil {
		t.Fatal(err)
	}
	a := activateReady(t, e.svc, v.ID)
	src := e.fs.Creates()[0].Source
	if src == nil || src.Token != token || src.URL != "https://example.com/r.git" {
		t.Fatalf("create got source %+v", src)
	}
	ag := e.fs.agentOf(a.SandboxID)
	if c, _, _, _ := ag.Command("cmd-1"); c.Cwd != "/home/user/src" {
		t.Fatalf("app runs in %q, want the checkout", c.Cwd)
	}
	e.deactivate(t, v.ID)
}

func TestRestartFinishesDeactivation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	v := e.create(t, appRequest(t, "midway"))
	a := activateReady(t, e.svc, v.ID)
	e.fs.agentOf(a.SandboxID).writeFile("/home/user/.goose/s.json", []byte("{}"))
	e.svc.Close()
	// paddock died while deactivating it for idleness.
	if _, err := e.store.UpdateActivation(ctx, func() store.Activation {
		got, _ := e.store.GetActivation(ctx, a.ID)
		got.State, got.EndReason = string(StateDeactivating), ReasonIdle
		return got
	}()); err != nil {
		t.Fatal(err)
	}
	s2 := e.start(t)
	got := waitFor(t, s2, a.ID, StateStopped)
	if got.EndReason != ReasonIdle {
		t.Fatalf("finished deactivation %+v", got)
	}
	if pr, _ := e.store.GetProject(ctx, "", v.ID); pr.StateRef != a.ID+".tar.gz" || pr.ActiveActivation != "" {
		t.Fatalf("project after the finished deactivation %+v", pr)
	}
	e.noSandboxesLeft(t)
}

// A budget's hard cap: DeactivateTeam ends the team's activations with
// their state saved, and Budget refuses new ones with its error.
func TestBudgetCapDeactivatesAndRefuses(t *testing.T) {
	var mu sync.Mutex
	capped := map[string]bool{}
	errCap := sandbox.Errorf(sandbox.ErrBudgetExceeded, "budget_exceeded", "over budget")
	e := newEnv(t, func(c *Config) {
		c.Budget = func(_ context.Context, team string) error {
			mu.Lock()
			defer mu.Unlock()
			if capped[team] {
				return errCap
			}
			return nil
		}
	})
	ctx := context.Background()
	v := e.create(t, appRequest(t, "capped"))
	a := activateReady(t, e.svc, v.ID)
	e.fs.agentOf(a.SandboxID).writeFile("/home/user/.goose/s.json", []byte("kept"))
	mu.Lock()
	capped["team-a"] = true
	mu.Unlock()
	if err := e.svc.DeactivateTeam(ctx, "team-a", ReasonBudget); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.GetActivation(ctx, teamA, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != string(StateStopped) || got.EndReason != ReasonBudget {
		t.Fatalf("activation %s, %q; want stopped for the budget", got.State, got.EndReason)
	}
	pr, _ := e.store.GetProject(ctx, "", v.ID)
	if pr.StateRef == "" {
		t.Fatal("state not saved")
	}
	e.noSandboxesLeft(t)
	if _, err := e.svc.Activate(ctx, teamA, v.ID); !errors.Is(err, sandbox.ErrBudgetExceeded) {
		t.Fatalf("activate over budget = %v", err)
	}
	mu.Lock()
	capped["team-a"] = false
	mu.Unlock()
	a2 := activateReady(t, e.svc, v.ID)
	if b, ok := e.fs.agentOf(a2.SandboxID).readFile("/home/user/.goose/s.json"); !ok || string(b) != "kept" {
		t.Fatalf("state after the cap lifted: %q %v", b, ok)
	}
}
