package node

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeSources is a hand-written Sources: it answers every fetch with the
// same tar or error, and records what it was asked (credentials included,
// to check they arrive).
type fakeSources struct {
	mu      sync.Mutex // guards the fields below
	tar     []byte
	err     error
	tailErr error // the stream fails with it after the tar's bytes
	asked   []sandbox.Source
}

func (f *fakeSources) Fetch(ctx context.Context, src sandbox.Source) (io.ReadCloser, *sandbox.SourceInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, src)
	if f.err != nil {
		return nil, nil, f.err
	}
	var r io.Reader = bytes.NewReader(f.tar)
	if f.tailErr != nil {
		r = io.MultiReader(r, errReader{f.tailErr})
	}
	return io.NopCloser(r), &sandbox.SourceInfo{Type: src.Type, URL: src.URL, Commit: "abc"}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func tarOf(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = strings.Repeat("x", int(h.Size))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

func TestNormalizeSource(t *testing.T) {
	with := &Config{Sources: &fakeSources{}}
	git := func(mod func(*sandbox.Source)) *sandbox.Source {
		s := &sandbox.Source{Type: sandbox.SourceGit, URL: "https://example.com/r.git"}
		mod(s)
		return s
	}
	tarball := func(mod func(*sandbox.Source)) *sandbox.Source {
		s := &sandbox.Source{Type: sandbox.SourceTarball, URL: "https://example.com/r.tgz"}
		mod(s)
		return s
	}
	for _, tc := range []struct {
		name string
		src  *sandbox.Source
		code string
	}{
		{"git", git(func(s *sandbox.Source) { s.Revision = "main"; s.Depth = -1; s.Dir = "/src" }), ""},
		{"tarball", tarball(func(s *sandbox.Source) { s.StripComponents = 1 }), ""},
		{"token", git(func(s *sandbox.Source) { s.Token = "t" }), ""},
		{"unknown type", git(func(s *sandbox.Source) { s.Type = "svn" }), "invalid_source"},
		{"bad scheme", git(func(s *sandbox.Source) { s.URL = "ssh://host/r.git" }), "source_invalid_url"},
		{"file tarball", tarball(func(s *sandbox.Source) { s.URL = "file:///etc/passwd" }), "source_invalid_url"},
		{"relative dir", git(func(s *sandbox.Source) { s.Dir = "src" }), "invalid_source"},
		{"unclean dir", git(func(s *sandbox.Source) { s.Dir = "/a/../etc" }), "invalid_source"},
		{"negative strip", tarball(func(s *sandbox.Source) { s.StripComponents = -1 }), "invalid_source"},
		{"strip on git", git(func(s *sandbox.Source) { s.StripComponents = 1 }), "invalid_source"},
		{"depth on tarball", tarball(func(s *sandbox.Source) { s.Depth = 1 }), "invalid_source"},
		{"option revision", git(func(s *sandbox.Source) { s.Revision = "--exec=x" }), "invalid_source"},
		{"password alone", git(func(s *sandbox.Source) { s.Password = "p" }), "invalid_source"},
		{"password and token", git(func(s *sandbox.Source) { s.Username = "u"; s.Password = "p"; s.Token = "t" }), "invalid_source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalizeSource(with, tc.src)
			if tc.code == "" {
				if err != nil || got == nil || *got != *tc.src {
					t.Fatalf("normalizeSource = %+v, %v", got, err)
				}
				return
			}
			wantErr(t, err, sandbox.ErrInvalid, tc.code)
		})
	}
	_, err := normalizeSource(&Config{}, git(func(*sandbox.Source) {}))
	wantErr(t, err, sandbox.ErrUnsupported, "sources_unsupported")
}

func TestSplitOutLinks(t *testing.T) {
	in := tarOf(t,
		&tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Size: 3, Mode: 0o644},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "in", Linkname: "a.txt"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "d/up", Linkname: "../a.txt"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: "/etc/passwd"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "out", Linkname: "../x"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "d/out", Linkname: "../../x"},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "replaced", Linkname: "/etc"},
		&tar.Header{Typeflag: tar.TypeReg, Name: "replaced", Size: 1, Mode: 0o644},
	)
	var out bytes.Buffer
	var links []outLink
	if err := splitOutLinks(bytes.NewReader(in), &out, &links); err != nil {
		t.Fatal(err)
	}
	want := []outLink{{"abs", "/etc/passwd"}, {"out", "../x"}, {"d/out", "../../x"}}
	if len(links) != len(want) {
		t.Fatalf("links = %+v, want %+v", links, want)
	}
	for i := range want {
		if links[i] != want[i] {
			t.Errorf("link %d = %+v, want %+v", i, links[i], want[i])
		}
	}
	var names []string
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if got := strings.Join(names, " "); got != "a.txt in d/up replaced" {
		t.Errorf("passed through: %s", got)
	}

	below := tarOf(t,
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "/etc"},
		&tar.Header{Typeflag: tar.TypeReg, Name: "etc/evil", Size: 1},
	)
	err := splitOutLinks(bytes.NewReader(below), io.Discard, &links)
	wantErr(t, err, sandbox.ErrInvalid, "source_invalid_entry")
}

// realAgent serves a real agent over root (a temp dir standing for the
// sandbox's root) and points the fake driver's sandboxes at it.
func realAgent(t *testing.T, e *env) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent chowns what it writes to the sandbox user")
	}
	dir, err := os.MkdirTemp("", "pnsrc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	srv, err := agent.NewServer(agent.ServerConfig{StateDir: filepath.Join(dir, "state"), Root: root, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		<-done
	})
	e.d.SetAgentSocket(sock)
	return root
}

func TestCreateWithSource(t *testing.T) {
	src := &fakeSources{tar: tarOf(t,
		&tar.Header{Typeflag: tar.TypeDir, Name: "pkg/", Mode: 0o755},
		&tar.Header{Typeflag: tar.TypeReg, Name: "pkg/main.go", Size: 5, Mode: 0o644},
		&tar.Header{Typeflag: tar.TypeSymlink, Name: "pkg/link", Linkname: "main.go"},
	)}
	e := newEnv(t, func(c *Config) { c.Sources = src })
	root := realAgent(t, e)
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Source: &sandbox.Source{
		Type: sandbox.SourceGit, URL: "https://example.com/r.git", Revision: "v1", Dir: "/work", Token: "secret",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Source == nil || sb.Source.Dir != "/work" || sb.Source.Commit != "abc" || sb.Source.URL != "https://example.com/r.git" {
		t.Errorf("source info = %+v", sb.Source)
	}
	if got := e.get(t, sb.ID).Source; got == nil || *got != *sb.Source {
		t.Errorf("recorded source = %+v", got)
	}
	if len(src.asked) != 1 || src.asked[0].Token != "secret" {
		t.Errorf("fetcher asked %+v", src.asked)
	}
	fi, err := os.Lstat(filepath.Join(root, "work/pkg/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != agent.UserUID || st.Gid != agent.UserGID {
		t.Errorf("main.go owned by %d:%d, want the sandbox user", st.Uid, st.Gid)
	}
	if target, err := os.Readlink(filepath.Join(root, "work/pkg/link")); err != nil || target != "main.go" {
		t.Errorf("link = %q, %v", target, err)
	}
	// The record on disk never holds the token.
	raw, _ := os.ReadFile(filepath.Join(e.dir, "node", "sandboxes", sb.ID+".json"))
	if len(raw) == 0 || bytes.Contains(raw, []byte("secret")) {
		t.Errorf("record on disk: %s", raw)
	}

	// No Dir: the user's home.
	sb, err = e.m.Create(t.Context(), sandbox.CreateRequest{Source: &sandbox.Source{Type: sandbox.SourceTarball, URL: "https://example.com/r.tgz"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Source.Dir != agent.UserHome {
		t.Errorf("dir = %q, want %q", sb.Source.Dir, agent.UserHome)
	}
	if _, err := os.Stat(filepath.Join(root, agent.UserHome, "pkg/main.go")); err != nil {
		t.Error(err)
	}
}

// TestCreateSourceFailure: a fetch that fails, before or during the
// stream, fails the create with the source's error, and the sandbox is
// destroyed like after a driver failure.
func TestCreateSourceFailure(t *testing.T) {
	authErr := sandbox.Errorf(sandbox.ErrInvalid, "source_auth_failed", "the git server refused the source's credentials")
	entryErr := sandbox.Errorf(sandbox.ErrInvalid, "source_invalid_entry", "entry \"../x\" contains ..")
	good := tarOf(t, &tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 1, Mode: 0o644})
	for _, tc := range []struct {
		name string
		src  *fakeSources
		code string
	}{
		{"fetch", &fakeSources{err: authErr}, "source_auth_failed"},
		{"mid-stream", &fakeSources{tar: good[:1024], tailErr: entryErr}, "source_invalid_entry"},
		{"not a tar", &fakeSources{tar: []byte(strings.Repeat("junk", 300))}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Sources = tc.src })
			realAgent(t, e)
			sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Source: &sandbox.Source{Type: sandbox.SourceGit, URL: "https://example.com/r.git"}})
			if err == nil {
				t.Fatal("create succeeded")
			}
			if tc.code != "" {
				wantErr(t, err, sandbox.ErrInvalid, tc.code)
			}
			if sb.State != sandbox.Failed || !strings.HasPrefix(sb.Error, "create: ") {
				t.Errorf("record = %s %q", sb.State, sb.Error)
			}
			if !e.d.Called("destroy", sb.ID) {
				t.Error("the sandbox was not destroyed")
			}
			if running, known := e.d.Running(sb.ID); running || known {
				t.Error("the sandbox is still known to the driver")
			}
			_, err = e.m.Agent(t.Context(), sb.ID)
			if !errors.Is(err, sandbox.ErrNotRunning) {
				t.Errorf("Agent = %v", err)
			}
		})
	}
}

func TestCreateSourceUnsupported(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{Source: &sandbox.Source{Type: sandbox.SourceGit, URL: "https://example.com/r.git"}})
	wantErr(t, err, sandbox.ErrUnsupported, "sources_unsupported")
	if n := e.d.Count("create"); n != 0 {
		t.Errorf("driver.Create called %d times", n)
	}
}
