package e2e

import (
	"bufio"
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/store"
)

// e2bPool is the address pool of the E2B SDK test, apart from the others'.
var e2bPool = netip.MustParsePrefix("10.213.241.0/24")

// TestE2BSDK runs the unmodified e2b JS SDK (pinned in the nodetest
// package) against paddock's E2B layer (control plane and envd data
// plane) on the real stack, served over TLS
// by the development CA that Node trusts through NODE_EXTRA_CA_CERTS, with
// keys of two teams made as an operator would (paddock token create
// --e2b). The Node suite (node --test) is the test; its output goes to
// t.Log.
func TestE2BSDK(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the E2B SDK suite runs on Node.js")
	}
	if v, err := exec.Command(nodeBin, "-p", "process.versions.node.split('.')[0]").Output(); err != nil {
		t.Fatalf("node version: %v", err)
	} else if major, _ := strconv.Atoi(strings.TrimSpace(string(v))); major < 20 {
		t.Skipf("node %s is older than 20, which the e2b SDK requires", strings.TrimSpace(string(v)))
	}
	dir, err := filepath.Abs(filepath.Join("..", "internal", "server", "compat", "e2b", "nodetest"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "e2b", "package.json")); err != nil {
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

	s := startStack(t, newDataDir(t), stackOptions{network: e2bPool, tls: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	keyOne := e2bKey(ctx, t, s, "e2b-one")
	keyTwo := e2bKey(ctx, t, s, "e2b-two")

	// Every *.test.mjs of the suite (node's own search): the control plane,
	// the processes and the files. E2B_SANDBOX_URL sends envd calls to
	// paddock's own address with the E2b-Sandbox-Id header, so the SDK needs
	// no DNS for 49983-<id>.paddock.localhost.
	cmd := exec.CommandContext(ctx, nodeBin, "--test", "--test-reporter=spec")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "PADDOCK_URL="+s.url,
		"E2B_API_URL="+s.url+"/compat/e2b", "E2B_DOMAIN=paddock.localhost", "E2B_SANDBOX_URL="+s.url,
		"E2B_API_KEY="+keyOne, "E2B_API_KEY_2="+keyTwo,
		"NODE_EXTRA_CA_CERTS="+s.d.DevCAPath())
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when the pipe closes below
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	pw.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("the E2B SDK suite failed: %v (its output is above)", err)
	}
}

// e2bKey makes a paddock team and a member key of it in E2B's spelling.
func e2bKey(ctx context.Context, t *testing.T, s *stack, name string) string {
	t.Helper()
	team, err := s.auth.CreateTeam(ctx, name)
	if err != nil {
		t.Fatalf("create team %s: %v", name, err)
	}
	key, _, err := s.auth.CreateTokenFormat(ctx, auth.FormatE2B, team.ID, "", name+"-sdk", store.RoleMember, 0)
	if err != nil {
		t.Fatalf("create an E2B key of %s: %v", name, err)
	}
	return key
}
