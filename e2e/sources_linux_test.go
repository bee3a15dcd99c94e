package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// gitServer is a repository served by git http-backend on 127.0.0.1.
type gitServer struct {
	url           string
	first, second string // commits: second is main's tip, first is tagged v1
}

// serveGitRepo builds a two-commit repository (a file, an executable, a
// symlink to /etc/passwd) and serves it, behind basic auth when token is
// set (any username, the token as password).
func serveGitRepo(t *testing.T, token string) *gitServer {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed (Debian: apt-get install git)")
	}
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("git --exec-path: %v", err)
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+root, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	os.MkdirAll(work, 0o755)
	git(work, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "a.txt"), []byte("one\n"), 0o644)
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "first")
	git(work, "tag", "v1")
	g := &gitServer{first: git(work, "rev-parse", "HEAD")}
	os.WriteFile(filepath.Join(work, "a.txt"), []byte("two\n"), 0o644)
	os.WriteFile(filepath.Join(work, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(work, "evil"))
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "second")
	g.second = git(work, "rev-parse", "HEAD")
	git(root, "clone", "-q", "--bare", work, filepath.Join(root, "srv", "repo.git"))

	h := http.Handler(&cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	})
	if token != "" {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, p, ok := r.BasicAuth(); !ok || p != token {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	g.url = srv.URL + "/repo.git"
	return g
}

// liveSandboxes returns the ids of the sandboxes pending or running.
func liveSandboxes(t *testing.T, s *stack) map[string]bool {
	t.Helper()
	items, _, err := s.mgr.List(ctxFor(t, time.Minute), nodeListAll)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, sb := range items {
		if sb.State == sandbox.Running || sb.State == sandbox.Pending {
			live[sb.ID] = true
		}
	}
	return live
}

// wantCreateError creates with req and wants the create refused with
// status and code, and no sandbox left running by it.
func wantCreateError(t *testing.T, s *stack, req api.CreateSandboxRequest, status int, code string) *sdk.APIError {
	t.Helper()
	before := liveSandboxes(t, s)
	_, err := s.client.Create(ctxFor(t, 2*time.Minute), req)
	var ae *sdk.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("create = %v, want HTTP %d %s", err, status, code)
	}
	for id := range liveSandboxes(t, s) {
		if !before[id] {
			t.Errorf("sandbox %s is live after a failed create", id)
		}
	}
	return ae
}

func TestSourceGit(t *testing.T) {
	g := serveGitRepo(t, "")
	s := startStack(t, newDataDir(t), stackOptions{})
	hostPasswd, _ := os.ReadFile("/etc/passwd")

	sb := s.create(t, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url, Revision: "main", Depth: 1}})
	if src := sb.Source; src == nil || src.Commit != g.second || src.Dir != "/home/user" || src.URL != g.url || src.Revision != "main" {
		t.Fatalf("source = %+v", sb.Source)
	}
	if out, code := sh(t, sb, `cd ~ && cat a.txt && ./run.sh && stat -c '%u:%g' a.txt .git .git/HEAD && readlink evil`); code != 0 ||
		out != "two\nran\n1000:1000\n1000:1000\n1000:1000\n/etc/passwd\n" {
		t.Errorf("working dir: exit %d\n%s", code, out)
	}
	// The symlink resolves in the sandbox: its own /etc/passwd, not the host's.
	if out, code := sh(t, sb, "cat ~/evil"); code != 0 || out == string(hostPasswd) {
		t.Errorf("~/evil: exit %d, host's passwd: %v", code, out == string(hostPasswd))
	}
	if _, code := sh(t, sb, "command -v git"); code != 0 {
		t.Log("no git inside the sandbox: skipping the git log checks")
		return
	}
	out, code := sh(t, sb, "cd ~ && git log --format=%H && git rev-parse --abbrev-ref HEAD && git status --porcelain")
	if code != 0 || out != g.second+"\nmain\n" {
		t.Errorf("git in the sandbox: exit %d\n%s", code, out)
	}

	// A tag, into a dir of its own.
	sb = s.create(t, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url, Revision: "v1", Dir: "/home/user/src"}})
	if out, code := sh(t, sb, "cd ~/src && cat a.txt && git rev-parse HEAD"); code != 0 || out != "one\n"+g.first+"\n" {
		t.Errorf("tag v1: exit %d\n%s", code, out)
	}

	wantCreateError(t, s, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url, Revision: "no-such-branch"}},
		http.StatusBadRequest, "source_revision_not_found")
}

func TestSourceGitPrivate(t *testing.T) {
	g := serveGitRepo(t, "tok-3f9a")
	s := startStack(t, newDataDir(t), stackOptions{})
	sb := s.create(t, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url, Token: "tok-3f9a"}})
	if out, code := sh(t, sb, "cat ~/a.txt; grep -r tok-3f9a ~/.git || echo clean"); code != 0 || out != "two\nclean\n" {
		t.Errorf("private clone: exit %d\n%s", code, out)
	}
	// Nothing of the token in the record the API returns.
	if got, err := s.client.Get(ctxFor(t, time.Minute), sb.ID); err != nil || got.Source == nil || got.Source.Commit != g.second {
		t.Errorf("get = %+v, %v", got, err)
	}

	ae := wantCreateError(t, s, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url, Token: "wrong"}},
		http.StatusBadRequest, "source_auth_failed")
	if !strings.Contains(ae.Message, "credentials") || strings.Contains(ae.Message, "wrong") {
		t.Errorf("message %q", ae.Message)
	}
	wantCreateError(t, s, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceGit, URL: g.url}},
		http.StatusBadRequest, "source_auth_failed")
}

func tgz(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		body := h.Linkname // regular files: the body rides in Linkname here
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
			h.Linkname = ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func serveBytes(t *testing.T, files map[string][]byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSourceTarball(t *testing.T) {
	good := tgz(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "app-1.2/", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeReg, Name: "app-1.2/README", Linkname: "hello\n", Mode: 0o644},
		tar.Header{Typeflag: tar.TypeReg, Name: "app-1.2/bin/start", Linkname: "#!/bin/sh\necho started\n", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "app-1.2/passwd", Linkname: "/etc/passwd"},
		tar.Header{Typeflag: tar.TypeChar, Name: "app-1.2/null", Devmajor: 1, Devminor: 3},
	)
	base := serveBytes(t, map[string][]byte{"/app.tgz": good})
	s := startStack(t, newDataDir(t), stackOptions{})
	sb := s.create(t, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceTarball, URL: base + "/app.tgz", StripComponents: 1, Dir: "/home/user/app"}})
	sum := sha256.Sum256(good)
	if src := sb.Source; src == nil || src.Digest != "sha256:"+hex.EncodeToString(sum[:]) || src.Dir != "/home/user/app" {
		t.Errorf("source = %+v", sb.Source)
	}
	out, code := sh(t, sb, `cd ~/app && cat README && bin/start && stat -c '%u' README bin && readlink passwd && test ! -e null && echo no-device`)
	if code != 0 || out != "hello\nstarted\n1000\n1000\n/etc/passwd\nno-device\n" {
		t.Errorf("tarball: exit %d\n%s", code, out)
	}
}

// TestSourceHostileTarball: hostile archives are refused with a 400, no
// sandbox is left running, and nothing lands on the host.
func TestSourceHostileTarball(t *testing.T) {
	tag := rand.Text()[:10]
	hostPath := "/tmp/paddock-pwned-" + tag
	t.Cleanup(func() { os.Remove(hostPath) })
	up := strings.Repeat("../", 12)
	base := serveBytes(t, map[string][]byte{
		"/dotdot.tgz": tgz(t, tar.Header{Typeflag: tar.TypeReg, Name: up + hostPath[1:], Linkname: "x", Mode: 0o644}),
		"/through.tgz": tgz(t,
			tar.Header{Typeflag: tar.TypeSymlink, Name: "tmp", Linkname: "/tmp"},
			tar.Header{Typeflag: tar.TypeReg, Name: "tmp/paddock-pwned-" + tag, Linkname: "x", Mode: 0o644}),
		"/hardlink.tgz": tgz(t, tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "/etc/passwd"}),
	})
	s := startStack(t, newDataDir(t), stackOptions{})
	for _, tc := range []struct{ path, code string }{
		{"/dotdot.tgz", "source_invalid_entry"},
		{"/through.tgz", "source_invalid_entry"},
		{"/hardlink.tgz", "source_invalid_entry"},
	} {
		wantCreateError(t, s, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceTarball, URL: base + tc.path}}, http.StatusBadRequest, tc.code)
		if _, err := os.Lstat(hostPath); err == nil {
			t.Fatalf("%s: %s exists on the host", tc.path, hostPath)
		}
	}
	// The metadata address is refused before any connection, even with
	// loopback allowed.
	wantCreateError(t, s, api.CreateSandboxRequest{Source: &api.Source{Type: api.SourceTarball, URL: "http://169.254.169.254/latest"}},
		http.StatusForbidden, "source_address_forbidden")
}
