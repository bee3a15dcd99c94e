package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// TestSandboxAPI walks every endpoint with a real sandbox.
func TestSandboxAPI(t *testing.T) { testSandboxAPI(t, stackOptions{}) }

// TestSandboxAPIKubernetes walks them with the sandboxes as Pods.
func TestSandboxAPIKubernetes(t *testing.T) { testSandboxAPI(t, onKubernetes(t)) }

func testSandboxAPI(t *testing.T, opts stackOptions) {
	s := startStack(t, newDataDir(t), opts)
	ctx := ctxFor(t, 3*time.Minute)

	sb := s.create(t, api.CreateSandboxRequest{
		Resources: api.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128},
		TimeoutMs: 60_000,
		Env:       map[string]string{"GREETING": "hello"},
	})
	if sb.Resources.MemoryMB != 256 || sb.ExpiresAt.IsZero() {
		t.Errorf("create answer: %+v", sb.Sandbox)
	}

	got, err := s.client.Get(ctx, sb.ID)
	if err != nil || got.ID != sb.ID || got.Status != api.StatusRunning {
		t.Fatalf("get: %+v, %v", got, err)
	}

	// The acceptance command: output and an unprivileged uid.
	out, code := sh(t, sb, "echo hi; id -u")
	if code != 0 || out != "hi\n1000\n" {
		t.Errorf("echo hi; id -u: %q exit %d", out, code)
	}
	// Sandbox env, request env, cwd, sudo.
	out, _, code = run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo $GREETING $EXTRA; pwd; id -u"},
		Env: map[string]string{"EXTRA": "world"}, Cwd: "/tmp", Sudo: true})
	if code != 0 || out != "hello world\n/tmp\n0\n" {
		t.Errorf("env/cwd/sudo: %q exit %d", out, code)
	}
	// Exit codes come back as they are.
	if _, code := sh(t, sb, "exit 7"); code != 7 {
		t.Errorf("exit 7 gave %d", code)
	}

	// Detached command, stdin, logs replay, kill, wait.
	cat, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "cat", Stdin: true, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	if cat.Status != api.CommandRunning {
		t.Errorf("detached command status %s", cat.Status)
	}
	if err := cat.Stdin(ctx, strings.NewReader("piped\n"), true); err != nil {
		t.Fatalf("stdin: %v", err)
	}
	if out, err := cat.Output(ctx, "stdout"); err != nil || out != "piped\n" {
		t.Errorf("cat output %q, %v", out, err)
	}
	sleeper, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Args: []string{"300"}, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Kill(ctx, "SIGTERM"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	done, err := sleeper.Wait(ctx)
	if err != nil || done.Status != api.CommandKilled || done.Signal == "" {
		t.Errorf("killed sleeper: %+v, %v", done, err)
	}
	cmds, err := sb.Commands(ctx)
	if err != nil || len(cmds) < 5 {
		t.Errorf("commands: %d, %v", len(cmds), err)
	}
	if c, err := sb.Command(ctx, sleeper.ID); err != nil || c.ID != sleeper.ID {
		t.Errorf("get command: %v", err)
	}
	// A finished command's log replays from the start with its exit line.
	var lines int
	var exit *api.Command
	for l, err := range cat.Logs(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		lines++
		exit = l.Exit
	}
	if exit == nil || exit.ExitCode == nil || *exit.ExitCode != 0 {
		t.Errorf("replayed logs: %d lines, exit %+v", lines, exit)
	}

	// Files: tar with modes, gzip, read back, mkdir.
	files := []sdk.File{
		{Path: "bin/tool", Content: []byte("#!/bin/sh\necho tool ran\n"), Mode: 0o755},
		{Path: "notes/secret.txt", Content: []byte("private"), Mode: 0o600},
	}
	if _, err := sb.WriteFiles(ctx, "/home/user/proj", files, sdk.Gzip()); err != nil {
		t.Fatalf("write files: %v", err)
	}
	out, code = sh(t, sb, "/home/user/proj/bin/tool; stat -c '%a %u' /home/user/proj/notes/secret.txt")
	if code != 0 || out != "tool ran\n600 1000\n" {
		t.Errorf("written files: %q exit %d", out, code)
	}
	f, err := sb.ReadFile(ctx, "/home/user/proj/bin/tool")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != string(files[0].Content) || f.Info.Mode != 0o755 {
		t.Errorf("read back %q mode %o", data, f.Info.Mode)
	}
	if err := sb.MkDir(ctx, "/home/user/a/b/c", false); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if out, _ := sh(t, sb, "stat -c '%F %u' /home/user/a/b/c"); out != "directory 1000\n" {
		t.Errorf("mkdir result %q", out)
	}

	// A server started inside shows up among the listening ports.
	if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "python3", Args: []string{"-m", "http.server", "3000"}, Detached: true}); err != nil {
		t.Fatal(err)
	}
	var seen []api.Port
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if seen, err = sb.Ports(ctx); err == nil && slices.ContainsFunc(seen, func(p api.Port) bool { return p.Port == 3000 }) {
			break
		}
	}
	if !slices.ContainsFunc(seen, func(p api.Port) bool { return p.Port == 3000 }) {
		t.Errorf("port 3000 not reported: %v", seen)
	}

	// Timeout extension, stats.
	before := sb.ExpiresAt
	if err := sb.ExtendTimeout(ctx, time.Minute); err != nil {
		t.Fatalf("extend: %v", err)
	}
	if d := sb.ExpiresAt.Sub(before); d != time.Minute {
		t.Errorf("extend moved expiry by %v", d)
	}
	st, err := sb.Stats(ctx)
	if err != nil || st.MemoryLimitBytes != 256<<20 || st.PIDs == 0 {
		t.Errorf("stats %+v, %v", st, err)
	}

	// List with a cursor: three sandboxes, two per page.
	s.create(t, api.CreateSandboxRequest{})
	s.create(t, api.CreateSandboxRequest{})
	page, err := s.client.ListPage(ctx, sdk.ListOptions{Limit: 2})
	if err != nil || len(page.Sandboxes) != 2 || page.NextCursor == "" {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	page2, err := s.client.ListPage(ctx, sdk.ListOptions{Limit: 2, Cursor: page.NextCursor})
	if err != nil || len(page2.Sandboxes) != 1 || page2.NextCursor != "" {
		t.Fatalf("second page: %+v, %v", page2, err)
	}
	var all int
	for _, err := range s.client.List(ctx, sdk.ListOptions{Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		all++
	}
	if all != 3 {
		t.Errorf("iterating the list gave %d sandboxes", all)
	}

	// Stop: commands are refused, the record stays; delete: gone.
	if err := sb.Stop(ctx); err != nil || sb.Status != api.StatusStopped {
		t.Fatalf("stop: %v (%s)", err, sb.Status)
	}
	if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"}); !errors.Is(err, sdk.ErrNotRunning) {
		t.Errorf("command on a stopped sandbox: %v", err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := sb.Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.client.Get(ctx, sb.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
}

// TestLargeOutputAndFiles: a 100 MB file round-trips byte-identical with its
// mode, and 10 MB on stdout and stderr at once arrive complete and in order
// through the NDJSON log stream.
func TestLargeOutputAndFiles(t *testing.T) { testLargeOutputAndFiles(t, stackOptions{}) }

// TestLargeOutputAndFilesKubernetes: the same through a Pod's agent.
func TestLargeOutputAndFilesKubernetes(t *testing.T) { testLargeOutputAndFiles(t, onKubernetes(t)) }

func testLargeOutputAndFiles(t *testing.T, opts stackOptions) {
	s := startStack(t, newDataDir(t), opts)
	ctx := ctxFor(t, 3*time.Minute)
	sb := s.create(t, api.CreateSandboxRequest{Resources: api.Resources{MemoryMB: 512}})

	const size = 100 << 20
	content := make([]byte, size)
	for i := range content {
		content[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(content)
	if _, err := sb.WriteFiles(ctx, "/home/user", []sdk.File{{Path: "big.bin", Content: content, Mode: 0o640}}); err != nil {
		t.Fatalf("write 100 MB: %v", err)
	}
	f, err := sb.ReadFile(ctx, "/home/user/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), want[:]) || f.Info.Mode != 0o640 {
		t.Fatalf("read back %d bytes, err %v, mode %o, hash match %v", n, err, f.Info.Mode, bytes.Equal(h.Sum(nil), want[:]))
	}

	// seq writes numbered lines: order and completeness are checkable.
	out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c",
		"seq 1 1500000 & seq 1 1500000 >&2; wait"}})
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for name, got := range map[string]string{"stdout": out, "stderr": errOut} {
		if len(got) < 10_000_000 {
			t.Errorf("%s: only %d bytes", name, len(got))
		}
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		if len(lines) != 1500000 {
			t.Fatalf("%s: %d lines", name, len(lines))
		}
		for i, l := range lines {
			if l != itoa(i+1) {
				t.Fatalf("%s line %d is %q", name, i+1, l)
			}
		}
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for i > 0 || n == len(b) {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

// tarOf builds a tar archive from headers; regular entries get their
// content from body.
func tarOf(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte("x")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return buf.Bytes()
}

// TestBadInput sends hostile and malformed requests: each gets a 4xx with a
// clear code, and nothing changes inside or outside the sandbox.
func TestBadInput(t *testing.T) { testBadInput(t, stackOptions{}) }

// TestBadInputKubernetes: the same with the sandbox a Pod.
func TestBadInputKubernetes(t *testing.T) { testBadInput(t, onKubernetes(t)) }

func testBadInput(t *testing.T, opts stackOptions) {
	opts.maxUploadBytes = 1 << 20
	s := startStack(t, newDataDir(t), opts)
	ctx := ctxFor(t, 3*time.Minute)
	sb := s.create(t, api.CreateSandboxRequest{})
	// A symlink planted by the sandbox itself, pointing at the host's view of nothing.
	sh(t, sb, "mkdir -p /home/user/dst && ln -s /etc /home/user/dst/etclink && ln -s /proc/self/root /home/user/rootlink")
	marker := func() string {
		out, _ := sh(t, sb, "find /home/user /tmp -newer /home/user/dst/etclink 2>/dev/null | sort; cat /etc/passwd | wc -l")
		return out
	}
	initial := marker()

	tars := map[string][]byte{
		"dotdot":          tarOf(t, tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}),
		"absolute":        tarOf(t, tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"through-symlink": tarOf(t, tar.Header{Name: "etclink/passwd", Typeflag: tar.TypeReg, Mode: 0o644}),
		"symlink-escape":  tarOf(t, tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../etc"}, tar.Header{Name: "up/evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"hardlink-escape": tarOf(t, tar.Header{Name: "pw", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}),
		"device":          tarOf(t, tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}),
	}
	for name, data := range tars {
		t.Run("tar/"+name, func(t *testing.T) {
			_, err := sb.WriteTar(ctx, "/home/user/dst", bytes.NewReader(data))
			var apiErr *sdk.APIError
			if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
				t.Fatalf("got %v, want a 400", err)
			}
			t.Logf("%s: %s", apiErr.Code, apiErr.Message)
		})
	}
	t.Run("tar/oversized", func(t *testing.T) {
		big := tarOfSize(t, 2<<20)
		_, err := sb.WriteTar(ctx, "/home/user/dst", bytes.NewReader(big))
		if !errors.Is(err, sdk.ErrTooLarge) {
			t.Fatalf("got %v, want 413", err)
		}
	})
	for _, p := range []string{"../etc/passwd", "/home/user/../../etc/passwd", "relative.txt", "/home/user/rootlink/etc/hostname", "/proc/self/root/etc/passwd"} {
		t.Run("read/"+p, func(t *testing.T) {
			_, err := sb.ReadFile(ctx, p)
			if !sdk.IsCode(err, "invalid_path") {
				t.Fatalf("read %q: %v, want invalid_path", p, err)
			}
		})
	}
	for _, p := range []string{"relative/dir", "/home/user/../x", ""} {
		t.Run("mkdir/"+p, func(t *testing.T) {
			if err := sb.MkDir(ctx, p, false); !errors.Is(err, sdk.ErrInvalid) {
				t.Fatalf("mkdir %q: %v, want 400", p, err)
			}
		})
	}
	if got := marker(); got != initial {
		t.Errorf("rejected requests changed the sandbox:\nbefore %q\nafter  %q", initial, got)
	}

	// Requests with the wrong credentials or bodies, straight over HTTP.
	raw := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, s.http.URL+"/api/v1"+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"no token", "GET", "/sandboxes", "", "", 401, "missing_token"},
		{"bad token", "GET", "/sandboxes", "nope", "", 401, "invalid_token"},
		{"unknown sandbox", "GET", "/sandboxes/sb-doesnotexist", s.token, "", 404, "sandbox_not_found"},
		{"unknown command", "GET", "/sandboxes/" + sb.ID + "/commands/cmd-nope", s.token, "", 404, "command_not_found"},
		{"malformed json", "POST", "/sandboxes", s.token, "{", 400, "invalid_json"},
		{"unknown field", "POST", "/sandboxes", s.token, `{"imgae":"host"}`, 400, "invalid_json"},
		{"huge json", "POST", "/sandboxes", s.token, `{"env":{"A":"` + strings.Repeat("a", 2<<20) + `"}}`, 413, "too_large"},
		{"impossible vcpus", "POST", "/sandboxes", s.token, `{"resources":{"vcpus":4096}}`, 400, "invalid_resources"},
		{"impossible memory", "POST", "/sandboxes", s.token, `{"resources":{"memoryMB":100000000}}`, 400, "invalid_resources"},
		{"timeout past max", "POST", "/sandboxes", s.token, `{"timeoutMs":86400000}`, 400, "invalid_timeout"},
		{"extend past max", "POST", "/sandboxes/" + sb.ID + "/extend-timeout", s.token, `{"durationMs":86400000}`, 400, "timeout_exceeds_max"},
		{"unknown image", "POST", "/sandboxes", s.token, `{"image":"nope"}`, 404, "image_not_found"},
		{"empty command", "POST", "/sandboxes/" + sb.ID + "/commands", s.token, `{"cmd":""}`, 400, ""},
		{"bad signal", "POST", "/sandboxes/" + sb.ID + "/commands/cmd-nope/kill", s.token, `{"signal":"SIGNOPE"}`, 400, ""},
	}
	before, _, _ := s.mgr.List(ctx, nodeListAll)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := raw(tc.method, tc.path, tc.token, tc.body)
			if status != tc.status || (tc.code != "" && !strings.Contains(body, `"code":"`+tc.code+`"`)) {
				t.Fatalf("%s %s: %d %s, want %d %s", tc.method, tc.path, status, clip(body), tc.status, tc.code)
			}
			if !strings.Contains(body, `"error":{`) {
				t.Errorf("error body lacks the error shape: %s", clip(body))
			}
		})
	}
	after, _, _ := s.mgr.List(ctx, nodeListAll)
	if len(after) != len(before) {
		t.Errorf("rejected requests changed the sandboxes: %d before, %d after", len(before), len(after))
	}
	if got, _ := s.client.Get(ctx, sb.ID); got.ExpiresAt != sb.ExpiresAt {
		t.Errorf("a refused extension moved the expiry from %v to %v", sb.ExpiresAt, got.ExpiresAt)
	}
}

func tarOfSize(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n)})
	tw.Write(make([]byte, n))
	tw.Close()
	return buf.Bytes()
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
