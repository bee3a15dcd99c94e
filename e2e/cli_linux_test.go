package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// hostSh runs a shell snippet on the host (test setup only).
func hostSh(t *testing.T, script string) (string, int) {
	t.Helper()
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	return string(out), 0
}

// buildPaddock builds the paddock, paddock-agent and paddock-init binaries once per test
// binary, as a user following the README would.
func buildPaddock(t *testing.T) (paddock string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go tool to build the binaries")
	}
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	build := func(out, pkg string, env ...string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	build("paddock", "./cmd/paddock")
	build("paddock-agent", "./cmd/paddock-agent", "CGO_ENABLED=0")
	build("paddock-init", "./cmd/paddock-init")
	return filepath.Join(dir, "paddock")
}

// TestCLI runs `paddock serve` as a real process and drives it with the CLI
// the way the README tells a new user to.
func TestCLI(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	dataDir := newDataDir(t)

	srv := startServe(t, bin, dataDir, freeAddr(t), "--no-network")
	stop := srv.stop
	// The CLI finds the server through client.json in the data dir.
	url, token := srv.clientConfig(t, dataDir)
	run := cliRunner(t, bin, "", append(os.Environ(), "PADDOCK_URL="+url, "PADDOCK_TOKEN="+token))
	cli := func(args ...string) (string, string, int) { return run(time.Minute, args...) }

	srv.waitOutput(t, token) // the first start prints the admin token
	out, errOut, code := cli("sandbox", "create")
	if code != 0 {
		t.Fatalf("sandbox create: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	out, errOut, code = cli("sandbox", "exec", id, "--", "sh", "-c", "echo hi; id -u")
	if code != 0 || out != "hi\n1000\n" {
		t.Fatalf("sandbox exec: %q (stderr %q) exit %d", out, errOut, code)
	}
	if _, _, code = cli("sandbox", "exec", id, "--", "sh", "-c", "echo oops >&2; exit 3"); code != 3 {
		t.Errorf("exec of a failing command returned %d, want 3", code)
	}
	out, _, _ = cli("sandbox", "ls")
	if !strings.Contains(out, id) {
		t.Errorf("sandbox ls lacks %s:\n%s", id, out)
	}
	local := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(local, []byte("copied\n"), 0o640)
	if _, errOut, code = cli("sandbox", "cp", local, id+":/home/user/in.txt"); code != 0 {
		t.Fatalf("cp in: %s", errOut)
	}
	back := filepath.Join(t.TempDir(), "out.txt")
	if _, errOut, code = cli("sandbox", "cp", id+":/home/user/in.txt", back); code != 0 {
		t.Fatalf("cp out: %s", errOut)
	}
	if data, _ := os.ReadFile(back); string(data) != "copied\n" {
		t.Errorf("round trip through cp gave %q", data)
	}
	if _, errOut, code = cli("sandbox", "stop", id); code != 0 {
		t.Errorf("stop: %s", errOut)
	}
	if _, errOut, code = cli("sandbox", "rm", id); code != 0 {
		t.Errorf("rm: %s", errOut)
	}
	out, _, _ = cli("sandbox", "ls")
	if strings.Contains(out, id) {
		t.Errorf("sandbox ls still lists %s after rm", id)
	}

	// An OCI layout directory goes up as a docker archive; a sandbox runs
	// from the image it names.
	dir := t.TempDir()
	const ref = "e2e.local/cli/busybox:1"
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := busyboxImage(t)
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code = cli("image", "import", dir); code != 0 || !strings.HasPrefix(out, ref+"@sha256:") {
		t.Fatalf("image import of a layout: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = cli("sandbox", "create", "--image", ref); code != 0 {
		t.Fatalf("sandbox create --image %s: %d %s", ref, code, errOut)
	}
	id = strings.TrimSpace(out)
	if out, errOut, code = cli("sandbox", "exec", id, "--", "cat", "/added"); code != 0 || out != "added\n" {
		t.Errorf("exec in the imported image: %d %q %q", code, out, errOut)
	}
	if _, errOut, code = cli("sandbox", "rm", id); code != 0 {
		t.Errorf("rm: %s", errOut)
	}
	stop() // fails the test if serve logged an error
}

// TestCLITLS runs `paddock serve --tls-dev-ca` as a real process: the CLI
// on the same machine reaches it over HTTPS with nothing but its data dir
// (client.json names the CA), issues an E2B key, and pauses and resumes a
// sandbox.
func TestCLITLS(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)
	dataDir := newDataDir(t)
	srv := startServe(t, bin, dataDir, freeAddr(t), "--no-network", "--tls-dev-ca", "--domain", "paddock.localhost")
	url, _ := srv.clientConfig(t, dataDir)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("serve --tls-dev-ca: client URL %q", url)
	}
	srv.waitOutput(t, filepath.Join(dataDir, "tls", "dev-ca.pem"))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PADDOCK_URL=") && !strings.HasPrefix(kv, "PADDOCK_TOKEN=") && !strings.HasPrefix(kv, "SSL_CERT_FILE=") {
			env = append(env, kv)
		}
	}
	run := cliRunner(t, bin, "", append(env, "PADDOCK_DATA_DIR="+dataDir))
	cli := func(args ...string) (string, string, int) { return run(time.Minute, args...) }

	key, errOut, code := cli("token", "create", "--e2b", "sdk")
	if code != 0 || !regexp.MustCompile(`^e2b_[0-9a-f]{40}\n$`).MatchString(key) {
		t.Fatalf("token create --e2b: %q %s (exit %d)", key, errOut, code)
	}
	out, errOut, code := cli("sandbox", "create")
	if code != 0 {
		t.Fatalf("sandbox create over TLS: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if _, errOut, code := cli("sandbox", "exec", id, "--", "sh", "-c", "echo kept > ~/f"); code != 0 {
		t.Fatalf("exec: %s", errOut)
	}
	if _, errOut, code := cli("sandbox", "pause", id); code != 0 {
		t.Fatalf("pause: %s", errOut)
	}
	if out, _, _ := cli("sandbox", "ls", "--state", "paused"); !strings.Contains(out, id) {
		t.Errorf("ls --state paused lacks %s:\n%s", id, out)
	}
	if _, errOut, code := cli("sandbox", "resume", "--timeout", "2m", id); code != 0 {
		t.Fatalf("resume: %s", errOut)
	}
	if out, errOut, code := cli("sandbox", "exec", id, "--", "cat", "/home/user/f"); code != 0 || out != "kept\n" {
		t.Errorf("after resume: %q %s (exit %d)", out, errOut, code)
	}
	if _, errOut, code := cli("sandbox", "rm", id); code != 0 {
		t.Errorf("rm: %s", errOut)
	}
	srv.stop()
}
