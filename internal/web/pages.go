package web

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/sdk"
)

// pageData is every template's data; a page fills what it shows.
type pageData struct {
	Title     string
	Nav       string // the nav entry to mark current
	Principal *auth.Principal
	CSRF      string
	Message   string
	Next      string
	Now       time.Time
	// OIDC labels the sign-in page's "Sign in with" button ("" without
	// OIDC sign-in); Retry is where an error page offers to start again;
	// Refresh is where a page sends the browser at once.
	OIDC, Retry, Refresh string

	Sandboxes   []api.Sandbox
	Sandbox     *api.Sandbox
	Stats       *api.Stats
	Commands    []api.Command
	SignedURL   *api.SignedURL
	Projects    []api.Project
	Project     *api.Project
	Activations []api.Activation
	Pools       []api.Pool
	Limits      *api.TeamAdmission
	Budget      *api.Budget
	Usage       *api.UsageList
	Chart       template.HTML
	Rows        []usageRow
	Events      []api.Event
	Webhooks    []webhookView
	Teams       []teamView
	Tokens      []api.Token
	Unavailable []string // sections whose API answered 501 or failed
	// Files is the files page (files.go); SandboxUsage the sandbox page's
	// usage over time.
	Files        *filesView
	SandboxUsage *usageView
}

type webhookView struct {
	api.Webhook
	Deliveries []api.Delivery
}

type teamView struct {
	api.Team
	Users []api.User
}

var funcs = template.FuncMap{
	"age": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return short(now.Sub(t))
	},
	"left": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		if !t.After(now) {
			return "expired"
		}
		return short(t.Sub(now))
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"labels": func(m map[string]string) []string {
		var out []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, k+"="+m[k])
		}
		return out
	},
	"bytes": humanBytes,
	"size":  func(n int64) uint64 { return uint64(max(n, 0)) },
	"money": func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"network": func(s api.Sandbox) string {
		switch {
		case s.NetworkPolicy != nil && s.Address != "":
			return s.NetworkPolicy.Mode + " · " + s.Address
		case s.NetworkPolicy != nil:
			return s.NetworkPolicy.Mode
		case s.Address != "":
			return s.Address
		}
		return "none"
	},
	"cmdline": func(c api.Command) string { return strings.Join(append([]string{c.Cmd}, c.Args...), " ") },
	"exit": func(c api.Command) string {
		switch {
		case c.ExitCode != nil:
			return strconv.Itoa(*c.ExitCode)
		case c.Signal != "":
			return c.Signal
		}
		return ""
	},
}

func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// pageNames are the templates under templates/, each rendered inside layout.html.
var pageNames = []string{"login", "error", "signedin", "sandboxes", "sandbox", "projects", "project", "capacity", "usage", "events", "admin", "demo", "files"}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes a page whole, or a 500 if its template fails (nothing is
// sent before the template has run).
func (h *Handler) render(w http.ResponseWriter, rq *request, status int, name string, d pageData) {
	d.Now = h.cfg.Now()
	if rq.sess.Token != "" {
		p := rq.principal
		d.Principal = &p
		d.CSRF = h.seal.csrf(rq.sess)
	}
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, d); err != nil {
		h.log.Error("dashboard template", "page", name, "err", err)
		http.Error(w, "page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) show(rq *request, name string, d pageData) error {
	h.render(rq.w, rq, http.StatusOK, name, d)
	return nil
}

// optional runs a read whose absence (501: not configured here) or
// failure should leave its section out rather than fail the page; an
// unauthorized answer still ends the session.
func optional(d *pageData, section string, err error) error {
	if err == nil {
		return nil
	}
	if ae, ok := err.(*sdk.APIError); ok && ae.Status == http.StatusUnauthorized {
		return err
	}
	d.Unavailable = append(d.Unavailable, section+": "+err.Error())
	return nil
}

func (h *Handler) sandboxesPage(rq *request) error {
	page, err := rq.api.ListPage(rq.ctx, sdk.ListOptions{Limit: 500})
	if err != nil {
		return err
	}
	items := page.Sandboxes
	slices.SortStableFunc(items, func(a, b api.Sandbox) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return h.show(rq, "sandboxes", pageData{Title: "Sandboxes", Nav: "sandboxes", Sandboxes: items})
}

func (h *Handler) sandboxPage(rq *request) error {
	sb := rq.api.Sandbox(rq.r.PathValue("id"))
	if err := sb.Refresh(rq.ctx); err != nil {
		return err
	}
	d := pageData{Title: "Sandbox " + sb.ID, Nav: "sandboxes", Sandbox: &sb.Sandbox}
	if sb.Status == "running" {
		st, err := sb.Stats(rq.ctx)
		if err := optional(&d, "usage", err); err != nil {
			return err
		}
		if err == nil {
			d.Stats = &st
		}
	}
	u, err := h.sandboxUsage(rq, &sb.Sandbox)
	if err := optional(&d, "usage over time", err); err != nil {
		return err
	}
	d.SandboxUsage = u
	cmds, err := sb.Commands(rq.ctx)
	if err := optional(&d, "commands", err); err != nil {
		return err
	}
	for _, c := range cmds {
		d.Commands = append(d.Commands, c.Command)
	}
	slices.SortStableFunc(d.Commands, func(a, b api.Command) int { return b.StartedAt.Compare(a.StartedAt) })
	return h.show(rq, "sandbox", d)
}

func (h *Handler) stopSandbox(rq *request) error {
	id := rq.r.PathValue("id")
	if err := rq.api.Sandbox(id).Stop(rq.ctx); err != nil {
		return err
	}
	return back(rq, Prefix+"/sandboxes/"+id)
}

func (h *Handler) extendSandbox(rq *request) error {
	id := rq.r.PathValue("id")
	mins, err := strconv.Atoi(rq.r.PostFormValue("minutes"))
	if err != nil || mins <= 0 || mins > 24*60 {
		return &sdk.APIError{Status: http.StatusBadRequest, Code: "invalid_minutes", Message: "minutes must be between 1 and 1440"}
	}
	if err := rq.api.Sandbox(id).ExtendTimeout(rq.ctx, time.Duration(mins)*time.Minute); err != nil {
		return err
	}
	return back(rq, Prefix+"/sandboxes/"+id)
}

// uploadFile writes one uploaded file into a directory of the sandbox
// (through the API's tar upload, which refuses names that leave it).
func (h *Handler) uploadFile(rq *request) error {
	id := rq.r.PathValue("id")
	f, hdr, err := rq.r.FormFile("file")
	if err != nil {
		return &sdk.APIError{Status: http.StatusBadRequest, Code: "invalid_upload", Message: "choose a file to upload (at most " + humanBytes(uint64(maxFormBytes)) + ")"}
	}
	defer f.Close()
	name := path.Base(strings.ReplaceAll(hdr.Filename, "\\", "/"))
	dir := rq.r.PostFormValue("dir")
	if name == "" || name == "." || name == ".." || name == "/" || !path.IsAbs(dir) {
		return &sdk.APIError{Status: http.StatusBadRequest, Code: "invalid_upload", Message: "the directory must be an absolute path and the file must have a name"}
	}
	if _, err := rq.api.Sandbox(id).WriteFiles(rq.ctx, dir, []sdk.File{{Path: name, Reader: f, Size: hdr.Size}}); err != nil {
		return err
	}
	return back(rq, Prefix+"/sandboxes/"+id)
}

// signPort signs a port's URL and shows the sandbox page with it (a
// script copies it to the clipboard).
func (h *Handler) signPort(rq *request) error {
	id := rq.r.PathValue("id")
	port, err := strconv.Atoi(rq.r.PostFormValue("port"))
	if err != nil {
		return &sdk.APIError{Status: http.StatusBadRequest, Code: "invalid_port", Message: "port must be a number"}
	}
	u, err := rq.api.Sandbox(id).SignedURL(rq.ctx, port, time.Hour)
	if err != nil {
		return err
	}
	sb := rq.api.Sandbox(id)
	if err := sb.Refresh(rq.ctx); err != nil {
		return err
	}
	return h.show(rq, "sandbox", pageData{Title: "Sandbox " + id, Nav: "sandboxes", Sandbox: &sb.Sandbox, SignedURL: &u})
}

func (h *Handler) projectsPage(rq *request) error {
	d := pageData{Title: "Projects", Nav: "projects"}
	page, err := rq.api.ListProjectsPage(rq.ctx, sdk.PageOptions{Limit: 500})
	if err := optional(&d, "projects", err); err != nil {
		return err
	}
	d.Projects = page.Projects
	return h.show(rq, "projects", d)
}

func (h *Handler) projectPage(rq *request) error {
	id := rq.r.PathValue("id")
	p, err := rq.api.GetProject(rq.ctx, id)
	if err != nil {
		return err
	}
	d := pageData{Title: "Project " + p.Name, Nav: "projects", Project: &p}
	acts, err := rq.api.ListActivations(rq.ctx, id, sdk.PageOptions{Limit: 50})
	if err := optional(&d, "activations", err); err != nil {
		return err
	}
	d.Activations = acts.Activations
	return h.show(rq, "project", d)
}

func (h *Handler) activateProject(rq *request) error {
	id := rq.r.PathValue("id")
	if _, err := rq.api.Activate(rq.ctx, id); err != nil {
		return err
	}
	return back(rq, Prefix+"/projects/"+id)
}

func (h *Handler) deactivateProject(rq *request) error {
	id := rq.r.PathValue("id")
	if _, err := rq.api.Deactivate(rq.ctx, id); err != nil {
		return err
	}
	return back(rq, Prefix+"/projects/"+id)
}

// capacityPage shows the warm pools, the team's admission limits and
// queue, and its budget.
func (h *Handler) capacityPage(rq *request) error {
	d := pageData{Title: "Capacity", Nav: "capacity"}
	pools, err := rq.api.ListPools(rq.ctx)
	if err := optional(&d, "pools", err); err != nil {
		return err
	}
	d.Pools = pools
	if team := rq.principal.TeamID; team != "" {
		lim, err := rq.api.TeamLimits(rq.ctx, team)
		if err := optional(&d, "limits", err); err != nil {
			return err
		}
		if err == nil {
			d.Limits = &lim
		}
		b, err := rq.api.GetBudget(rq.ctx, team)
		if ae, ok := err.(*sdk.APIError); ok && ae.Status == http.StatusNotFound {
			err = nil // no budget set
		} else if err := optional(&d, "budget", err); err != nil {
			return err
		} else if err == nil {
			d.Budget = &b
		}
	}
	return h.show(rq, "capacity", d)
}

// usageRow is one team's or project's total over the page's window.
type usageRow struct {
	Team, Project string
	CPUSeconds    float64
	MemoryGBHours float64
	Cost          float64
}

func (h *Handler) usagePage(rq *request) error {
	d := pageData{Title: "Usage and cost", Nav: "usage"}
	days := 14
	if v, err := strconv.Atoi(rq.r.URL.Query().Get("days")); err == nil && v > 0 && v <= 90 {
		days = v
	}
	since := h.cfg.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, 1-days)
	u, err := rq.api.AllUsage(rq.ctx, sdk.UsageQuery{Since: since, Granularity: "day"})
	if err := optional(&d, "usage", err); err != nil {
		return err
	}
	if err == nil {
		d.Usage = &u
		d.Chart = costChart(u.Usage, since, days)
		d.Rows = usageTotals(u.Usage)
	}
	return h.show(rq, "usage", d)
}

func usageTotals(rows []api.Usage) []usageRow {
	byKey := map[[2]string]*usageRow{}
	var keys [][2]string
	for _, u := range rows {
		k := [2]string{u.TeamID, u.ProjectID}
		r := byKey[k]
		if r == nil {
			r = &usageRow{Team: u.TeamID, Project: u.ProjectID}
			byKey[k] = r
			keys = append(keys, k)
		}
		r.CPUSeconds += u.CPUSeconds
		r.MemoryGBHours += u.MemoryGBHours
		r.Cost += u.Cost.Total
	}
	out := make([]usageRow, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	slices.SortFunc(out, func(a, b usageRow) int { return strings.Compare(a.Team+"/"+a.Project, b.Team+"/"+b.Project) })
	return out
}

// eventsPage shows the team's recent events (the feed's replay, read for
// a moment) and its webhooks' deliveries; with JavaScript new events
// arrive live.
func (h *Handler) eventsPage(rq *request) error {
	d := pageData{Title: "Events", Nav: "events"}
	ctx, cancel := context.WithTimeout(rq.ctx, 300*time.Millisecond)
	defer cancel()
	var evs []api.Event
	for ev, err := range rq.api.Events(ctx, sdk.EventOptions{FromStart: true}) {
		if err != nil {
			if ae, ok := err.(*sdk.APIError); ok {
				if err := optional(&d, "events", ae); err != nil {
					return err
				}
			}
			break
		}
		evs = append(evs, ev)
	}
	slices.Reverse(evs)
	d.Events = evs[:min(len(evs), 200)]
	hooks, err := rq.api.ListWebhooks(rq.ctx)
	if err := optional(&d, "webhooks", err); err != nil {
		return err
	}
	for _, wh := range hooks {
		v := webhookView{Webhook: wh}
		if dl, err := rq.api.WebhookDeliveries(rq.ctx, wh.ID, "", 0, 50); err == nil {
			v.Deliveries = dl.Deliveries
		}
		d.Webhooks = append(d.Webhooks, v)
	}
	return h.show(rq, "events", d)
}

// adminPage lists teams, users and tokens; the API decides what a token
// may see (a member gets its own team's tokens at most).
func (h *Handler) adminPage(rq *request) error {
	d := pageData{Title: "Accounts", Nav: "admin"}
	teams, err := rq.api.ListTeams(rq.ctx)
	if err := optional(&d, "teams", err); err != nil {
		return err
	}
	for _, t := range teams {
		v := teamView{Team: t}
		if users, err := rq.api.ListUsers(rq.ctx, t.ID); err == nil {
			v.Users = users
		}
		d.Teams = append(d.Teams, v)
	}
	toks, err := rq.api.ListTokens(rq.ctx, "")
	if err := optional(&d, "tokens", err); err != nil {
		return err
	}
	d.Tokens = toks
	return h.show(rq, "admin", d)
}

// demoPage is the product flow as its user sees it; choosing, activating
// work without scripts, the chat needs them.
func (h *Handler) demoPage(rq *request) error {
	d := pageData{Title: "Demo", Nav: "demo"}
	page, err := rq.api.ListProjectsPage(rq.ctx, sdk.PageOptions{Limit: 500})
	if err := optional(&d, "projects", err); err != nil {
		return err
	}
	d.Projects = page.Projects
	if id := rq.r.URL.Query().Get("project"); id != "" {
		p, err := rq.api.GetProject(rq.ctx, id)
		if err != nil {
			return err
		}
		d.Project = &p
	} else if len(d.Projects) == 1 {
		d.Project = &d.Projects[0]
	}
	return h.show(rq, "demo", d)
}
