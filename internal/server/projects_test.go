package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// fakeProjects is a hand-written Projects: projects in a map, owned by
// teams like the control plane's, and activations whose progress the test
// drives with step, so a test sees a stream before it ends.
type fakeProjects struct {
	mu       sync.Mutex // guards the fields below
	seq      int64      // ids
	evSeq    int64      // event sequence numbers
	projects map[string]control.ProjectView
	acts     map[string]store.Activation
	events   map[string][]store.Event // by activation
	changed  chan struct{}            // closed and replaced at every new event
	reasons  []string
	beats    int
}

func newFakeProjects() *fakeProjects {
	return &fakeProjects{
		projects: map[string]control.ProjectView{},
		acts:     map[string]store.Activation{},
		events:   map[string][]store.Event{},
		changed:  make(chan struct{}),
	}
}

var _ Projects = (*fakeProjects)(nil)

func notFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "project_not_found", "project %s not found", id)
}

func (f *fakeProjects) project(p auth.Principal, id string) (control.ProjectView, error) {
	v, ok := f.projects[id]
	if !ok || !p.CanAccessTeam(v.TeamID) {
		return control.ProjectView{}, notFound(id)
	}
	if v.Active != nil {
		a := f.acts[v.Active.ID]
		v.Active = &a
	}
	return v, nil
}

func (f *fakeProjects) CreateProject(_ context.Context, p auth.Principal, req control.ProjectRequest) (control.ProjectView, error) {
	if req.Name == "" {
		return control.ProjectView{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_project", "name is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("prj-%d", f.seq)
	spec := control.ProjectSpec{Source: req.Source, Start: req.Start, AppPort: req.AppPort, Env: req.Env,
		IdleTimeout: req.IdleTimeout, PersistentPaths: req.PersistentPaths, AppSecretHeader: "X-Secret-Key", Labels: req.Labels}
	for k := range req.Secrets {
		spec.SecretNames = append(spec.SecretNames, k)
	}
	v := control.ProjectView{ID: id, TeamID: p.TeamID, Name: req.Name, Spec: spec, CreatedAt: time.Unix(1, 0), Version: 1}
	f.projects[id] = v
	return v, nil
}

func (f *fakeProjects) GetProject(_ context.Context, p auth.Principal, id string) (control.ProjectView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.project(p, id)
}

func (f *fakeProjects) ListProjects(_ context.Context, p auth.Principal, _ store.Page) ([]control.ProjectView, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []control.ProjectView
	for _, v := range f.projects {
		if p.CanAccessTeam(v.TeamID) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b control.ProjectView) int { return strings.Compare(a.ID, b.ID) })
	return out, "", nil
}

func (f *fakeProjects) UpdateProject(_ context.Context, p auth.Principal, id string, req control.ProjectRequest) (control.ProjectView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.project(p, id)
	if err != nil {
		return v, err
	}
	v.Name, v.Spec.Start, v.Version = req.Name, req.Start, v.Version+1
	f.projects[id] = v
	return v, nil
}

func (f *fakeProjects) DeleteProject(_ context.Context, p auth.Principal, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.project(p, id); err != nil {
		return err
	}
	delete(f.projects, id)
	return nil
}

// Activate starts an activation in "queued" or joins the live one.
func (f *fakeProjects) Activate(_ context.Context, p auth.Principal, id string) (store.Activation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.project(p, id)
	if err != nil {
		return store.Activation{}, err
	}
	if v.Active != nil {
		return *v.Active, nil
	}
	f.seq++
	a := store.Activation{ID: fmt.Sprintf("act-%d", f.seq), ProjectID: id, TeamID: v.TeamID, State: api.ActivationQueued, CreatedAt: time.Unix(2, 0)}
	f.acts[a.ID] = a
	v.Active = &a
	f.projects[id] = v
	f.appendLocked(a.ID, api.ActivationQueued, "")
	return a, nil
}

// step moves an activation to state, recording the event.
func (f *fakeProjects) step(actID, state, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appendLocked(actID, state, msg)
}

func (f *fakeProjects) appendLocked(actID, state, msg string) {
	a := f.acts[actID]
	a.State = state
	if state == api.ActivationFailed {
		a.Error, a.LogTail = msg, "the log's tail"
	}
	f.acts[actID] = a
	f.evSeq++
	e := store.Event{Seq: f.evSeq, Time: time.Unix(f.evSeq, 0).UTC(), ProjectID: a.ProjectID, ActivationID: actID, Type: state, Message: msg}
	if state == api.ActivationFailed {
		e.Data = map[string]string{"logTail": "the log's tail"}
	}
	f.events[actID] = append(f.events[actID], e)
	close(f.changed)
	f.changed = make(chan struct{})
}

// Watch replays and follows like the control plane: closed after ready or
// failed, or when ctx ends. Its goroutine is owned by ctx.
func (f *fakeProjects) Watch(ctx context.Context, p auth.Principal, actID string, after int64) (<-chan store.Event, error) {
	f.mu.Lock()
	a, ok := f.acts[actID]
	f.mu.Unlock()
	if !ok || !p.CanAccessTeam(a.TeamID) {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "activation_not_found", "activation %s not found", actID)
	}
	out := make(chan store.Event)
	go func() {
		defer close(out)
		for {
			f.mu.Lock()
			var pending []store.Event
			for _, e := range f.events[actID] {
				if e.Seq > after {
					pending = append(pending, e)
				}
			}
			changed := f.changed
			f.mu.Unlock()
			for _, e := range pending {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
				after = e.Seq
				if e.Type == api.ActivationReady || e.Type == api.ActivationFailed {
					return
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (f *fakeProjects) Deactivate(_ context.Context, p auth.Principal, id, reason string) (store.Activation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.project(p, id)
	if err != nil {
		return store.Activation{}, err
	}
	if v.Active == nil {
		return store.Activation{}, sandbox.Errorf(sandbox.ErrConflict, "project_not_active", "not active")
	}
	f.reasons = append(f.reasons, reason)
	a := f.acts[v.Active.ID]
	a.State, a.EndReason = api.ActivationStopped, reason
	f.acts[a.ID] = a
	v.Active = nil
	f.projects[id] = v
	return a, nil
}

func (f *fakeProjects) Heartbeat(_ context.Context, p auth.Principal, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.project(p, id); err != nil {
		return err
	}
	f.beats++
	return nil
}

func (f *fakeProjects) GetActivation(_ context.Context, p auth.Principal, id string) (store.Activation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.acts[id]
	if !ok || !p.CanAccessTeam(a.TeamID) {
		return store.Activation{}, sandbox.Errorf(sandbox.ErrNotFound, "activation_not_found", "activation %s not found", id)
	}
	return a, nil
}

func (f *fakeProjects) ListActivations(_ context.Context, p auth.Principal, id string, _ store.Page) ([]store.Activation, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.project(p, id); err != nil {
		return nil, "", err
	}
	var out []store.Activation
	for _, a := range f.acts {
		if a.ProjectID == id {
			out = append(out, a)
		}
	}
	return out, "", nil
}

// Callers of the test server: a bearer token names a team. The API's own
// auth middleware is another package's business; here a stand-in puts the
// principal in the context, as it does.
var testPrincipals = map[string]auth.Principal{
	"team-a": {TeamID: "team-a", Name: "a", Role: store.RoleMember},
	"team-b": {TeamID: "team-b", Name: "b", Role: store.RoleMember},
}

// Embedding nil interfaces satisfies Config.Validate; these tests never
// touch sandboxes or the token store.
type noSandboxes struct{ Sandboxes }
type noTokens struct{ TokenStore }

type projectEnv struct {
	fake *fakeProjects
	url  string
	a, b *sdk.Client
}

func setupProjects(t *testing.T, projects Projects, apps http.Handler) *projectEnv {
	t.Helper()
	s, err := New(Config{Sandboxes: noSandboxes{}, Tokens: noTokens{}, Projects: projects, Apps: apps,
		PortBaseURL: "http://localhost:7420"})
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p, ok := testPrincipals[tok]
		if !ok {
			s.writeError(w, r, errUnauthenticated)
			return
		}
		s.route(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	t.Cleanup(s.CloseStreams)
	env := &projectEnv{url: hs.URL, a: sdk.New(hs.URL, "team-a"), b: sdk.New(hs.URL, "team-b")}
	env.fake, _ = projects.(*fakeProjects)
	return env
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProjectCRUD(t *testing.T) {
	env := setupProjects(t, newFakeProjects(), nil)
	ctx := ctxT(t)
	p, err := env.a.CreateProject(ctx, api.ProjectRequest{
		Name:            "demo",
		Source:          api.ProjectSource{Git: &api.GitSource{URL: "https://user:pw@example.com/r.git", Token: "tok"}},
		Start:           "goose-standin",
		AppPort:         3001,
		Env:             map[string]string{"A": "1"},
		Secrets:         map[string]string{"OPENAI_API_KEY": "sk-xyz"},
		IdleTimeoutMs:   60_000,
		PersistentPaths: []string{"/home/user/.local/share/goose"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.ID == "" || p.TeamID != "team-a" || p.Spec.IdleTimeoutMs != 60_000 || !slices.Equal(p.Spec.SecretNames, []string{"OPENAI_API_KEY"}) {
		t.Errorf("created %+v", p)
	}
	if g := p.Spec.Source.Git; g == nil || g.URL != "https://example.com/r.git" || g.Token != "" {
		t.Errorf("git source shown as %+v: credentials must not come back", g)
	}
	if p.AppURL != "http://localhost:7420/api/v1/projects/"+p.ID+"/app/" {
		t.Errorf("appUrl %q", p.AppURL)
	}
	raw, _ := json.Marshal(p)
	if strings.Contains(string(raw), "sk-xyz") || strings.Contains(string(raw), "pw@") {
		t.Errorf("a secret came back: %s", raw)
	}

	if got, err := env.a.GetProject(ctx, p.ID); err != nil || got.Name != "demo" {
		t.Errorf("get: %+v %v", got, err)
	}
	if _, err := env.b.GetProject(ctx, p.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("another team's get: %v, want 404", err)
	}
	if _, err := env.b.Activate(ctx, p.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("another team's activate: %v, want 404", err)
	}
	if page, err := env.b.ListProjectsPage(ctx, sdk.PageOptions{}); err != nil || len(page.Projects) != 0 {
		t.Errorf("another team lists %+v, %v", page, err)
	}
	if page, err := env.a.ListProjectsPage(ctx, sdk.PageOptions{Limit: 10}); err != nil || len(page.Projects) != 1 {
		t.Errorf("list %+v, %v", page, err)
	}
	up, err := env.a.UpdateProject(ctx, p.ID, api.ProjectRequest{Name: "demo2", Start: "other"})
	if err != nil || up.Name != "demo2" || up.Version != 2 {
		t.Errorf("update: %+v %v", up, err)
	}
	if err := env.b.DeleteProject(ctx, p.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("another team's delete: %v", err)
	}
	if err := env.a.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.a.GetProject(ctx, p.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
}

func TestProjectBadInput(t *testing.T) {
	env := setupProjects(t, newFakeProjects(), nil)
	cases := []struct {
		name, body, code string
	}{
		{"malformed", `{"name":`, "invalid_json"},
		{"unknown field", `{"name":"x","sauce":{}}`, "invalid_json"},
		{"negative idle", `{"name":"x","idleTimeoutMs":-1}`, "invalid_project"},
		{"bad env", `{"name":"x","env":{"A=B":"1"}}`, "invalid_env"},
		{"control says no", `{"name":""}`, "invalid_project"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, code := post(t, env.url+"/api/v1/projects", "team-a", c.body)
			if status != 400 || code != c.code {
				t.Errorf("status %d code %q, want 400 %q", status, code, c.code)
			}
		})
	}
	if status, code := post(t, env.url+"/api/v1/projects/x/activate", "team-a", ""); status != 404 || code != "project_not_found" {
		t.Errorf("unknown project: %d %q", status, code)
	}
	req, _ := http.NewRequest("GET", env.url+"/api/v1/activations/x/events", nil)
	req.Header.Set("Authorization", "Bearer team-a")
	req.Header.Set("Last-Event-ID", "nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("bad Last-Event-ID: %d", resp.StatusCode)
	}
}

func TestProjectsDisabled(t *testing.T) {
	env := setupProjects(t, nil, nil)
	for _, path := range []string{"/api/v1/projects", "/api/v1/projects/p/app/x"} {
		if status, code := post(t, env.url+path, "team-a", `{"name":"x"}`); status != 501 {
			t.Errorf("%s: %d %q, want 501", path, status, code)
		}
	}
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// TestActivateStreams: the activate call's SSE stream carries each event as
// it happens (the first before the activation is done) in the documented
// framing, and ends after ready; Last-Event-ID resumes; wait=true answers
// once ready; the default answer is 202 at once.
func TestActivateStreams(t *testing.T) {
	fake := newFakeProjects()
	env := setupProjects(t, fake, nil)
	ctx := ctxT(t)
	p, err := env.a.CreateProject(ctx, api.ProjectRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequestWithContext(ctx, "POST", env.url+"/api/v1/projects/"+p.ID+"/activate", nil)
	req.Header.Set("Authorization", "Bearer team-a")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != api.ContentTypeEventStream {
		t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
	}
	actID := resp.Header.Get("X-Paddock-Activation")
	br := bufio.NewReader(resp.Body)
	readEvent := func() string {
		t.Helper()
		var lines []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v (so far %q)", err, lines)
			}
			if line == "\n" {
				return strings.Join(lines, "")
			}
			lines = append(lines, line)
		}
	}
	first := readEvent() // "queued" arrives while the activation is still under way
	if !strings.HasPrefix(first, "event: queued\nid: ") || !strings.Contains(first, `data: {"seq":`) {
		t.Errorf("first event %q", first)
	}
	fake.step(actID, api.ActivationProvisioning, "")
	if ev := readEvent(); !strings.HasPrefix(ev, "event: provisioning\n") {
		t.Errorf("second event %q", ev)
	}

	// Meanwhile a second activate joins the same activation: 202 at once.
	a2, err := env.a.Activate(ctx, p.ID)
	if err != nil || a2.ID != actID || a2.State != api.ActivationProvisioning {
		t.Errorf("concurrent activate: %+v %v", a2, err)
	}

	// A waiter and a resumed follower, started before ready.
	waited := make(chan api.Activation, 1)
	go func() {
		var a api.Activation
		req, _ := http.NewRequestWithContext(ctx, "POST", env.url+"/api/v1/projects/"+p.ID+"/activate?wait=true", nil)
		req.Header.Set("Authorization", "Bearer team-a")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
		}
		waited <- a
	}()

	fake.step(actID, api.ActivationStarting, "")
	fake.step(actID, api.ActivationReady, "")
	if ev := readEvent(); !strings.HasPrefix(ev, "event: starting\n") {
		t.Errorf("third event %q", ev)
	}
	if ev := readEvent(); !strings.HasPrefix(ev, "event: ready\n") {
		t.Errorf("fourth event %q", ev)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("stream after ready: %q %v, want its end", rest, err)
	}
	if a := <-waited; a.State != api.ActivationReady || a.ID != actID {
		t.Errorf("wait=true answered %+v", a)
	}

	var resumed []string
	for e, err := range env.a.ActivationEvents(ctx, actID, 1) {
		if err != nil {
			t.Fatal(err)
		}
		resumed = append(resumed, e.Type)
	}
	if want := []string{"provisioning", "starting", "ready"}; !slices.Equal(resumed, want) {
		t.Errorf("resumed after seq 1 (queued): %v, want %v", resumed, want)
	}
	var other int
	for _, err := range env.b.ActivationEvents(ctx, actID, 0) {
		if !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("another team's events: %v", err)
		}
		other++
	}
	if other != 1 {
		t.Errorf("another team got %d items", other)
	}

	got, err := env.a.GetProject(ctx, p.ID)
	if err != nil || got.Active == nil || got.Active.State != api.ActivationReady || got.Active.AppURL == "" {
		t.Errorf("project after ready: %+v %v", got.Active, err)
	}
	if err := env.a.Heartbeat(ctx, p.ID); err != nil {
		t.Error(err)
	}
	list, err := env.a.ListActivations(ctx, p.ID, sdk.PageOptions{})
	if err != nil || len(list.Activations) != 1 {
		t.Errorf("activations %+v %v", list, err)
	}
	a, err := env.a.Deactivate(ctx, p.ID)
	if err != nil || a.State != api.ActivationStopped || fake.reasons[0] != "explicit" {
		t.Errorf("deactivate: %+v %v %v", a, err, fake.reasons)
	}
}

// TestActivateAndWaitSDK: the SDK follows the stream to the end and
// reports a failure with its log's tail.
func TestActivateAndWaitSDK(t *testing.T) {
	fake := newFakeProjects()
	env := setupProjects(t, fake, nil)
	ctx := ctxT(t)
	p, err := env.a.CreateProject(ctx, api.ProjectRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	done := make(chan error, 1)
	go func() {
		_, err := env.a.ActivateAndWait(ctx, p.ID, func(e api.ActivationEvent) { seen = append(seen, e.Type) })
		done <- err
	}()
	// The driver advances only once the client has the activation.
	var actID string
	for actID == "" {
		fake.mu.Lock()
		for id := range fake.acts {
			actID = id
		}
		fake.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	fake.step(actID, api.ActivationInstalling, "")
	fake.step(actID, api.ActivationFailed, "install exited with 2")
	err = <-done
	var fe *sdk.ActivationFailedError
	if !errors.As(err, &fe) || fe.Activation.LogTail != "the log's tail" || !strings.Contains(err.Error(), "install exited with 2") {
		t.Fatalf("err %v, want an ActivationFailedError with the log's tail", err)
	}
	if want := []string{"queued", "installing", "failed"}; !slices.Equal(seen, want) {
		t.Errorf("progress %v, want %v", seen, want)
	}
}

// TestAppRoute: every method under /projects/{id}/app reaches the app
// handler with the caller in the context.
func TestAppRoute(t *testing.T) {
	var mu sync.Mutex
	var got []string
	apps := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.FromContext(r.Context())
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+p.TeamID)
		mu.Unlock()
		w.WriteHeader(299)
	})
	env := setupProjects(t, newFakeProjects(), apps)
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/projects/p1/app"},
		{"POST", "/api/v1/projects/p1/app/reply"},
		{"PATCH", "/api/v1/projects/p1/app/x/y"},
		{"OPTIONS", "/api/v1/projects/p1/app/"},
	} {
		req, _ := http.NewRequest(c.method, env.url+c.path, nil)
		req.Header.Set("Authorization", "Bearer team-b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 299 {
			t.Errorf("%s %s: %d", c.method, c.path, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 || got[1] != "POST /api/v1/projects/p1/app/reply team-b" {
		t.Errorf("app handler saw %q", got)
	}
}

// TestProjectLabelFilter: ?label= keeps the projects carrying every label
// given, within the caller's team.
func TestProjectLabelFilter(t *testing.T) {
	env := setupProjects(t, newFakeProjects(), nil)
	ctx := t.Context()
	for _, c := range []struct {
		client *sdk.Client
		name   string
		labels map[string]string
	}{
		{env.a, "free", map[string]string{"tier": "free"}},
		{env.a, "paid", map[string]string{"tier": "paid"}},
		{env.b, "other", map[string]string{"tier": "free"}},
	} {
		if _, err := c.client.CreateProject(ctx, api.ProjectRequest{Name: c.name, Source: api.ProjectSource{Image: "img"}, Labels: c.labels}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := env.a.ListProjectsPage(ctx, sdk.PageOptions{Labels: map[string]string{"tier": "free"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Projects) != 1 || page.Projects[0].Name != "free" || page.Projects[0].Spec.Labels["tier"] != "free" {
		t.Errorf("tier=free lists %+v, want team a's project free", page.Projects)
	}
	if _, err := env.a.ListProjectsPage(ctx, sdk.PageOptions{Labels: map[string]string{"bad key": "x"}}); !errors.Is(err, sdk.ErrInvalid) {
		t.Errorf("a bad selector: %v", err)
	}
}
