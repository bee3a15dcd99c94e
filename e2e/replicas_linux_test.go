package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/sdk"
)

// TestReplicaKilledMidActivation runs two `paddock serve` replicas on one
// MongoDB (FerretDB, in this test binary) and kills one with SIGKILL in the
// middle of an activation (right after it is queued, before anything
// else). The other replica, holding the background lease, fails the
// activation with the reason replica_lost once the dead replica's
// liveness lease lapses, exactly once; through its own API, with the
// token the first replica made.
func TestReplicaKilledMidActivation(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	uri, db := mongotest.URI(t), mongotest.NewDB()
	flags := func(node string) []string {
		// No sandbox networking: the activation dies queued, and two
		// replicas on one host would share its address pool.
		return []string{"--no-network", "--mongodb-uri", uri, "--mongodb-database", db, "--node-name", node,
			"--lease-ttl", "2s", "--lease-renew", "500ms"}
	}

	// Replica a, armed to die once it has queued an activation.
	dirA, addrA := newDataDir(t), freeAddr(t)
	pa := startKillable(t, bin, "control/activate/queued", append([]string{"--data-dir", dirA, "--listen", addrA}, flags("node-a")...)...)
	urlA, token := (&serveProc{out: pa.out, log: pa.log}).clientConfig(t, dirA)
	a := sdk.New(urlA, token)

	// Replica b on the same store; the first replica's token works there.
	dirB, addrB := newDataDir(t), freeAddr(t)
	pb := startServe(t, bin, dirB, addrB, flags("node-b")...)
	urlB := "http://" + addrB
	waitReady(t, urlB, pb)
	b := sdk.New(urlB, token)

	p, err := a.CreateProject(ctxFor(t, time.Minute), api.ProjectRequest{Name: "killed",
		Source: api.ProjectSource{Image: "host"}, Start: "sleep 600"})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	if act, err := a.Activate(ctxFor(t, time.Minute), p.ID); err == nil {
		t.Fatalf("activate answered %s through a crash", act.ID)
	}
	pa.waitKilled(t, "control/activate/queued")
	killed := time.Now()

	// Replica b ends it: the lease lapses 2 s after a's last renewal, and
	// b's sweep runs with its idle checks (every 5 s).
	var act api.Activation
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		list, err := b.ListActivations(ctxFor(t, time.Minute), p.ID, sdk.PageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Activations) != 1 {
			t.Fatalf("activations: %+v", list.Activations)
		}
		act = list.Activations[0]
		if act.State != api.ActivationQueued || time.Now().After(deadline) {
			break
		}
	}
	if act.State != api.ActivationFailed || act.EndReason != control.ReasonReplicaLost || !strings.Contains(act.Error, "node-a") {
		t.Fatalf("the killed replica's activation: %+v\n%s", act, pb.log.String())
	}
	// Bounded by the lease TTL (2 s) plus one sweep period (5 s).
	t.Logf("failed %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(6 * time.Second) // a second sweep would show now
	st := mongotest.Open(t, uri, db)
	evs, err := st.ListEvents(ctxFor(t, time.Minute), store.EventFilter{ActivationID: act.ID})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, e := range evs {
		if e.Type == string(control.StateFailed) {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed events, want 1: %+v", failed, evs)
	}
	p2, err := b.GetProject(ctxFor(t, time.Minute), p.ID)
	if err != nil || p2.Active != nil {
		t.Fatalf("the project after the sweep: %+v %v; want it free", p2, err)
	}

	// Replica a comes back under its name (its lease is its own again at
	// once) and stops cleanly, which takes down what its driver had
	// ready on this host (pool disks).
	ra := startServe(t, bin, dirA, addrA, flags("node-a")...)
	waitReady(t, "http://"+addrA, ra)
	ra.stop()
}

// waitReady waits until the server at url answers /readyz with 200.
func waitReady(t *testing.T, url string, p *serveProc) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready (%v)\n%s", url, err, p.log.String())
		}
	}
}

// TestReplicaServesAnySandbox runs two `paddock serve` replicas on one
// MongoDB (FerretDB), each advertising its address, and drives a sandbox
// that replica a runs through replica b only, with the same team token:
// b forwards every request to a (API, E2B and Vercel layers alike), lists
// both replicas' sandboxes in one list, and keeps another team's sandbox
// from it. Requests whose handlers read a body (Vercel update by name,
// E2B timeout and refresh, an envd upload) go too: the sandbox is looked
// up first. With a killed, b tells the client to come back (503
// sandbox_replica_unavailable, in each surface's own shape), not that the
// sandbox does not exist.
func TestReplicaServesAnySandbox(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	uri, db := mongotest.URI(t), mongotest.NewDB()
	flags := func(node, addr string) []string {
		// No sandbox networking: two replicas on one host would share its
		// address pool.
		return []string{"--no-network", "--mongodb-uri", uri, "--mongodb-database", db, "--node-name", node,
			"--lease-ttl", "2s", "--lease-renew", "500ms", "--advertise-url", "http://" + addr}
	}

	// Replica a, started by hand to be killed by pid later.
	dirA, addrA := newDataDir(t), freeAddr(t)
	pa := startKillable(t, bin, "", append([]string{"--data-dir", dirA, "--listen", addrA}, flags("node-a", addrA)...)...)
	urlA, admin := (&serveProc{out: pa.out, log: pa.log}).clientConfig(t, dirA)
	waitReady(t, urlA, &serveProc{out: pa.out, log: pa.log})
	// A failure leaves a's sandboxes running: delete them while a serves
	// (this runs before the kill above).
	t.Cleanup(func() {
		if t.Failed() {
			deleteLeftSandboxes(t, bin, dirA)
		}
	})

	dirB, addrB := newDataDir(t), freeAddr(t)
	pb := startServe(t, bin, dirB, addrB, flags("node-b", addrB)...)
	urlB := "http://" + addrB
	waitReady(t, urlB, pb)

	// Two teams, each with a member token (an E2B-shaped one for team 1,
	// which is a paddock token too).
	ctx := ctxFor(t, 5*time.Minute)
	adm := sdk.New(urlA, admin)
	teamToken := func(name, format string) (api.Team, string) {
		team, err := adm.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := adm.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: name, Role: "member", Format: format})
		if err != nil {
			t.Fatal(err)
		}
		return team, tok.Secret
	}
	team1, tok1 := teamToken("one", "e2b")
	_, tok2 := teamToken("two", "")
	a1, b1, b2, a2 := sdk.New(urlA, tok1), sdk.New(urlB, tok1), sdk.New(urlB, tok2), sdk.New(urlA, tok2)

	// One sandbox on each replica.
	onA, err := a1.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	onB, err := b1.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sb := b1.Sandbox(onA.ID) // a's sandbox, through b from here on

	// Got and listed through b.
	if err := sb.Refresh(ctx); err != nil || sb.Status != api.StatusRunning || sb.TeamID != team1.ID {
		t.Fatalf("get a's sandbox through b: %+v %v", sb.Sandbox, err)
	}
	page, err := b1.ListPage(ctx, sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, s := range page.Sandboxes {
		listed[s.ID] = true
	}
	if len(page.Sandboxes) != 2 || !listed[onA.ID] || !listed[onB.ID] {
		t.Fatalf("b lists %+v, want %s (a's) and %s (b's)", page.Sandboxes, onA.ID, onB.ID)
	}

	// A command whose output streams through b: it prints, then waits for
	// a file written through b, then prints again.
	c, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c",
		"echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; cat /tmp/go"}, Detached: true})
	if err != nil {
		t.Fatalf("run a command through b: %v", err)
	}
	var out strings.Builder
	wrote := false
	for l, err := range c.Logs(ctx) {
		if err != nil {
			t.Fatalf("stream through b: %v (so far %q)", err, out.String())
		}
		out.Write(l.Bytes())
		if !wrote && strings.Contains(out.String(), "ready") {
			// The first line came while the command runs: streamed.
			if _, err := sb.WriteFiles(ctx, "/tmp", []sdk.File{{Path: "go", Content: []byte("streamed\n")}}); err != nil {
				t.Fatalf("write a file through b: %v", err)
			}
			wrote = true
		}
	}
	if out.String() != "ready\nstreamed\n" || c.ExitCodeOr(-1) != 0 {
		t.Fatalf("output through b %q, exit %d", out.String(), c.ExitCodeOr(-1))
	}
	f, err := sb.ReadFile(ctx, "/tmp/go")
	if err != nil {
		t.Fatalf("read a file through b: %v", err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "streamed\n" {
		t.Fatalf("read %q through b", data)
	}
	before := sb.ExpiresAt
	if err := sb.ExtendTimeout(ctx, time.Minute); err != nil || !sb.ExpiresAt.After(before) {
		t.Fatalf("extend through b: %v (expires %v, was %v)", err, sb.ExpiresAt, before)
	}

	// Another team's token: not found through either replica.
	for name, c := range map[string]*sdk.Client{"a": a2, "b": b2} {
		if err := c.Sandbox(onA.ID).Refresh(ctx); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("team two gets a's sandbox through %s: %v, want not found", name, err)
		}
		if _, err := c.Sandbox(onA.ID).RunCommand(ctx, api.CommandRequest{Cmd: "true"}); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("team two runs a command in a's sandbox through %s: %v, want not found", name, err)
		}
	}

	// The E2B layer of b reaches a's sandbox, and lists both replicas'.
	e2bGet := func(url, id string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url+"/compat/e2b/sandboxes/"+id, "/"), nil)
		req.Header.Set("X-API-Key", tok1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if st, body := e2bGet(urlB, onA.ID); st != http.StatusOK || !strings.Contains(body, onA.ID) {
		t.Fatalf("E2B get of a's sandbox through b: %d %s", st, body)
	}
	if st, body := e2bGet(urlB, ""); st != http.StatusOK || !strings.Contains(body, onA.ID) || !strings.Contains(body, onB.ID) {
		t.Fatalf("E2B list through b: %d %s, want %s and %s", st, body, onA.ID, onB.ID)
	}
	// Calls whose handlers read a body, through b: timeout, refresh,
	// connect (for envd's token), and a file uploaded to envd.
	e2b := func(method, url string, hdr http.Header, body string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	apiKey := http.Header{"X-Api-Key": {tok1}, "Content-Type": {"application/json"}}
	for _, c := range []struct{ path, body string }{{"timeout", `{"timeout":600}`}, {"refreshes", `{"duration":600}`}} {
		if st, body := e2b("POST", urlB+"/compat/e2b/sandboxes/"+onA.ID+"/"+c.path, apiKey, c.body); st != http.StatusNoContent {
			t.Fatalf("E2B %s of a's sandbox through b: %d %s", c.path, st, body)
		}
	}
	st, body := e2b("POST", urlB+"/compat/e2b/sandboxes/"+onA.ID+"/connect", apiKey, `{"timeout":600}`)
	var conn struct {
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if st/100 != 2 || json.Unmarshal(body, &conn) != nil || conn.EnvdAccessToken == "" {
		t.Fatalf("E2B connect to a's sandbox through b: %d %s", st, body)
	}
	envdHdr := http.Header{"E2b-Sandbox-Id": {onA.ID}, "E2b-Sandbox-Port": {"49983"},
		"X-Access-Token": {conn.EnvdAccessToken}, "Content-Type": {"application/octet-stream"}}
	if st, body := e2b("POST", urlB+"/files?path=/tmp/e2b-upload", envdHdr, "uploaded through b\n"); st != http.StatusOK {
		t.Fatalf("envd upload to a's sandbox through b: %d %s", st, body)
	}
	if f, err := sb.ReadFile(ctx, "/tmp/e2b-upload"); err != nil {
		t.Fatalf("read the envd upload through b: %v", err)
	} else {
		data, _ := io.ReadAll(f)
		f.Close()
		if string(data) != "uploaded through b\n" {
			t.Fatalf("the envd upload through b reads %q", data)
		}
	}

	// The Vercel layer: a session made on a, run a command in through b.
	vercel := func(url, method, path, body string) (int, []byte) {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		req, _ := http.NewRequestWithContext(ctx, method, url+"/compat/vercel"+path+sep+"teamId="+team1.ID, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok1)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	st, body = vercel(urlA, "POST", "/v1/sandboxes", `{"projectId":"prj_replicas"}`)
	var created struct {
		Sandbox struct{ ID string } `json:"sandbox"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &created) != nil || created.Sandbox.ID == "" {
		t.Fatalf("Vercel create on a: %d %s", st, body)
	}
	vid := created.Sandbox.ID
	if st, body := vercel(urlB, "GET", "/v1/sandboxes/"+vid, ""); st != http.StatusOK || !strings.Contains(string(body), vid) {
		t.Fatalf("Vercel get of a's session through b: %d %s", st, body)
	}
	if st, body := vercel(urlB, "POST", "/v1/sandboxes/"+vid+"/cmd", `{"command":"true"}`); st != http.StatusOK {
		t.Fatalf("Vercel command in a's session through b: %d %s", st, body)
	}
	if st, body := vercel(urlB, "POST", "/v1/sandboxes/"+vid+"/stop", `{}`); st != http.StatusOK {
		t.Fatalf("Vercel stop of a's session through b: %d %s", st, body)
	}
	// A v2 sandbox made on a, updated (its handler decodes the body before
	// it looks the sandbox up) and deleted by name through b.
	const named = "/v2/sandboxes/named-on-a?projectId=prj_replicas"
	if st, body := vercel(urlA, "POST", "/v2/sandboxes", `{"projectId":"prj_replicas","name":"named-on-a"}`); st != http.StatusOK {
		t.Fatalf("Vercel v2 create on a: %d %s", st, body)
	}
	if st, body := vercel(urlB, "PATCH", named, `{"tags":{"via":"replica-b"}}`); st != http.StatusOK || !strings.Contains(string(body), "replica-b") {
		t.Fatalf("Vercel update by name of a's sandbox through b: %d %s", st, body)
	}
	if st, body := vercel(urlB, "DELETE", named, ""); st != http.StatusOK {
		t.Fatalf("Vercel delete by name of a's sandbox through b: %d %s", st, body)
	}
	if st, body := vercel(urlA, "GET", named, ""); st != http.StatusNotFound {
		t.Fatalf("Vercel get on a after the delete through b: %d %s, want 404", st, body)
	}

	// Stopped and deleted through b.
	if err := sb.Stop(ctx); err != nil || sb.Status != api.StatusStopped {
		t.Fatalf("stop through b: %v (%s)", err, sb.Status)
	}
	if err := sb.Delete(ctx); err != nil {
		t.Fatalf("delete through b: %v", err)
	}
	if err := a1.Sandbox(onA.ID).Refresh(ctx); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("a after the delete through b: %v, want not found", err)
	}

	// a dies with a sandbox: b answers "come back", not "not found".
	left, err := a1.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pa.kill(t)
	pa.waitKilled(t, "")
	// Errors, not fatal, from here until a is back: a dead a leaves its
	// sandboxes running until it restarts and deletes them.
	// Before a's lease lapses b forwards to a dead address, after it b
	// knows a is gone: 503 by the same code both ways, with Retry-After.
	for _, after := range []time.Duration{0, 3 * time.Second} {
		time.Sleep(after)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, urlB+"/api/v1/sandboxes/"+left.ID, nil)
		req.Header.Set("Authorization", "Bearer "+tok1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.Error
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			json.Unmarshal(body, &e) != nil || e.Error.Code != "sandbox_replica_unavailable" {
			t.Errorf("b on a dead replica's sandbox %s after the kill: %d, Retry-After %q, %s",
				after, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		// The E2B layer answers in E2B's shape ({"code","message"}), the
		// failed forward included, which the E2B SDKs read.
		est, ebody := e2bGet(urlB, left.ID)
		var eb struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if est != http.StatusServiceUnavailable || json.Unmarshal([]byte(ebody), &eb) != nil || eb.Code != est || eb.Message == "" {
			t.Errorf("E2B get through b of a dead replica's sandbox %s after the kill: %d %s, want 503 in E2B's shape", after, est, ebody)
		}
	}
	if err := b2.Sandbox(left.ID).Refresh(ctx); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("team two on a dead replica's sandbox through b: %v, want not found", err)
	}
	if _, err := b1.Sandbox(left.ID).RunCommand(ctx, api.CommandRequest{Cmd: "true"}); !errors.Is(err, sdk.ErrUnavailable) {
		t.Errorf("a command in a dead replica's sandbox through b: %v, want 503", err)
	}

	// a comes back under its name, re-adopts its sandbox, which b serves
	// again; then everything goes.
	ra := startServe(t, bin, dirA, addrA, flags("node-a", addrA)...)
	waitReady(t, urlA, ra)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := b1.Sandbox(left.ID).Delete(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delete a's sandbox through b after a's restart: %v", err)
		}
	}
	if err := b1.Sandbox(onB.ID).Delete(ctx); err != nil {
		t.Fatal(err)
	}
	ra.stop()
}

// TestReplicaImagesShared runs two `paddock serve` replicas on one MongoDB
// (FerretDB), each with its own image store: an image a team pulls through
// a from a registry on 127.0.0.1 starts a sandbox created through b, which
// pulls it by digest first; another team cannot use the ref on b; an image
// imported through a is refused by b naming a; a ref removed through b is
// gone on a too.
func TestReplicaImagesShared(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	uri, db := mongotest.URI(t), mongotest.NewDB()
	start := func(node string) (*serveProc, string, string) {
		dir, addr := newDataDir(t), freeAddr(t)
		// No sandbox networking: two replicas on one host would share its
		// address pool. The registry is on loopback.
		p := startServe(t, bin, dir, addr, "--no-network", "--registry-allow-private", "--mongodb-uri", uri,
			"--mongodb-database", db, "--node-name", node, "--advertise-url", "http://"+addr)
		waitReady(t, "http://"+addr, p)
		return p, dir, "http://" + addr
	}
	pa, dirA, urlA := start("node-a")
	_, _, urlB := start("node-b")
	_, admin := pa.clientConfig(t, dirA)

	ctx := ctxFor(t, 3*time.Minute)
	adm := sdk.New(urlA, admin)
	teamToken := func(name string) string {
		team, err := adm.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := adm.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: name, Role: "member"})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Secret
	}
	tok1, tok2 := teamToken("one"), teamToken("two")
	a1, b1, b2 := sdk.New(urlA, tok1), sdk.New(urlB, tok1), sdk.New(urlB, tok2)

	img := busyboxImage(t)
	ref := imagetest.Registry(t) + "/e2e/busybox:shared"
	imagetest.Push(t, ref, img)
	pulled, err := a1.PullImage(ctx, api.PullImageRequest{Ref: ref}, nil)
	if err != nil {
		t.Fatalf("pull through a: %v", err)
	}
	if _, err := b1.GetImage(ctx, ref); !sdk.IsCode(err, "image_not_found") {
		t.Fatalf("b's own store before the create: %v, want image_not_found", err)
	}

	sb, err := b1.Create(ctx, api.CreateSandboxRequest{Image: ref})
	if err != nil {
		t.Fatalf("create through b from an image pulled through a: %v", err)
	}
	t.Cleanup(func() { _ = sb.Delete(context.Background()) })
	if sb.ImageDigest != pulled.Digest {
		t.Errorf("sandbox digest %s, want %s", sb.ImageDigest, pulled.Digest)
	}
	if out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $GREETING; cat /added"}}); code != 0 || out != "from-image\nadded\n" {
		t.Errorf("in b's sandbox: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got, err := b1.GetImage(ctx, ref); err != nil || got.Digest != pulled.Digest {
		t.Errorf("b's own store after the create: %+v, %v", got, err)
	}

	// Another team: not found on b, as on a.
	if _, err := b2.Create(ctx, api.CreateSandboxRequest{Image: ref}); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("team two creating from team one's ref through b: %v, want image_not_found", err)
	}

	// Imported through a: b says where it is.
	var archive bytes.Buffer
	tag, err := name.NewTag("example.com/e2e/imported:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.Write(tag, img, &archive); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.ImportImage(ctx, &archive); err != nil {
		t.Fatalf("import through a: %v", err)
	}
	_, err = b1.Create(ctx, api.CreateSandboxRequest{Image: tag.Name()})
	if !sdk.IsCode(err, "image_on_other_replica") || !strings.Contains(err.Error(), "node-a") {
		t.Errorf("create through b from an image imported through a: %v, want image_on_other_replica naming node-a", err)
	}

	// Removed through b: a no longer creates from it.
	if err := sb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b1.RemoveImage(ctx, ref); err != nil {
		t.Fatalf("remove through b: %v", err)
	}
	if _, err := a1.Create(ctx, api.CreateSandboxRequest{Image: ref}); !sdk.IsCode(err, "image_not_found") {
		t.Errorf("create through a from a ref removed through b: %v, want image_not_found", err)
	}
}

// TestReplicaSnapshotsShared: two paddock serve (runc) on FerretDB with
// their own image stores and one loopback snapshot registry. A snapshot a
// team takes through a of a sandbox of a registry image is pushed, and a
// sandbox created from it through b (pulled there by digest) has its
// files; another team does not find it through b; a snapshot of a
// host-image sandbox, kept on a's host, is snapshot_on_other_replica
// through b naming a; both replicas list both, another team neither; one
// deleted through b is gone on a, from its list too.
func TestReplicaSnapshotsShared(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	uri, db := mongotest.URI(t), mongotest.NewDB()
	reg := imagetest.Registry(t)
	start := func(node string) (*serveProc, string, string) {
		dir, addr := newDataDir(t), freeAddr(t)
		p := startServe(t, bin, dir, addr, "--no-network", "--registry-allow-private", "--mongodb-uri", uri,
			"--mongodb-database", db, "--node-name", node, "--advertise-url", "http://"+addr,
			"--snapshot-registry", reg+"/e2e/snaps")
		waitReady(t, "http://"+addr, p)
		return p, dir, "http://" + addr
	}
	pa, dirA, urlA := start("node-a")
	_, _, urlB := start("node-b")
	_, admin := pa.clientConfig(t, dirA)

	ctx := ctxFor(t, 3*time.Minute)
	adm := sdk.New(urlA, admin)
	teamToken := func(name string) string {
		team, err := adm.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := adm.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, Name: name, Role: "member"})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Secret
	}
	tok1, tok2 := teamToken("one"), teamToken("two")
	a1, b1, b2 := sdk.New(urlA, tok1), sdk.New(urlB, tok1), sdk.New(urlB, tok2)

	ref := reg + "/e2e/busybox:snap"
	imagetest.Push(t, ref, busyboxImage(t))
	if _, err := a1.PullImage(ctx, api.PullImageRequest{Ref: ref}, nil); err != nil {
		t.Fatalf("pull through a: %v", err)
	}
	src, err := a1.Create(ctx, api.CreateSandboxRequest{Image: ref})
	if err != nil {
		t.Fatalf("create through a: %v", err)
	}
	t.Cleanup(func() { _ = src.Delete(context.Background()) })
	if _, errOut, code := run(t, src, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo snapped > /home.txt"}, Sudo: true}); code != 0 {
		t.Fatalf("write in a's sandbox: exit %d, %s", code, errOut)
	}
	snap, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot through a: %v", err)
	}
	if !strings.HasPrefix(snap.RegistryImage, reg+"/e2e/snaps@sha256:") {
		t.Fatalf("a runc snapshot with --snapshot-registry: registryImage %q, want pushed", snap.RegistryImage)
	}

	if got, err := b1.GetSnapshot(ctx, snap.ID); err != nil || got.SourceSandboxID != src.ID {
		t.Errorf("GET through b: %+v, %v", got, err)
	}
	sb, err := b1.Create(ctx, api.CreateSandboxRequest{Snapshot: snap.ID})
	if err != nil {
		t.Fatalf("create through b from a snapshot taken through a: %v", err)
	}
	t.Cleanup(func() { _ = sb.Delete(context.Background()) })
	if out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "cat", Args: []string{"/home.txt"}}); code != 0 || out != "snapped\n" {
		t.Errorf("in b's sandbox: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Another team: not found through b, as through a.
	if _, err := b2.Create(ctx, api.CreateSandboxRequest{Snapshot: snap.ID}); !sdk.IsCode(err, "snapshot_not_found") {
		t.Errorf("team two creating from team one's snapshot through b: %v, want snapshot_not_found", err)
	}
	if _, err := b2.GetSnapshot(ctx, snap.ID); !sdk.IsCode(err, "snapshot_not_found") {
		t.Errorf("team two getting team one's snapshot through b: %v, want snapshot_not_found", err)
	}
	if err := b2.DeleteSnapshot(ctx, snap.ID); !sdk.IsCode(err, "snapshot_not_found") {
		t.Errorf("team two deleting team one's snapshot through b: %v, want snapshot_not_found", err)
	}

	// The host image is in no registry: its snapshot stays on a.
	host, err := a1.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Delete(context.Background()) })
	local, err := host.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot of a host-image sandbox through a: %v", err)
	}
	if local.RegistryImage != "" {
		t.Errorf("a host-image snapshot was pushed: %q", local.RegistryImage)
	}
	_, err = b1.Create(ctx, api.CreateSandboxRequest{Snapshot: local.ID})
	if !sdk.IsCode(err, "snapshot_on_other_replica") || !strings.Contains(err.Error(), "node-a") {
		t.Errorf("create through b from a snapshot kept on a: %v, want snapshot_on_other_replica naming node-a", err)
	}

	// Both replicas list the team's two (b never pulled the second);
	// another team's list has neither.
	listed := func(c *sdk.Client) []string {
		t.Helper()
		snaps, err := c.ListSnapshots(ctx)
		if err != nil {
			t.Fatalf("list snapshots: %v", err)
		}
		ids := []string{}
		for _, s := range snaps {
			ids = append(ids, s.ID)
		}
		slices.Sort(ids)
		return ids
	}
	both := slices.Sorted(slices.Values([]string{snap.ID, local.ID}))
	for name, c := range map[string]*sdk.Client{"a": a1, "b": b1} {
		if got := listed(c); !slices.Equal(got, both) {
			t.Errorf("team one's snapshots through %s: %v, want %v", name, got, both)
		}
	}
	if got := listed(b2); len(got) != 0 {
		t.Errorf("team two's snapshots through b: %v, want none", got)
	}

	// Deleted through b: a no longer creates from it.
	if err := sb.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b1.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatalf("delete through b: %v", err)
	}
	if _, err := a1.Create(ctx, api.CreateSandboxRequest{Snapshot: snap.ID}); !sdk.IsCode(err, "snapshot_not_found") {
		t.Errorf("create through a from a snapshot deleted through b: %v, want snapshot_not_found", err)
	}
	if got := listed(a1); !slices.Equal(got, []string{local.ID}) {
		t.Errorf("team one's snapshots through a after the delete through b: %v, want %v", got, []string{local.ID})
	}
}
