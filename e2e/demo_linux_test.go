package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// demoPool is the sandbox network of TestDemo's server: apart from the
// other tests' pools, so a leftover from one never collides with another.
const demoPool = "10.213.252.0/24"

// TestDemo is the first-run experience end to end: `paddock serve` prints
// the quickstart, and `paddock demo` builds the goose stand-in, imports it,
// runs it as a project with real sandboxes and the real store, and gets
// the streamed echo back through the app proxy.
func TestDemo(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	dataDir := newDataDir(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	// A second start on the same data dir is a paddock restart.
	var srv *serveProc
	serve := func() { srv = startServe(t, bin, dataDir, addr, "--network-pool", demoPool) }
	serve()
	url, token := srv.clientConfig(t, dataDir)
	cc := struct{ URL, Token string }{url, token}
	// The quickstart appears on the first start: where, the token, the demo.
	first := srv.waitOutput(t, "Elsewhere: export PADDOCK_URL=")
	for _, want := range []string{cc.URL, cc.Token, "paddock demo"} {
		if !strings.Contains(first, want) {
			t.Errorf("serve's first output lacks %q:\n%s", want, first)
		}
	}

	// The demo builds the stand-in from this source tree.
	cli := cliRunner(t, bin, root, append(os.Environ(), "PADDOCK_URL="+cc.URL, "PADDOCK_TOKEN="+cc.Token))

	out, errOut, code := cli(5*time.Minute, "demo")
	if code != 0 {
		t.Fatalf("paddock demo exited %d\nstdout:\n%s\nstderr:\n%s\nserve:\n%s", code, out, errOut, srv.log.String())
	}
	for _, want := range []string{"ready", "goose: echo: hello", "/api/v1/projects/", "paddock project deactivate demo"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("paddock demo:\n%s", out)

	// Through the app proxy by hand: whatever X-Secret-Key the client
	// sends, the app gets the project's own (else it would answer 401).
	pid := projectID(t, out)
	appGetAs := func(token, path string, header ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", cc.URL+"/api/v1/projects/"+pid+"/app"+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}
	appGet := func(path string, header ...string) (int, string, http.Header) {
		t.Helper()
		return appGetAs(cc.Token, path, header...)
	}
	if status, body, _ := appGet("/sessions", "X-Secret-Key", "chosen-by-the-client"); status != 200 || !strings.Contains(body, `"message_count":2`) {
		t.Errorf("GET sessions with a client's X-Secret-Key: %d %s", status, body)
	}

	// Another team's member cannot tell the project exists.
	team, errOut, code := cli(time.Minute, "team", "create", "other")
	if code != 0 {
		t.Fatalf("team create: %d %s", code, errOut)
	}
	other, errOut, code := cli(time.Minute, "token", "create", "--team", strings.TrimSpace(team), "--role", "member", "someone")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errOut)
	}
	if status, body, _ := appGetAs(strings.TrimSpace(other), "/sessions"); status != 404 || !strings.Contains(body, "project_not_found") {
		t.Errorf("another team's GET through the app proxy: %d %s", status, body)
	}

	out, errOut, code = cli(time.Minute, "project", "ls")
	if code != 0 || !strings.Contains(out, "demo") || !strings.Contains(out, "ready") {
		t.Errorf("project ls: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = cli(2*time.Minute, "project", "deactivate", "demo"); code != 0 || !strings.Contains(out, "stopped") {
		t.Errorf("project deactivate: %d %q %q", code, out, errOut)
	}
	if status, body, h := appGet("/sessions"); status != 503 || h.Get("X-Paddock-Error") != "project_not_active" {
		t.Errorf("app of a deactivated project: %d %s", status, body)
	}

	// A restart keeps the project, its activations and its saved state: the
	// next activation finds the demo's session with both its messages.
	srv.stop()
	serve()
	waitHealthy(t, cc.URL)
	if out, errOut, code = cli(time.Minute, "project", "ls"); code != 0 || !strings.Contains(out, "demo") {
		t.Errorf("project ls after a restart: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = cli(3*time.Minute, "project", "activate", "demo"); code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("project activate after a restart: %d %q %q\n%s", code, out, errOut, srv.log.String())
	}
	if status, body, _ := appGet("/sessions"); status != 200 || !strings.Contains(body, `"message_count":2`) {
		t.Errorf("sessions after a restart and reactivation: %d %s", status, body)
	}
	var acts struct {
		Activations []struct{ State string } `json:"activations"`
	}
	if status, body := apiGet(t, cc.URL, cc.Token, "/api/v1/projects/"+pid+"/activations"); status != 200 || json.Unmarshal([]byte(body), &acts) != nil || len(acts.Activations) < 2 {
		t.Errorf("activations after a restart: %d %s", status, body)
	}

	if _, errOut, code = cli(2*time.Minute, "project", "rm", "demo"); code != 0 {
		t.Errorf("project rm: %d %q", code, errOut)
	}
	if _, errOut, code = cli(time.Minute, "project", "get", "demo"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("project get after rm: %d %q", code, errOut)
	}
	// Images and sandboxes the demo left stop with the server; the data
	// dir's leak check then finds nothing mounted or running.
	srv.stop()
}

// waitHealthy waits until a restarted server answers.
func waitHealthy(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; {
		if resp, err := http.Get(url + "/api/v1/sandboxes"); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server at %s did not come back", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apiGet is an authenticated GET of the API.
func apiGet(t *testing.T, base, token, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// projectID finds the project id in the demo's output ("project demo: <id> (created)").
func projectID(t *testing.T, demoOut string) string {
	t.Helper()
	m := regexp.MustCompile(`project \S+: (prj-[a-z0-9-]+)`).FindStringSubmatch(demoOut)
	if m == nil {
		t.Fatalf("no project id in the demo's output:\n%s", demoOut)
	}
	return m[1]
}
