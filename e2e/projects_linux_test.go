package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

var projTeam = auth.Principal{TeamID: "team-e2e", Name: "e2e", Role: store.RoleAdmin}

// otherTeam is a second team, whose users must not reach projTeam's apps.
const otherTeam = "team-other"

// projStack is a stack with networking whose control plane runs the
// projects of projTeam.
type projStack struct {
	*stack
	svc   *control.Service
	store store.Store
	opts  stackOptions
	// tokens holds an admin token of projTeam and of otherTeam.
	tokens map[string]string
	// front is the current daemon's handler: a restart replaces it.
	front atomic.Pointer[http.Handler]
}

func startProjects(t *testing.T, mod func(*control.Config)) *projStack {
	t.Helper()
	dir := newDataDir(t)
	ps := &projStack{opts: stackOptions{network: testPool, control: func(c *control.Config) {
		c.IdleCheckInterval, c.StopGrace = 200*time.Millisecond, 3*time.Second
		if mod != nil {
			mod(c)
		}
	}}, tokens: map[string]string{}}
	ps.start(t, dir)
	ctx := t.Context()
	for _, team := range []string{projTeam.TeamID, otherTeam} {
		if err := ps.store.CreateTeam(ctx, store.Team{ID: team, Name: team}); err != nil {
			t.Fatal(err)
		}
		tok, _, err := ps.auth.CreateToken(ctx, team, "", "e2e-admin", store.RoleAdmin, 0)
		if err != nil {
			t.Fatal(err)
		}
		ps.tokens[team] = tok
	}
	return ps
}

// start starts the daemon on dir, as a paddock start does.
func (ps *projStack) start(t *testing.T, dir string) {
	t.Helper()
	ps.stack = startStack(t, dir, ps.opts)
	ps.svc, ps.store = ps.d.Projects(), ps.d.Store()
	h := ps.d.Handler()
	ps.front.Store(&h)
}

// restart stops the daemon as a paddock exit does (sandboxes keep running)
// and starts another on the same data dir, which re-adopts them.
func (ps *projStack) restart(t *testing.T) {
	t.Helper()
	ps.shutdown(t)
	ps.start(t, ps.dataDir)
}

var (
	standinOnce sync.Once
	standinTar  string
	standinErr  error
)

// standinArchive builds the goose stand-in's image once per test binary and
// returns its docker archive.
func standinArchive(t *testing.T) string {
	t.Helper()
	standinOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), "paddock-e2e-standin")
		var bin string
		if bin, standinErr = standinimage.Build(context.Background(), "", dir); standinErr != nil {
			return
		}
		standinTar = filepath.Join(dir, "goose-standin.tar")
		standinErr = standinimage.WriteImage(bin, standinTar, "")
	})
	if standinErr != nil {
		t.Fatalf("build the goose stand-in image: %v", standinErr)
	}
	return standinTar
}

// importStandin imports the goose stand-in's image into the stack's image
// store.
func (ps *projStack) importStandin(t *testing.T) {
	t.Helper()
	if _, err := ps.images.Import(ctxFor(t, time.Minute), image.Published, standinArchive(t)); err != nil {
		t.Fatalf("import the stand-in: %v", err)
	}
}

// activate activates a project and follows its progress to the end of
// the stream (ready or failed).
func (ps *projStack) activate(t *testing.T, projectID string) (store.Activation, []store.Event) {
	t.Helper()
	ctx := ctxFor(t, 3*time.Minute)
	a, err := ps.svc.Activate(ctx, projTeam, projectID)
	if err != nil {
		t.Fatalf("activate %s: %v", projectID, err)
	}
	ch, err := ps.svc.Watch(ctx, projTeam, a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var evs []store.Event
	for ev := range ch {
		evs = append(evs, ev)
	}
	if a, err = ps.svc.GetActivation(ctx, projTeam, a.ID); err != nil {
		t.Fatal(err)
	}
	return a, evs
}

func (ps *projStack) mustReady(t *testing.T, projectID string) store.Activation {
	t.Helper()
	a, evs := ps.activate(t, projectID)
	if a.State != string(control.StateReady) {
		t.Fatalf("activation %s: %s %s\n%s", a.ID, a.State, a.Error, a.LogTail)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != string(control.StateReady) {
		t.Fatalf("events %+v", evs)
	}
	return a
}

// waitEnded waits for an activation to stop or fail on its own.
func (ps *projStack) waitEnded(t *testing.T, id string, d time.Duration) store.Activation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		a, err := ps.svc.GetActivation(context.Background(), projTeam, id)
		if err != nil {
			t.Fatal(err)
		}
		if control.State(a.State).Terminal() {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("activation %s still %s after %s", id, a.State, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noSandboxes checks that the node has no sandbox left.
func (ps *projStack) noSandboxes(t *testing.T) {
	t.Helper()
	items, _, err := ps.mgr.List(context.Background(), sandbox.ListOptions{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Fatalf("%d sandboxes left, first %s (%s)", len(items), items[0].ID, items[0].State)
	}
}

// appProxy returns the base URL of projectID's app through the daemon's
// app proxy (path form), in front of which a test server authenticates
// the caller as an admin of projTeam, or of otherTeam with X-Test-Team:
// other.
func (ps *projStack) appProxy(t *testing.T, projectID string) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		team := projTeam.TeamID
		if r.Header.Get("X-Test-Team") == "other" {
			team = otherTeam
		}
		r.Header.Set("Authorization", "Bearer "+ps.tokens[team])
		(*ps.front.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL + app.PathPrefix(projectID))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// goose calls the stand-in's API at the app target, straight to the app.
func goose(t *testing.T, tgt control.AppTarget, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctxFor(t, time.Minute), method, tgt.URL.String()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tgt.Secret != "" {
		req.Header.Set(tgt.SecretHeader, tgt.Secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// gooseReply sends a message through POST /reply and returns the
// assistant's text from the SSE stream.
func gooseReply(t *testing.T, tgt control.AppTarget, sessionID, text string) string {
	t.Helper()
	return gooseReplyWith(t, tgt, sessionID, text, "")
}

// gooseReplyWith is gooseReply with a port token for the port proxy ("" for
// none).
func gooseReplyWith(t *testing.T, tgt control.AppTarget, sessionID, text, portToken string) string {
	t.Helper()
	msg := map[string]any{"session_id": sessionID, "user_message": map[string]any{
		"role": "user", "created": time.Now().Unix(), "content": []any{map[string]any{"type": "text", "text": text}},
		"metadata": map[string]any{"userVisible": true, "agentVisible": true}}}
	b, _ := json.Marshal(msg)
	req, _ := http.NewRequestWithContext(ctxFor(t, time.Minute), "POST", tgt.URL.String()+"/reply", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(tgt.SecretHeader, tgt.Secret)
	if portToken != "" {
		req.Header.Set(proxy.TokenHeader, portToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("/reply: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var out strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type    string `json:"type"`
			Error   string `json:"error"`
			Message struct {
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			} `json:"message"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		switch ev.Type {
		case "Message":
			for _, c := range ev.Message.Content {
				out.WriteString(c.Text)
			}
		case "Error":
			t.Fatalf("reply error: %s", ev.Error)
		case "Finish":
			return out.String()
		}
	}
	t.Fatalf("reply stream ended without Finish (%v); got %q", sc.Err(), out.String())
	return ""
}

const gooseRoot = "/home/user/goose"

// e2eLifetime fits the harness's node MaxTimeout (1h) with the margin the
// control plane adds to a sandbox's timeout.
const e2eLifetime = 30 * time.Minute

func standinProject(name string) control.ProjectRequest {
	return control.ProjectRequest{Name: name, Source: control.Source{Image: standinimage.DefaultRef},
		// The image's own GOOSE_PATH_ROOT is root's; the app runs as the
		// sandbox's user, so the project keeps its sessions in its home.
		Env:             map[string]string{"GOOSE_PATH_ROOT": gooseRoot},
		PersistentPaths: []string{gooseRoot}, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128},
		MaxLifetime: e2eLifetime}
}

func TestProjectsGooseStandin(t *testing.T) {
	ps := startProjects(t, nil)
	ps.importStandin(t)
	ctx := ctxFor(t, 5*time.Minute)
	v, err := ps.svc.CreateProject(ctx, projTeam, standinProject("goose"))
	if err != nil {
		t.Fatal(err)
	}

	a1, evs := ps.activate(t, v.ID)
	if a1.State != string(control.StateReady) {
		t.Fatalf("activation: %s %s\n%s", a1.State, a1.Error, a1.LogTail)
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, ","); got != "queued,provisioning,restoring,starting,ready" {
		t.Errorf("progress %s", got)
	}
	direct, err := ps.svc.AppTarget(ctx, projTeam, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := goose(t, control.AppTarget{URL: direct.URL}, "GET", "/sessions", nil); code != 401 {
		t.Errorf("straight to the app without its secret: %d, want 401", code)
	}
	// Through the app proxy, with a secret of the client's own: the proxy
	// drops it and sets the project's, so the app accepts the request.
	tgt := control.AppTarget{URL: ps.appProxy(t, v.ID), SecretHeader: "X-Secret-Key", Secret: "client-guess"}
	code, body := goose(t, tgt, "POST", "/agent/start", map[string]any{"working_dir": "/home/user"})
	if code != 200 {
		t.Fatalf("/agent/start: %d %s", code, body)
	}
	var sess struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &sess); err != nil || sess.ID == "" {
		t.Fatalf("session %s: %v", body, err)
	}
	if code, body := goose(t, tgt, "POST", "/agent/resume", map[string]any{"session_id": sess.ID, "load_model_and_extensions": true}); code != 200 {
		t.Fatalf("/agent/resume: %d %s", code, body)
	}
	if reply := gooseReply(t, tgt, sess.ID, "hello paddock"); !strings.Contains(reply, "hello paddock") {
		t.Fatalf("reply %q does not echo the message", reply)
	}
	// A POST answered by a stream: the app replies as soon as it has the
	// body, and the proxy's HTTP server drains and closes the inbound body
	// as the reply's headers go out while the transport may still check it
	// for excess. Each stream must still arrive whole (golang/go#40747 cut
	// about one in six here), through the app proxy and the port proxy.
	portTgt := control.AppTarget{URL: mustURL(t, ps.http.URL+proxy.PathPrefix(a1.SandboxID, 3001)),
		SecretHeader: "X-Secret-Key", Secret: direct.Secret}
	for i := range 20 {
		for name, via := range map[string]control.AppTarget{"app proxy": tgt, "port proxy": portTgt} {
			msg := fmt.Sprintf("turn %d via the %s", i, name)
			if reply := gooseReplyWith(t, via, sess.ID, msg, ps.signer.Sign(a1.SandboxID, 3001, time.Minute)); !strings.Contains(reply, msg) {
				t.Fatalf("reply %q does not echo %q", reply, msg)
			}
		}
	}
	other, _ := http.NewRequestWithContext(ctx, "GET", tgt.URL.String()+"/sessions", nil)
	other.Header.Set("X-Test-Team", "other")
	if resp, err := http.DefaultClient.Do(other); err != nil || resp.StatusCode != 404 {
		t.Fatalf("another team's user through the proxy: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	got, err := ps.svc.Deactivate(ctx, projTeam, v.ID, "")
	if err != nil || got.State != string(control.StateStopped) {
		t.Fatalf("deactivate: %+v %v", got, err)
	}
	ps.noSandboxes(t)
	pr, _ := ps.store.GetProject(ctx, "", v.ID)
	if _, err := os.Stat(filepath.Join(ps.dataDir, "state", v.ID, pr.StateRef)); pr.StateRef == "" || err != nil {
		t.Fatalf("saved state %q: %v", pr.StateRef, err)
	}

	// The next activation finds the session and its messages.
	ps.mustReady(t, v.ID)
	code, body = goose(t, tgt, "GET", "/sessions/"+sess.ID, nil)
	if code != 200 || !strings.Contains(string(body), "hello paddock") {
		t.Fatalf("session after reactivation: %d %s", code, body)
	}

	// A restart re-adopts the running sandbox and its app.
	ps.restart(t)
	again, err := ps.svc.AppTarget(ctx, projTeam, v.ID)
	if err != nil || again.Secret != direct.Secret {
		t.Fatalf("after restart: %+v %v", again, err)
	}
	if code, _ := goose(t, tgt, "GET", "/sessions/"+sess.ID, nil); code != 200 {
		t.Fatalf("app after restart: %d", code)
	}
	if _, err := ps.svc.Deactivate(ctx, projTeam, v.ID, ""); err != nil {
		t.Fatal(err)
	}

	// A short idle timeout deactivates on its own and saves state.
	req := standinProject("goose")
	req.IdleTimeout = 2 * time.Second
	if _, err := ps.svc.UpdateProject(ctx, projTeam, v.ID, req); err != nil {
		t.Fatal(err)
	}
	a3 := ps.mustReady(t, v.ID)
	if code, _ := goose(t, tgt, "POST", "/agent/start", map[string]any{"working_dir": "/home/user"}); code != 200 {
		t.Fatalf("second session: %d", code)
	}
	ended := ps.waitEnded(t, a3.ID, time.Minute)
	if ended.State != string(control.StateStopped) || ended.EndReason != control.ReasonIdle {
		t.Fatalf("idle activation: %+v", ended)
	}
	pr2, _ := ps.store.GetProject(ctx, "", v.ID)
	if pr2.StateRef != a3.ID+".tar.gz" {
		t.Fatalf("idle deactivation saved %q", pr2.StateRef)
	}
	if _, err := os.Stat(filepath.Join(ps.dataDir, "state", v.ID, pr.StateRef)); !os.IsNotExist(err) {
		t.Errorf("replaced state file kept: %v", err)
	}
	ps.noSandboxes(t)
	if err := ps.svc.DeleteProject(ctx, projTeam, v.ID); err != nil {
		t.Fatal(err)
	}
}

func TestProjectsFailures(t *testing.T) {
	ps := startProjects(t, func(c *control.Config) { c.HealthTimeout = 3 * time.Second })
	ctx := ctxFor(t, 5*time.Minute)
	py := "exec python3 -m http.server 3001 --bind 0.0.0.0"
	for _, tc := range []struct {
		name string
		req  control.ProjectRequest
		code string
		tail string
	}{
		{"never healthy", control.ProjectRequest{Source: control.Source{Image: "host"}, Start: "echo waiting; exec sleep 600"},
			"app_unhealthy", "waiting"},
		{"exits at start", control.ProjectRequest{Source: control.Source{Image: "host"}, Start: "echo no config >&2; exit 2"},
			"app_exited", "no config"},
		{"install fails", control.ProjectRequest{Source: control.Source{Image: "host"}, Install: "echo broken dependency; exit 7", Start: py},
			"install_failed", "broken dependency"},
		{"unknown image", control.ProjectRequest{Source: control.Source{Image: "example.invalid/nope:1"}, Start: py},
			"provision_failed", ""},
		{"unreachable git", control.ProjectRequest{Source: control.Source{Git: &sandbox.Source{URL: "http://127.0.0.1:9/none.git"}}, Start: py},
			"provision_failed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Name = strings.ReplaceAll(tc.name, " ", "-")
			tc.req.HealthPath, tc.req.MaxLifetime = "/", e2eLifetime
			v, err := ps.svc.CreateProject(ctx, projTeam, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			a, evs := ps.activate(t, v.ID)
			last := evs[len(evs)-1]
			if a.State != string(control.StateFailed) || !strings.HasPrefix(a.Error, tc.code) || !strings.Contains(a.LogTail, tc.tail) {
				t.Fatalf("activation %s %q, tail %q; want failed %s with %q", a.State, a.Error, a.LogTail, tc.code, tc.tail)
			}
			if last.Type != string(control.StateFailed) || last.Data["logTail"] != a.LogTail {
				t.Errorf("last event %+v", last)
			}
			t.Logf("%s: %s", tc.name, a.Error)
			ps.noSandboxes(t)
		})
	}

	t.Run("crash after ready", func(t *testing.T) {
		req := control.ProjectRequest{Name: "crashy", Source: control.Source{Image: "host"}, HealthPath: "/", MaxLifetime: e2eLifetime,
			PersistentPaths: []string{"/home/user/data"},
			Start:           "echo kept > /home/user/data/f; python3 -m http.server 3001 --bind 0.0.0.0 & sleep 4; echo segfault-ish; kill $!; exit 139"}
		v, err := ps.svc.CreateProject(ctx, projTeam, req)
		if err != nil {
			t.Fatal(err)
		}
		a := ps.mustReady(t, v.ID)
		ended := ps.waitEnded(t, a.ID, time.Minute)
		if ended.State != string(control.StateFailed) || !strings.HasPrefix(ended.Error, "app_crashed") || !strings.Contains(ended.LogTail, "segfault-ish") {
			t.Fatalf("crash: %+v", ended)
		}
		if pr, _ := ps.store.GetProject(ctx, "", v.ID); pr.StateRef == "" {
			t.Error("the crash did not save state")
		}
		ps.noSandboxes(t)
	})
}

func TestProjectsSandboxStopped(t *testing.T) {
	ps := startProjects(t, nil)
	ctx := ctxFor(t, 3*time.Minute)
	v, err := ps.svc.CreateProject(ctx, projTeam, control.ProjectRequest{Name: "stopped-under", Source: control.Source{Image: "host"},
		HealthPath: "/", MaxLifetime: e2eLifetime, Start: "exec python3 -m http.server 3001 --bind 0.0.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	a := ps.mustReady(t, v.ID)
	// The sandbox stops under the app, as its own timeout would stop it.
	if _, err := ps.mgr.Stop(ctx, a.SandboxID); err != nil {
		t.Fatal(err)
	}
	ended := ps.waitEnded(t, a.ID, time.Minute)
	if ended.State != string(control.StateStopped) || ended.EndReason != control.ReasonSandboxGone {
		t.Fatalf("activation after its sandbox stopped: %+v", ended)
	}
	ps.noSandboxes(t)
	// The project is free to activate again.
	ps.mustReady(t, v.ID)
	if _, err := ps.svc.Deactivate(ctx, projTeam, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	ps.noSandboxes(t)
}

func TestProjectsConcurrentActivations(t *testing.T) {
	ps := startProjects(t, nil)
	ctx := ctxFor(t, 8*time.Minute)
	py := control.ProjectRequest{Source: control.Source{Image: "host"}, HealthPath: "/", MaxLifetime: e2eLifetime,
		Start: "exec python3 -m http.server 3001 --bind 0.0.0.0", Resources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 128, PIDs: 64}}

	// 20 concurrent activations of one project share one sandbox.
	one := py
	one.Name = "shared"
	v, err := ps.svc.CreateProject(ctx, projTeam, one)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ps.svc.Activate(ctx, projTeam, v.ID)
			if err != nil {
				t.Errorf("activate: %v", err)
			}
			ids[i] = a.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("activations differ: %v", ids)
		}
	}
	ps.mustReady(t, v.ID)
	if items, _, _ := ps.mgr.List(ctx, sandbox.ListOptions{Limit: 500}); len(items) != 1 {
		t.Fatalf("%d sandboxes for one project", len(items))
	}
	if _, err := ps.svc.Deactivate(ctx, projTeam, v.ID, ""); err != nil {
		t.Fatal(err)
	}

	// 20 projects activated at once all become ready.
	projects := make([]string, 20)
	for i := range projects {
		req := py
		req.Name = fmt.Sprintf("many-%02d", i)
		pv, err := ps.svc.CreateProject(ctx, projTeam, req)
		if err != nil {
			t.Fatal(err)
		}
		projects[i] = pv.ID
	}
	start := time.Now()
	acts := make([]store.Activation, len(projects))
	for i, id := range projects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acts[i], _ = ps.activate(t, id)
		}()
	}
	wg.Wait()
	for i, a := range acts {
		if a.State != string(control.StateReady) {
			t.Errorf("project %d: %s %s", i, a.State, a.Error)
		}
	}
	t.Logf("20 projects ready in %s", time.Since(start).Round(time.Millisecond))
	for _, id := range projects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ps.svc.Deactivate(ctx, projTeam, id, ""); err != nil {
				t.Errorf("deactivate %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	ps.noSandboxes(t)
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
