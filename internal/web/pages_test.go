package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// TestProjectPagesRender renders the project pages with a project in them:
// the handler tests' fake API has no projects, so a template naming a
// field the API's types lack would fail only in front of a user.
func TestProjectPagesRender(t *testing.T) {
	h, err := New(Config{API: http.NotFoundHandler(), Auth: &tokens{}, SecretsKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	act := api.Activation{ID: "act-1", ProjectID: "prj-1", SandboxID: "sb-1", State: "stopped", EndReason: "idle_timeout",
		CreatedAt: now.Add(-time.Hour), ReadyAt: now.Add(-59 * time.Minute), EndedAt: now}
	image := api.Project{ID: "prj-1", Name: "goose", Spec: api.ProjectSpec{Source: api.ProjectSource{Image: "goose:1"}},
		Active: &act, CreatedAt: now, UpdatedAt: now}
	git := api.Project{ID: "prj-2", Name: "web", Spec: api.ProjectSpec{Source: api.ProjectSource{Git: &api.GitSource{URL: "https://git.example.com/web.git", Revision: "main"}}},
		CreatedAt: now, UpdatedAt: now}
	for _, tt := range []struct {
		name, page string
		data       pageData
		want       []string
	}{
		{"projects", "projects", pageData{Projects: []api.Project{image, git}}, []string{"goose:1", "https://git.example.com/web.git @ main"}},
		{"project", "project", pageData{Project: &image, Activations: []api.Activation{act}}, []string{"goose:1", "idle_timeout"}},
		{"git project", "project", pageData{Project: &git}, []string{"https://git.example.com/web.git @ main"}},
		{"demo", "demo", pageData{Projects: []api.Project{image, git}, Project: &image}, []string{`data-project="prj-1"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.render(w, &request{r: httptest.NewRequest("GET", "/ui/", nil), w: w}, 200, tt.page, tt.data)
			body := w.Body.String()
			if w.Code != 200 {
				t.Fatalf("%d: %s", w.Code, body)
			}
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("no %q in:\n%s", s, body)
				}
			}
		})
	}
}
