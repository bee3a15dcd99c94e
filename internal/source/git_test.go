package source

import (
	"archive/tar"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// testRepo is a repository served over HTTP by git http-backend.
type testRepo struct {
	url     string // http://127.0.0.1:port/repo.git
	dir     string // the bare repository on disk
	first   string // commit 1 (tagged v1, annotated)
	second  string // commit 2, tip of main
	feature string // tip of branch feature, on top of commit 2
}

// serveRepo builds a repository with three commits on two branches, a tag,
// an executable, a relative symlink and one to /etc/passwd, and serves it
// on 127.0.0.1, behind basic auth when user is set.
func serveRepo(t *testing.T, user, pass string) *testRepo {
	t.Helper()
	backend := requireGit(t)
	root := t.TempDir()
	work := filepath.Join(root, "work")
	os.MkdirAll(work, 0o755)
	gitCmd(t, work, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "a.txt"), []byte("one\n"), 0o644)
	gitCmd(t, work, "add", ".")
	gitCmd(t, work, "commit", "-q", "-m", "first")
	gitCmd(t, work, "tag", "-a", "v1", "-m", "version 1")
	r := &testRepo{first: gitCmd(t, work, "rev-parse", "HEAD")}
	os.WriteFile(filepath.Join(work, "a.txt"), []byte("two\n"), 0o644)
	os.MkdirAll(filepath.Join(work, "bin"), 0o755)
	os.WriteFile(filepath.Join(work, "bin", "run.sh"), []byte("#!/bin/sh\necho run\n"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(work, "evil"))
	os.Symlink("../a.txt", filepath.Join(work, "bin", "a"))
	gitCmd(t, work, "add", ".")
	gitCmd(t, work, "commit", "-q", "-m", "second")
	r.second = gitCmd(t, work, "rev-parse", "HEAD")
	gitCmd(t, work, "checkout", "-q", "-b", "feature")
	os.WriteFile(filepath.Join(work, "feature.txt"), []byte("feature\n"), 0o644)
	gitCmd(t, work, "add", ".")
	gitCmd(t, work, "commit", "-q", "-m", "feature")
	r.feature = gitCmd(t, work, "rev-parse", "HEAD")
	gitCmd(t, work, "checkout", "-q", "main")
	r.dir = filepath.Join(root, "srv", "repo.git")
	gitCmd(t, root, "clone", "-q", "--bare", work, r.dir)

	h := http.Handler(&cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	})
	if user != "" {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, req)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/repo.git"
	return r
}

// clone fetches src and extracts it into a fresh dir.
func clone(t *testing.T, f *Fetcher, src sandbox.Source) (string, *sandbox.SourceInfo) {
	t.Helper()
	rc, info, err := f.Fetch(t.Context(), src)
	if err != nil {
		t.Fatalf("fetch %+v: %v", src, err)
	}
	defer rc.Close()
	dir := t.TempDir()
	extract(t, rc, dir)
	return dir, info
}

func TestGitRevisions(t *testing.T) {
	r := serveRepo(t, "", "")
	f := newFetcher(t, nil)
	for _, tc := range []struct {
		name, rev string
		depth     int
		commit    string
		branch    string // "" means a detached HEAD
		commits   int    // in git log
		feature   bool   // feature.txt present
	}{
		{name: "default HEAD", commit: r.second, branch: "main", commits: 1},
		{name: "branch", rev: "feature", commit: r.feature, branch: "feature", commits: 1, feature: true},
		{name: "full ref", rev: "refs/heads/feature", commit: r.feature, branch: "feature", commits: 1, feature: true},
		{name: "annotated tag", rev: "v1", commit: r.first, commits: 1},
		{name: "sha of a tip", rev: r.feature, commit: r.feature, commits: 1, feature: true},
		// Not a tip, and http-backend does not allow any sha in a want by
		// default: the fallback fetches all history.
		{name: "sha not a tip", rev: r.first, commit: r.first, commits: 1 /* first has no parent */},
		{name: "short sha", rev: r.second[:10], commit: r.second, commits: 2},
		{name: "depth 2", rev: "feature", depth: 2, commit: r.feature, branch: "feature", commits: 2, feature: true},
		{name: "full history", rev: "feature", depth: -1, commit: r.feature, branch: "feature", commits: 3, feature: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, info := clone(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: r.url, Revision: tc.rev, Depth: tc.depth})
			if info.Commit != tc.commit || info.URL != r.url || info.Type != sandbox.SourceGit || info.Revision != tc.rev {
				t.Errorf("info = %+v, want commit %s", info, tc.commit)
			}
			if got := gitCmd(t, dir, "rev-parse", "HEAD"); got != tc.commit {
				t.Errorf("HEAD = %s, want %s", got, tc.commit)
			}
			if got := gitCmd(t, dir, "rev-list", "--count", "HEAD"); got != strconv.Itoa(tc.commits) {
				t.Errorf("%s commits in history, want %d", got, tc.commits)
			}
			if got := gitCmd(t, dir, "rev-parse", "--abbrev-ref", "HEAD"); (tc.branch == "" && got != "HEAD") || (tc.branch != "" && got != tc.branch) {
				t.Errorf("checked out %q, want branch %q", got, tc.branch)
			}
			if st := gitCmd(t, dir, "status", "--porcelain"); st != "" {
				t.Errorf("git status is not clean:\n%s", st)
			}
			if _, err := os.Stat(filepath.Join(dir, "feature.txt")); (err == nil) != tc.feature {
				t.Errorf("feature.txt present = %v, want %v", err == nil, tc.feature)
			}
			if tc.branch != "" {
				if got := gitCmd(t, dir, "config", "branch."+tc.branch+".remote"); got != "origin" {
					t.Errorf("branch tracks %q", got)
				}
			}
			if got := gitCmd(t, dir, "remote", "get-url", "origin"); got != r.url {
				t.Errorf("origin = %q", got)
			}
		})
	}
}

// TestGitContent checks modes and links: a symlink to /etc/passwd is a
// symlink in the stream, never the host's file.
func TestGitContent(t *testing.T) {
	r := serveRepo(t, "", "")
	f := newFetcher(t, nil)
	entries, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: r.url})
	if err != nil {
		t.Fatal(err)
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	for name, e := range entries {
		if len(passwd) > 0 && e.content == string(passwd) {
			t.Errorf("%s carries the host's /etc/passwd", name)
		}
	}
	want := map[string]tarEntry{
		"a.txt":      {typ: tar.TypeReg, mode: 0o644, content: "two\n"},
		"bin/run.sh": {typ: tar.TypeReg, mode: 0o755, content: "#!/bin/sh\necho run\n"},
		"evil":       {typ: tar.TypeSymlink, mode: 0o777, link: "/etc/passwd"},
		"bin/a":      {typ: tar.TypeSymlink, mode: 0o777, link: "../a.txt"},
		"bin":        {typ: tar.TypeDir, mode: 0o755},
	}
	for name, w := range want {
		if got := entries[name]; got != w {
			t.Errorf("%s = %+v, want %+v", name, got, w)
		}
	}
	for _, name := range []string{".git/HEAD", ".git/config", ".git/index", ".git/shallow"} {
		if _, ok := entries[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	if cfg := entries[".git/config"].content; strings.Contains(cfg, "bare = true") {
		t.Errorf(".git/config still bare:\n%s", cfg)
	}
}

func TestGitSHAInWant(t *testing.T) {
	r := serveRepo(t, "", "")
	gitCmd(t, r.dir, "config", "uploadpack.allowReachableSHA1InWant", "true")
	f := newFetcher(t, nil)
	dir, info := clone(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: r.url, Revision: r.second})
	if info.Commit != r.second {
		t.Errorf("commit %s", info.Commit)
	}
	// Fetched by sha with depth 1, not by the full-history fallback.
	if got := gitCmd(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
		t.Errorf("%s commits, want 1 (shallow)", got)
	}
}

func TestGitCredentials(t *testing.T) {
	r := serveRepo(t, "alice", "s3cret-token")
	f := newFetcher(t, nil)
	for _, tc := range []struct {
		name string
		src  sandbox.Source
		code string
	}{
		{name: "token", src: sandbox.Source{Token: "s3cret-token", Username: "alice"}},
		{name: "password", src: sandbox.Source{Username: "alice", Password: "s3cret-token"}},
		{name: "userinfo in url", src: sandbox.Source{URL: strings.Replace(r.url, "http://", "http://alice:s3cret-token@", 1)}},
		{name: "wrong password", src: sandbox.Source{Username: "alice", Password: "nope"}, code: CodeAuthFailed},
		{name: "wrong token", src: sandbox.Source{Token: "nope"}, code: CodeAuthFailed},
		{name: "none", src: sandbox.Source{}, code: CodeAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			src.Type = sandbox.SourceGit
			if src.URL == "" {
				src.URL = r.url
			}
			entries, info, err := fetchAll(t, f, src)
			if tc.code != "" {
				requireCode(t, err, tc.code)
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "nope") {
					t.Errorf("error echoes a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.URL != r.url || info.Commit != r.second {
				t.Errorf("info = %+v", info)
			}
			if cfg := entries[".git/config"].content; strings.Contains(cfg, "s3cret") || strings.Contains(cfg, "alice") {
				t.Errorf(".git/config holds credentials:\n%s", cfg)
			}
			for name, e := range entries {
				if strings.Contains(e.content, "s3cret") {
					t.Errorf("%s holds the secret", name)
				}
			}
		})
	}
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: r.url})
	if !strings.Contains(err.Error(), "needs credentials") {
		t.Errorf("no-credentials error: %v", err)
	}
}

func TestGitErrors(t *testing.T) {
	r := serveRepo(t, "", "")
	f := newFetcher(t, nil)
	for _, tc := range []struct {
		name string
		src  sandbox.Source
		code string
	}{
		{"unknown branch", sandbox.Source{URL: r.url, Revision: "nope"}, CodeRevisionNotFound},
		{"unknown sha", sandbox.Source{URL: r.url, Revision: strings.Repeat("ab", 20)}, CodeRevisionNotFound},
		{"unknown short sha", sandbox.Source{URL: r.url, Revision: "abcdef12"}, CodeRevisionNotFound},
		{"no such repo", sandbox.Source{URL: strings.TrimSuffix(r.url, "repo.git") + "other.git"}, CodeNotFound},
		{"nothing listening", sandbox.Source{URL: "http://127.0.0.1:1/repo.git"}, CodeUnreachable},
		{"strip on git", sandbox.Source{URL: r.url, StripComponents: 1}, CodeInvalid},
		{"option-like revision", sandbox.Source{URL: r.url, Revision: "--upload-pack=x"}, CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.Type = sandbox.SourceGit
			_, _, err := fetchAll(t, f, tc.src)
			requireCode(t, err, tc.code)
		})
	}
}

func TestGitSizeCap(t *testing.T) {
	r := serveRepo(t, "", "")
	f := newFetcher(t, func(c *Config) { c.MaxBytes = 200 })
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: r.url, Depth: -1})
	requireCode(t, err, CodeTooLarge)
}

// TestGitHostileTrees serves, over file://, commits whose trees git would
// never write: an entry named "..", one named ".git", one with a slash.
func TestGitHostileTrees(t *testing.T) {
	requireGit(t)
	for _, name := range []string{"..", ".git", ".GIT", "a/b", "."} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			repo, err := git.PlainInit(dir, true)
			if err != nil {
				t.Fatal(err)
			}
			st := repo.Storer
			blob := st.NewEncodedObject()
			blob.SetType(plumbing.BlobObject)
			w, _ := blob.Writer()
			w.Write([]byte("pwned\n"))
			w.Close()
			bh, err := st.SetEncodedObject(blob)
			if err != nil {
				t.Fatal(err)
			}
			inner := &object.Tree{Entries: []object.TreeEntry{{Name: "config", Mode: filemode.Regular, Hash: bh}}}
			ih := storeObject(t, st, inner)
			tree := &object.Tree{Entries: []object.TreeEntry{{Name: name, Mode: filemode.Dir, Hash: ih}}}
			th := storeObject(t, st, tree)
			sig := object.Signature{Name: "t", Email: "t@example.com", When: time.Now()}
			ch := storeObject(t, st, &object.Commit{Author: sig, Committer: sig, Message: "evil", TreeHash: th})
			if err := st.SetReference(plumbing.NewHashReference("refs/heads/main", ch)); err != nil {
				t.Fatal(err)
			}
			st.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main"))
			f := newFetcher(t, nil)
			_, _, err = fetchAll(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: "file://" + dir})
			requireCode(t, err, CodeInvalidEntry)
		})
	}
}

type encoder interface {
	Encode(plumbing.EncodedObject) error
}

func storeObject(t *testing.T, st interface {
	NewEncodedObject() plumbing.EncodedObject
	SetEncodedObject(plumbing.EncodedObject) (plumbing.Hash, error)
}, o encoder) plumbing.Hash {
	t.Helper()
	obj := st.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := st.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
