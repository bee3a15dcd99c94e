package daemon

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// teamClient makes a team and an admin token of it.
func (s *served) teamClient(t *testing.T, name string) (*sdk.Client, string) {
	t.Helper()
	team, err := s.client.CreateTeam(t.Context(), name)
	if err != nil {
		t.Fatalf("create team: %v", err)
	}
	tok, err := s.client.CreateToken(t.Context(), api.CreateTokenRequest{TeamID: team.ID, Name: name, Role: "admin"})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return sdk.New(s.url, tok.Secret, sdk.WithHTTPClient(s.hc)), team.ID
}

// scrape GETs /metrics with token and parses the text format.
func (s *served) scrape(t *testing.T, token string) (int, map[string]*dto.MetricFamily) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+MetricsPath, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return resp.StatusCode, fams
}

// hasSeries reports whether fams has name with every label of want.
func hasSeries(fams map[string]*dto.MetricFamily, name string, want map[string]string) bool {
	f := fams[name]
	if f == nil {
		return false
	}
	return slices.ContainsFunc(f.Metric, func(m *dto.Metric) bool {
		for k, v := range want {
			if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
				return false
			}
		}
		return true
	})
}

// TestMetrics scrapes /metrics as the host admin and finds the series of
// sandboxes by state and team, create latency by phase, the proxies, the
// per-sandbox counters, the warm pools' size and hits, the admission
// queue's length and waits, and the Go and process collectors; a team's
// token gets none of it.
func TestMetrics(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, Pools: []sandbox.PoolSpec{{Name: "warm", Min: 1, Max: 1}}},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx := t.Context()
	teamA, teamID := s.teamClient(t, "alpha")
	if _, err := teamA.Create(ctx, api.CreateSandboxRequest{}); err != nil {
		t.Fatalf("create: %v", err)
	}
	// One request through the app proxy's path form.
	if req, err := teamA.AppRequest(ctx, "nope", http.MethodGet, "/", nil); err == nil {
		if resp, err := teamA.DoApp(req); err == nil {
			resp.Body.Close()
		}
	}

	admin, _ := s.d.AdminToken()
	status, fams := s.scrape(t, admin)
	if status != http.StatusOK {
		t.Fatalf("admin scrape = %d", status)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"paddock_sandboxes", map[string]string{"state": "running", "team": teamID}},
		{"paddock_sandbox_create_phase_seconds", map[string]string{"phase": "total"}},
		{"paddock_sandbox_create_phase_seconds", map[string]string{"phase": "network"}},
		{"paddock_proxy_requests_total", map[string]string{"proxy": "app"}},
		{"paddock_proxy_request_duration_seconds", map[string]string{"proxy": "app"}},
		{"paddock_sandbox_cpu_seconds_total", map[string]string{"team": teamID}},
		{"paddock_sandbox_memory_bytes", map[string]string{"team": teamID}},
		{"paddock_sandbox_network_receive_bytes_total", map[string]string{"team": teamID}},
		{"paddock_sandbox_network_transmit_bytes_total", map[string]string{"team": teamID}},
		{"paddock_pool_idle", map[string]string{"pool": "warm"}},
		{"paddock_pool_creating", map[string]string{"pool": "warm"}},
		{"paddock_pool_target", map[string]string{"pool": "warm"}},
		{"paddock_pool_requests_total", map[string]string{"pool": "warm", "result": "hit"}},
		{"paddock_pool_requests_total", map[string]string{"pool": "warm", "result": "miss"}},
		{"paddock_pool_hit_ratio", map[string]string{"pool": "warm"}},
		{"paddock_admission_queue_length", nil},
		{"paddock_admission_queue_wait_seconds", map[string]string{"outcome": "admitted"}},
		{"go_goroutines", nil},
		{"process_resident_memory_bytes", nil},
	} {
		if !hasSeries(fams, c.name, c.labels) {
			t.Errorf("no series %s%v in the scrape", c.name, c.labels)
		}
	}

	_, token := teamToken(t, s, "beta")
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a team's token", token, http.StatusForbidden},
	} {
		if status, _ := s.scrape(t, tc.token); status != tc.want {
			t.Errorf("%s: /metrics = %d, want %d", tc.name, status, tc.want)
		}
	}
}

func teamToken(t *testing.T, s *served, name string) (string, string) {
	t.Helper()
	team, err := s.client.CreateTeam(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.client.CreateToken(t.Context(), api.CreateTokenRequest{TeamID: team.ID, Name: name, Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	return team.ID, tok.Secret
}

// receiver is a webhook endpoint that answers 500 to its first request
// and records the rest.
type receiver struct {
	mu       sync.Mutex
	requests int
	got      []api.Event
	bad      []string // why a request was refused
	secret   []byte
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	sig := r.Header.Get(events.HeaderSignature)
	var ts, v1 string
	for part := range strings.SplitSeq(sig, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	if !hmac.Equal([]byte(v1), []byte(events.Sign(rc.secret, ts, body))) {
		rc.bad = append(rc.bad, "bad signature "+sig)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if rc.requests == 1 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var e api.Event
	if err := json.Unmarshal(body, &e); err != nil {
		rc.bad = append(rc.bad, "bad body "+string(body))
		return
	}
	rc.got = append(rc.got, e)
}

func (rc *receiver) events() []api.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

// TestEventsAndWebhooks: lifecycle events reach the team's feed (which
// resumes after a Last-Event-ID) and its webhook (signed, in order, the
// first retried after a 500); another team sees none of them, nor the
// first team's labels; label filters select sandboxes.
func TestEventsAndWebhooks(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, WebhookAllowPrivate: true, WebhookBackoff: 20 * time.Millisecond},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a, _ := s.teamClient(t, "alpha")
	b, _ := s.teamClient(t, "beta")

	rc := &receiver{secret: []byte("a-secret-of-sixteen-bytes")}
	hs := httptest.NewServer(rc)
	defer hs.Close()
	hook, err := a.AddWebhook(ctx, api.WebhookRequest{URL: hs.URL, Secret: string(rc.secret), Types: []string{"sandbox.*"}})
	if err != nil {
		t.Fatalf("add webhook: %v", err)
	}
	if hook.Secret != string(rc.secret) {
		t.Errorf("created webhook's secret = %q", hook.Secret)
	}
	if hooks, err := b.ListWebhooks(ctx); err != nil || len(hooks) != 0 {
		t.Errorf("team b's webhooks = %v, %v; want none", hooks, err)
	}
	_, err = b.WebhookDeliveries(ctx, hook.ID, "", 0, 0)
	if !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("team b reading team a's deliveries: %v, want not found", err)
	}

	prod, err := a.Create(ctx, api.CreateSandboxRequest{Labels: map[string]string{"env": "prod", "app": "web"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	dev, err := a.Create(ctx, api.CreateSandboxRequest{Labels: map[string]string{"env": "dev"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := dev.Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}

	// Labels: returned, filtered, updated; never another team's.
	if !maps(prod.Labels, map[string]string{"env": "prod", "app": "web"}) {
		t.Errorf("labels = %v", prod.Labels)
	}
	listIDs := func(c *sdk.Client, labels map[string]string) []string {
		t.Helper()
		page, err := c.ListPage(ctx, sdk.ListOptions{Labels: labels})
		if err != nil {
			t.Fatalf("list %v: %v", labels, err)
		}
		var ids []string
		for _, sb := range page.Sandboxes {
			ids = append(ids, sb.ID)
		}
		return ids
	}
	if got := listIDs(a, map[string]string{"env": "prod"}); !slices.Equal(got, []string{prod.ID}) {
		t.Errorf("env=prod lists %v, want [%s]", got, prod.ID)
	}
	if got := listIDs(a, map[string]string{"env": "staging"}); len(got) != 0 {
		t.Errorf("env=staging lists %v", got)
	}
	if err := prod.SetLabels(ctx, map[string]string{"env": "staging"}); err != nil {
		t.Fatalf("set labels: %v", err)
	}
	if got := listIDs(a, map[string]string{"env": "staging"}); !slices.Equal(got, []string{prod.ID}) {
		t.Errorf("after the update env=staging lists %v, want [%s]", got, prod.ID)
	}
	if got := listIDs(b, map[string]string{"env": "staging"}); len(got) != 0 {
		t.Errorf("team b lists team a's labelled sandboxes: %v", got)
	}
	if _, err := b.Get(ctx, prod.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("team b gets team a's sandbox: %v", err)
	}
	if err := b.Sandbox(prod.ID).SetLabels(ctx, map[string]string{"x": "y"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("team b sets team a's labels: %v", err)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"bad key": "x"}, {"k": "new\nline"}} {
		if _, err := a.Create(ctx, api.CreateSandboxRequest{Labels: bad}); !errors.Is(err, sdk.ErrInvalid) {
			t.Errorf("labels %q: %v, want invalid", bad, err)
		}
	}

	// The feed: team a's events from the start, then a resume.
	read := func(c *sdk.Client, opts sdk.EventOptions, n int) []api.Event {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		var out []api.Event
		for e, err := range c.Events(rctx, opts) {
			if err != nil {
				t.Fatalf("events: %v", err)
			}
			out = append(out, e)
			if len(out) == n {
				break
			}
		}
		return out
	}
	want := []string{"sandbox.created", "sandbox.started", "sandbox.created", "sandbox.started", "sandbox.stopped",
		"sandbox.deleted", "sandbox.labels_changed"}
	all := read(a, sdk.EventOptions{FromStart: true}, len(want))
	if got := types(all); !slices.Equal(got, want) {
		t.Fatalf("team a's feed = %v, want %v", got, want)
	}
	if all[4].Data["reason"] != "deleted" || all[4].Data["durationSeconds"] == "" {
		t.Errorf("stopped event's data = %v, want a reason and usage", all[4].Data)
	}
	resumed := read(a, sdk.EventOptions{After: all[2].Seq}, len(want)-3)
	if !slices.EqualFunc(resumed, all[3:], func(x, y api.Event) bool { return x.Seq == y.Seq && x.Type == y.Type }) {
		t.Errorf("resumed after %d: %v, want %v", all[2].Seq, seqs(resumed), seqs(all[3:]))
	}
	filtered := read(a, sdk.EventOptions{FromStart: true, Types: []string{"sandbox.stopped"}}, 1)
	if filtered[0].Seq != all[4].Seq {
		t.Errorf("?type=sandbox.stopped gave %v", filtered)
	}

	// Team b: its own sandbox's events only.
	own, err := b.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range read(b, sdk.EventOptions{FromStart: true}, 2) {
		if e.SandboxID != own.ID {
			t.Errorf("team b's feed carries %s of %s", e.Type, e.SandboxID)
		}
	}

	// The webhook: every team a event, in order, signed, the first twice.
	deadline := time.Now().Add(20 * time.Second)
	for len(rc.events()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := rc.events()
	if !slices.Equal(seqs(got), seqs(all)) {
		t.Errorf("webhook got %v, want %v in order", seqs(got), seqs(all))
	}
	rc.mu.Lock()
	if len(rc.bad) > 0 || rc.requests != len(all)+1 {
		t.Errorf("receiver: %d requests (want %d: one retry), refused %v", rc.requests, len(all)+1, rc.bad)
	}
	rc.mu.Unlock()
	ds, err := a.WebhookDeliveries(ctx, hook.ID, "", 0, 0)
	if err != nil || len(ds.Deliveries) != len(all) {
		t.Fatalf("deliveries = %+v, %v", ds, err)
	}
	first := ds.Deliveries[0]
	if first.State != "delivered" || first.Attempts != 2 || first.LastStatus != http.StatusOK {
		t.Errorf("first delivery = %+v, want delivered on the second attempt", first)
	}
}

func types(es []api.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Type
	}
	return out
}

func seqs(es []api.Event) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBudgetWebhook: a budget's warning threshold reaches the team's feed
// and its webhook (signed, retried after a 500), once a month: checking
// the budget again sends nothing more.
func TestBudgetWebhook(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, WebhookAllowPrivate: true, WebhookBackoff: 20 * time.Millisecond,
		UsageInterval: 50 * time.Millisecond, Prices: metering.Prices{Creation: 1}},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a, teamID := s.teamClient(t, "alpha")
	rc := &receiver{secret: []byte("a-secret-of-sixteen-bytes")}
	hs := httptest.NewServer(rc)
	defer hs.Close()
	if _, err := a.AddWebhook(ctx, api.WebhookRequest{URL: hs.URL, Secret: string(rc.secret), Types: []string{"budget.*"}}); err != nil {
		t.Fatalf("add webhook: %v", err)
	}
	if _, err := a.Create(ctx, api.CreateSandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	// The creation is booked by the sampler: 1 spent.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := s.client.SetBudget(ctx, teamID, api.BudgetRequest{MonthlyLimit: 10, Thresholds: []int{5, 90}})
		if err != nil {
			t.Fatal(err)
		}
		if b.Spend >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spend never reached 1: %+v", b)
		}
	}
	// Checked again (the meter's own checks run too): no second warning.
	if _, err := s.client.SetBudget(ctx, teamID, api.BudgetRequest{MonthlyLimit: 10, Thresholds: []int{5, 90}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(rc.events()) < 1 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // ten checks of the meter: room for a wrong second warning to show
	got := rc.events()
	if len(got) != 1 || got[0].Type != "budget.threshold" || got[0].Data["percent"] != "5" || got[0].TeamID != teamID {
		t.Fatalf("webhook got %+v, want one budget.threshold at 5%%", got)
	}
	rc.mu.Lock()
	if len(rc.bad) > 0 || rc.requests != 2 {
		t.Errorf("receiver: %d requests (want 2: one retry), refused %v", rc.requests, rc.bad)
	}
	rc.mu.Unlock()
	feed, err := s.d.store.ListEvents(ctx, store.EventFilter{TeamID: teamID, Limit: store.MaxEventLimit})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range feed {
		if e.Type == "budget.threshold" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d budget.threshold events in the feed, want 1", n)
	}
}

// TestBudgetCapWithoutSnapshots: on a driver that cannot snapshot (so no
// pause), the hard cap stops the team's running sandbox instead, and new
// work and resumes are refused with 402.
func TestBudgetCapWithoutSnapshots(t *testing.T) {
	noGoroutinesLeft(t)
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true, UsageInterval: 50 * time.Millisecond, Prices: metering.Prices{Creation: 1}},
		WithDriver(fake.NewDriver(t, fake.DriverConfig{})))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a, teamID := s.teamClient(t, "alpha")
	sb, err := a.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := s.client.SetBudget(ctx, teamID, api.BudgetRequest{MonthlyLimit: 0.5, HardCap: true})
		if err != nil {
			t.Fatal(err)
		}
		if b.Capped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never capped: %+v", b)
		}
	}
	got, err := a.Get(ctx, sb.ID)
	if err != nil || got.Status != api.StatusStopped {
		t.Fatalf("after the cap: %+v, %v; want stopped (no pause without snapshots)", got, err)
	}
	if _, err := a.Create(ctx, api.CreateSandboxRequest{}); !errors.Is(err, sdk.ErrBudgetExceeded) {
		t.Errorf("create over budget: %v, want 402", err)
	}
	if err := sb.Resume(ctx, 0); !errors.Is(err, sdk.ErrBudgetExceeded) {
		t.Errorf("resume over budget: %v, want 402", err)
	}
}
