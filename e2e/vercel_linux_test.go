package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// vercelPool is the address pool of the Vercel SDK test, apart from the
// other networked tests' so that they never share a veth name or address.
var vercelPool = netip.MustParsePrefix("10.213.251.0/24")

// TestVercelSDK runs the unmodified @vercel/sandbox SDKs (3.x and 1.x,
// pinned in the nodetest package) against paddock's Vercel compatibility
// layer, mounted on the real stack with networking and the port proxy.
// The Node suite (node --test) is the test; its output goes to t.Log.
func TestVercelSDK(t *testing.T) { testVercelSDK(t, stackOptions{}, nil) }

// TestVercelSDKKubernetes runs the whole suite with the sandboxes as Pods:
// snapshots (of the host image too) pushed to the test registry and run
// as Pods, egress changed in place, network bytes from the Pod's agent.
func TestVercelSDKKubernetes(t *testing.T) {
	testVercelSDK(t, onKubernetes(t), nil)
}

// testVercelSDK runs the suite on a stack with opts, but for the checks
// named in skips (full name: reason), which Node's test runner reports as
// skipped with their reason (e2e/testdata/nodeskip).
func testVercelSDK(t *testing.T, opts stackOptions, skips map[string]string) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the Vercel SDK suite runs on Node.js")
	}
	if v, err := exec.Command(nodeBin, "-p", "process.versions.node.split('.')[0]").Output(); err != nil {
		t.Fatalf("node version: %v", err)
	} else if major, _ := strconv.Atoi(strings.TrimSpace(string(v))); major < 20 {
		t.Skipf("node %s is older than 20, which @vercel/sandbox's dependencies require", strings.TrimSpace(string(v)))
	}
	dir, err := filepath.Abs(filepath.Join("..", "internal", "server", "compat", "vercel", "nodetest"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "sandbox3", "package.json")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Skip("npm is not installed and " + dir + "/node_modules is missing: run npm ci there")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		ci := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		ci.Dir = dir
		if out, err := ci.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}

	// The daemon serves the compat layer beside the API, as `paddock serve` does.
	opts.network = vercelPool
	s := startStack(t, newDataDir(t), opts)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// The suite runs as a member of one team; a member of a second team
	// must not see its sandboxes. Both are made as an operator would.
	one, tokenOne := vercelTeam(ctx, t, s, "vercel-one")
	two, tokenTwo := vercelTeam(ctx, t, s, "vercel-two")
	// Sources on 127.0.0.1 (the stack allows private addresses, as serve
	// --source-allow-private): a git repository, the same behind basic
	// auth, and a tarball.
	const gitPassword = "tok-vercel-7c1e"
	var gitEnv []string
	if _, err := exec.LookPath("git"); err == nil { // without git, the suite skips the git sources and says why
		pub, priv := serveGitRepo(t, ""), serveGitRepo(t, gitPassword)
		gitEnv = []string{"PADDOCK_GIT_URL=" + pub.url, "PADDOCK_GIT_PRIVATE_URL=" + priv.url, "PADDOCK_GIT_PASSWORD=" + gitPassword}
	}
	tarball := serveBytes(t, map[string][]byte{"/src.tgz": tgz(t,
		tar.Header{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "src/hello.txt", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "from a tarball\n"})}) + "/src.tgz"

	args := []string{"--test", "--test-reporter=spec", "sandbox3.test.mjs", "sandbox1.test.mjs", "teams.test.mjs"}
	env := append(os.Environ(), "PADDOCK_URL="+s.http.URL, "NO_COLOR=1",
		"PADDOCK_TOKEN="+tokenOne, "PADDOCK_TEAM="+one.ID, "PADDOCK_TEAM_NAME="+one.Name,
		"PADDOCK_TOKEN_2="+tokenTwo, "PADDOCK_TEAM_2="+two.ID,
		"PADDOCK_TARBALL_URL="+tarball,
		// The suite's few checks that differ by runtime read it (a Pod's
		// egress names no domain).
		"PADDOCK_RUNTIME="+opts.runtime)
	env = append(env, gitEnv...)
	if len(skips) > 0 {
		shim, err := filepath.Abs(filepath.Join("testdata", "nodeskip", "register.mjs"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(skips)
		if err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--import", shim}, args...)
		env = append(env, "PADDOCK_NODE_SKIP="+string(js))
	}
	cmd := exec.CommandContext(ctx, nodeBin, args...)
	cmd.Dir, cmd.Env = dir, env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	var wg sync.WaitGroup
	var skipped []string // the spec reporter's lines of skipped tests
	wg.Add(1)
	go func() { // owned: ends when the pipe closes below
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
			if strings.Contains(sc.Text(), "\uFE63 ") {
				skipped = append(skipped, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	pw.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("the Vercel SDK suite failed: %v (its output is above)", err)
	}
	// A renamed check would run again and fail, but a check that no
	// longer exists would leave its skip in the list for good.
	for name, why := range skips {
		own := name
		if i := strings.LastIndex(name, " > "); i >= 0 {
			own = name[i+len(" > "):]
		}
		if !slices.ContainsFunc(skipped, func(l string) bool {
			return strings.Contains(l, "\uFE63 "+own+" (") && strings.HasSuffix(l, "# "+why)
		}) {
			t.Errorf("the skip of %q matched no check of the suite: update the list", name)
		}
	}
}

// vercelTeam makes a paddock team and a member token of it.
func vercelTeam(ctx context.Context, t *testing.T, s *stack, name string) (store.Team, string) {
	t.Helper()
	team, err := s.auth.CreateTeam(ctx, name)
	if err != nil {
		t.Fatalf("create team %s: %v", name, err)
	}
	secret, _, err := s.auth.CreateToken(ctx, team.ID, "", name+"-member", store.RoleMember, 0)
	if err != nil {
		t.Fatalf("create a member token of %s: %v", name, err)
	}
	return team, secret
}

// TestVercelCommandInHistory: a command run through /compat/vercel is run
// by the same sandbox layer as the API's, so the API lists it while it
// runs (from the agent), the history holds it from its start, and once
// the sandbox stops the API lists it from the history: the one that
// finished with its exit, the one the stop killed as unknown.
func TestVercelCommandInHistory(t *testing.T) { testVercelCommandInHistory(t, stackOptions{}) }

// TestVercelCommandInHistoryKubernetes: the same with the sandbox a Pod.
func TestVercelCommandInHistoryKubernetes(t *testing.T) {
	testVercelCommandInHistory(t, onKubernetes(t))
}

func testVercelCommandInHistory(t *testing.T, opts stackOptions) {
	opts.network = netip.MustParsePrefix("10.213.245.0/24")
	s := startStack(t, newDataDir(t), opts)
	ctx := ctxFor(t, 2*time.Minute)
	team, token := vercelTeam(ctx, t, s, "vercel-history")
	vercel := func(method, path string, body any) []byte {
		t.Helper()
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(ctx, method, s.http.URL+"/compat/vercel"+path+"?teamId="+url.QueryEscape(team.ID), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s (%v)", method, path, resp.StatusCode, out, err)
		}
		return out
	}
	var created struct {
		Sandbox struct {
			ID string `json:"id"`
		} `json:"sandbox"`
	}
	if err := json.Unmarshal(vercel("POST", "/v1/sandboxes", map[string]any{"projectId": "prj_history"}), &created); err != nil {
		t.Fatal(err)
	}
	id := created.Sandbox.ID
	type wireCommand struct {
		Command struct {
			ID       string `json:"id"`
			ExitCode *int   `json:"exitCode"`
		} `json:"command"`
	}
	// A waited one (NDJSON: the started command, then the finished one)
	// and one that runs until the stop.
	lines := bytes.Split(bytes.TrimSpace(vercel("POST", "/v1/sandboxes/"+id+"/cmd",
		map[string]any{"command": "sh", "args": []string{"-c", "exit 3"}, "wait": true})), []byte("\n"))
	var waited wireCommand
	if err := json.Unmarshal(lines[len(lines)-1], &waited); err != nil || waited.Command.ExitCode == nil || *waited.Command.ExitCode != 3 {
		t.Fatalf("waited command: %s (%v)", lines[len(lines)-1], err)
	}
	var sleeper wireCommand
	if err := json.Unmarshal(vercel("POST", "/v1/sandboxes/"+id+"/cmd", map[string]any{"command": "sleep", "args": []string{"300"}}), &sleeper); err != nil {
		t.Fatal(err)
	}

	sb := sdk.New(s.http.URL, token).Sandbox(id)
	list := func() map[string]*sdk.Command {
		t.Helper()
		cmds, err := sb.Commands(ctx)
		if err != nil {
			t.Fatalf("list the commands through the API: %v", err)
		}
		out := map[string]*sdk.Command{}
		for _, c := range cmds {
			out[c.ID] = c
		}
		return out
	}
	live := list()
	if c := live[sleeper.Command.ID]; c == nil || c.Status != api.CommandRunning || c.Cmd != "sleep" {
		t.Errorf("while it runs the API lists %+v, want the sleep running", live)
	}
	if c := live[waited.Command.ID]; c == nil || c.ExitCodeOr(-1) != 3 {
		t.Errorf("while the sandbox runs the API lists %+v, want the waited command with exit 3", live)
	}
	// The history has both from their start, before any stop.
	recs, _, err := s.d.Store().ListCommands(ctx, id, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].ID != waited.Command.ID || recs[1].ID != sleeper.Command.ID || recs[1].TeamID != team.ID || recs[1].Cmd != "sleep" {
		t.Fatalf("the history of a running sandbox holds %+v, want both commands of team %s", recs, team.ID)
	}

	vercel("POST", "/v1/sandboxes/"+id+"/stop", nil)
	past := list()
	if c := past[waited.Command.ID]; c == nil || c.Status != api.CommandExited || c.ExitCodeOr(-1) != 3 {
		t.Errorf("after the stop the history lists %+v, want the waited command with exit 3", c)
	}
	if c := past[sleeper.Command.ID]; c == nil || c.Status != api.CommandUnknown || c.StartedAt.IsZero() {
		t.Errorf("after the stop the history lists %+v, want the sleep, its exit unknown", c)
	}
}
