package source

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// tarEntry is one entry of a stream Fetch returned.
type tarEntry struct {
	typ     byte
	mode    int64
	content string
	link    string
}

// newFetcher returns a Fetcher for tests; loopback is allowed unless the
// test says otherwise.
func newFetcher(t *testing.T, mod func(*Config)) *Fetcher {
	t.Helper()
	cfg := Config{TempDir: t.TempDir(), AllowPrivate: true, AllowFile: true, Timeout: time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		// Every fetch removes its temp files once its stream is closed.
		if left, _ := os.ReadDir(cfg.TempDir); len(left) != 0 {
			t.Errorf("temp dir not empty after the test: %v", left)
		}
	})
	return f
}

// fetchAll fetches src and reads the whole stream.
func fetchAll(t *testing.T, f *Fetcher, src sandbox.Source) (map[string]tarEntry, *sandbox.SourceInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, info, err := f.Fetch(ctx, src)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	entries, err := readTar(rc)
	return entries, info, err
}

func readTar(r io.Reader) (map[string]tarEntry, error) {
	out := map[string]tarEntry{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return out, err
		}
		out[strings.TrimSuffix(hdr.Name, "/")] = tarEntry{typ: hdr.Typeflag, mode: hdr.Mode, content: string(b), link: hdr.Linkname}
	}
}

// extract writes a fetched stream into dir so the git binary can look at
// it. The stream's names are checked by the code under test; extract still
// refuses anything that would leave dir.
func extract(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(f, tr)
			f.Close()
			root.Chmod(name, os.FileMode(hdr.Mode))
			root.Chtimes(name, hdr.ModTime, hdr.ModTime)
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry %q type %q", name, hdr.Typeflag)
		}
	}
}

func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := sandbox.CodeOf(err); got != code {
		t.Fatalf("error %q has code %q, want %q", err, got, code)
	}
}

// TestRefusedBeforeConnect: a refused address sees no connection at all,
// for tarballs and for git.
func TestRefusedBeforeConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	f := newFetcher(t, func(c *Config) { c.AllowPrivate = false })
	base := "http://" + ln.Addr().String()
	for _, src := range []sandbox.Source{
		{Type: sandbox.SourceTarball, URL: base + "/a.tar.gz"},
		{Type: sandbox.SourceGit, URL: base + "/repo.git"},
		{Type: sandbox.SourceTarball, URL: "http://169.254.169.254/latest/meta-data/"},
		{Type: sandbox.SourceGit, URL: "http://169.254.169.254/repo.git"},
		{Type: sandbox.SourceTarball, URL: "http://[::1]:" + portOf(ln.Addr()) + "/x"},
	} {
		_, _, err := fetchAll(t, f, src)
		requireCode(t, err, CodeForbidden)
		if !errors.Is(err, sandbox.ErrForbidden) {
			t.Errorf("%s: %v is not ErrForbidden", src.URL, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the refused listener accepted %d connections", n)
	}
	// Redirects are dialled through the same guard.
	redir := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/", http.StatusFound))
	t.Cleanup(redir.Close)
	lax := newFetcher(t, func(c *Config) { c.Deny = []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16")} })
	_, _, err = fetchAll(t, lax, sandbox.Source{Type: sandbox.SourceTarball, URL: redir.URL + "/x"})
	requireCode(t, err, CodeForbidden)
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

func TestFileURLsNeedAllowFile(t *testing.T) {
	f := newFetcher(t, func(c *Config) { c.AllowFile = false })
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceGit, URL: "file:///etc"})
	requireCode(t, err, "source_scheme_forbidden")
	_, err = ParseURL(sandbox.SourceTarball, "file:///etc/passwd")
	requireCode(t, err, "source_invalid_url")
	for _, u := range []string{"ftp://x/y", "ssh://git@host/r.git", "git://host/r.git", "git@host:r.git", "http:///nohost", ""} {
		if _, err := ParseURL(sandbox.SourceGit, u); sandbox.CodeOf(err) != "source_invalid_url" {
			t.Errorf("ParseURL(%q) = %v, want source_invalid_url", u, err)
		}
	}
}

func TestErrorsNeverEchoCredentials(t *testing.T) {
	f := newFetcher(t, func(c *Config) { c.AllowPrivate = false })
	_, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: "http://user:s3cret@127.0.0.1:1/x", Token: "t0ken"})
	if err == nil || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "t0ken") {
		t.Errorf("error %v", err)
	}
	for raw, want := range map[string]string{
		"https://user:s3cret@example.com/r.git": "https://example.com/r.git",
		// A presigned URL's credentials are in its query.
		"https://bucket.example.com/a.tgz?X-Amz-Credential=AKIA1&X-Amz-Signature=s3cret#frag": "https://bucket.example.com/a.tgz?X-Amz-Credential=redacted&X-Amz-Signature=redacted",
	} {
		u, err := ParseURL(sandbox.SourceTarball, raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := Redact(u); got != want {
			t.Errorf("Redact(%s) = %q, want %q", raw, got, want)
		}
	}
}

// TestTarballCredentialsStayOnTheirOrigin: a redirect to another port or
// scheme of the same host name keeps net/http's Authorization; ours not.
func TestTarballCredentialsStayOnTheirOrigin(t *testing.T) {
	archive := gz(makeTar(t, ent{name: "a", body: "x"}))
	var seen string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get("Authorization")
		w.Write(archive)
	}))
	t.Cleanup(other.Close)
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, other.URL+"/a.tgz", http.StatusFound) // same host, another port
	}))
	t.Cleanup(first.Close)
	f := newFetcher(t, nil)
	if _, _, err := fetchAll(t, f, sandbox.Source{Type: sandbox.SourceTarball, URL: first.URL + "/a.tgz", Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	if seen != "" {
		t.Errorf("the redirect's target on another port got Authorization %q", seen)
	}
}

// requireGit skips when the git binary (used to build and serve test
// repositories) is missing.
func requireGit(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed (Debian: apt-get install git)")
	}
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("git-http-backend not found: %v", err)
	}
	return backend
}

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}
