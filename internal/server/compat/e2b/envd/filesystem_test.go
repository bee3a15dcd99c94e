package envd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// newFSEnv is a Handler over fake sandboxes (sbA and sbB running, sbP
// paused) whose agent is a real agent server on a temp root: the file
// operations are the agent's own. root is that root on the host; the
// sandbox user's home, /home/user, is in it and the user's.
func newFSEnv(t *testing.T) (e *testEnv, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent switches to the sandbox user's identity and chowns what it writes")
	}
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	home := filepath.Join(root, "home/user")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, sandbox.DefaultUID, sandbox.DefaultGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	srv, err := agent.NewServer(agent.ServerConfig{
		StateDir: filepath.Join(dir, "state"), Root: root, CgroupRoot: filepath.Join(dir, "nocgroup"),
		UserHome: sandbox.DefaultHome, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	client := agent.UnixClient(sock)
	t.Cleanup(func() {
		client.Close()
		srv.Close() // first: it ends the watches polling watchers still hold
		cancel()
		<-served
	})

	sbs := fake.NewSandboxes(fake.SandboxesConfig{Agent: client})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	sbs.Add(sandbox.Sandbox{ID: sbA, TeamID: "team-a", State: sandbox.Running, CreatedAt: now})
	sbs.Add(sandbox.Sandbox{ID: sbB, TeamID: "team-b", State: sandbox.Running, CreatedAt: now})
	sbs.Add(sandbox.Sandbox{ID: sbP, TeamID: "team-a", State: sandbox.Paused, CreatedAt: now})
	tokens, err := NewTokens(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	clock := fake.NewClock(now)
	h, err := New(Config{Sandboxes: sbs, Tokens: tokens, Domain: testDomain, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(h)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	return &testEnv{h: h, srv: hs, sbs: sbs, tokens: tokens, clock: clock}, root
}

// fsClient calls the Filesystem service for one sandbox and user, over
// HTTP/1.1 or h2c.
type fsClient struct {
	url    string
	hc     *http.Client
	header http.Header
}

func (e *testEnv) fsClient(t *testing.T, h2c bool, sandboxID, user string) *fsClient {
	t.Helper()
	hc := e.srv.Client()
	if h2c {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		hc = &http.Client{Transport: tr}
		t.Cleanup(tr.CloseIdleConnections)
	}
	hdr := http.Header{HeaderSandboxID: {sandboxID}, HeaderSandboxPort: {"49983"}, HeaderAccessToken: {e.tokens.Access(sandboxID)}}
	if user != "" {
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return &fsClient{url: e.srv.URL + filesystemService, hc: hc, header: hdr}
}

func fsCall[Req, Res any](ctx context.Context, c *fsClient, method string, msg *Req) (*Res, error) {
	cl := connect.NewClient[Req, Res](c.hc, c.url+method, connect.WithCodec(codec{}))
	req := connect.NewRequest(msg)
	for k, v := range c.header {
		req.Header()[k] = v
	}
	res, err := cl.CallUnary(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func fsCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantConnectCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("got %v (code %v), want %v", err, connect.CodeOf(err), code)
	}
}

// userDir makes a directory of the sandbox user's below root.
func userDir(t *testing.T, root, name string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, sandbox.DefaultUID, sandbox.DefaultGID); err != nil {
		t.Fatal(err)
	}
}

// upload writes a file through POST /files as octet-stream.
func (e *testEnv) upload(t *testing.T, sandboxID, user, path, body string) {
	t.Helper()
	resp, out := e.do(t, request{method: "POST", path: "/files?path=" + path, sandbox: sandboxID, port: "49983",
		token: e.tokens.Access(sandboxID), user: user, header: http.Header{"Content-Type": {"application/octet-stream"}}, body: body})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload %s: %d %s", path, resp.StatusCode, out)
	}
}

func TestFilesystemService(t *testing.T) {
	e, root := newFSEnv(t)
	for _, h2c := range []bool{false, true} {
		name := "http1"
		if h2c {
			name = "h2c"
		}
		t.Run(name, func(t *testing.T) {
			ctx := fsCtx(t)
			c := e.fsClient(t, h2c, sbA, "user")
			dir := "work-" + name // relative: below the user's home

			mk, err := fsCall[fsPathRequest, fsEntryResponse](ctx, c, "MakeDir", &fsPathRequest{Path: dir + "/sub"})
			if err != nil {
				t.Fatal(err)
			}
			if mk.Entry.Path != "/home/user/"+dir+"/sub" || mk.Entry.Type != fileTypeDirectory || mk.Entry.Owner != "1000" {
				t.Errorf("MakeDir entry %+v", mk.Entry)
			}
			_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, c, "MakeDir", &fsPathRequest{Path: "~/" + dir + "/sub"})
			wantConnectCode(t, err, connect.CodeAlreadyExists)

			e.upload(t, sbA, "user", dir+"/a.txt", "hello")
			st, err := fsCall[fsPathRequest, fsEntryResponse](ctx, c, "Stat", &fsPathRequest{Path: "/home/user/" + dir + "/a.txt"})
			if err != nil {
				t.Fatal(err)
			}
			if g := st.Entry; g.Name != "a.txt" || g.Type != fileTypeFile || g.Size != 5 || g.Mode != 0o644 || g.Permissions != "-rw-r--r--" ||
				g.ModifiedTime == nil || g.ModifiedTime.IsZero() || g.SymlinkTarget != nil {
				t.Errorf("Stat entry %+v", g)
			}
			_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, c, "Stat", &fsPathRequest{Path: dir + "/missing"})
			wantConnectCode(t, err, connect.CodeNotFound)

			os.Symlink("a.txt", filepath.Join(root, "home/user", dir, "link"))
			ls, err := fsCall[listDirRequest, listDirResponse](ctx, c, "ListDir", &listDirRequest{Path: dir})
			if err != nil {
				t.Fatal(err)
			}
			if got := entryNames(ls.Entries); got != "a.txt:1 link:3 sub:2" {
				t.Errorf("ListDir depth 1: %s", got)
			}
			for _, en := range ls.Entries {
				if en.Name == "link" && (en.SymlinkTarget == nil || *en.SymlinkTarget != "/home/user/"+dir+"/a.txt") {
					t.Errorf("symlink entry %+v", en)
				}
			}
			e.upload(t, sbA, "user", dir+"/sub/deep.txt", "d")
			ls, err = fsCall[listDirRequest, listDirResponse](ctx, c, "ListDir", &listDirRequest{Path: dir, Depth: 2})
			if err != nil {
				t.Fatal(err)
			}
			if got := entryNames(ls.Entries); got != "a.txt:1 link:3 sub:2 deep.txt:1" {
				t.Errorf("ListDir depth 2: %s", got)
			}

			mv, err := fsCall[moveRequest, fsEntryResponse](ctx, c, "Move", &moveRequest{Source: dir + "/a.txt", Destination: dir + "/new/b.txt"})
			if err != nil {
				t.Fatal(err)
			}
			if mv.Entry.Path != "/home/user/"+dir+"/new/b.txt" || mv.Entry.Size != 5 {
				t.Errorf("Move entry %+v", mv.Entry)
			}
			_, err = fsCall[moveRequest, fsEntryResponse](ctx, c, "Move", &moveRequest{Source: dir + "/a.txt", Destination: dir + "/c.txt"})
			wantConnectCode(t, err, connect.CodeNotFound)

			for _, p := range []string{dir + "/new", dir + "/new"} { // a second remove finds nothing: no error, as envd
				if _, err := fsCall[fsPathRequest, empty](ctx, c, "Remove", &fsPathRequest{Path: p}); err != nil {
					t.Fatalf("Remove %s: %v", p, err)
				}
			}
			_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, c, "Stat", &fsPathRequest{Path: dir + "/new/b.txt"})
			wantConnectCode(t, err, connect.CodeNotFound)

			// root's files: the user may not look, root may.
			e.upload(t, sbA, "root", "secret", "s") // root's home
			_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, c, "Stat", &fsPathRequest{Path: "/root/secret"})
			wantConnectCode(t, err, connect.CodePermissionDenied)
			rc := e.fsClient(t, h2c, sbA, "root")
			if st, err := fsCall[fsPathRequest, fsEntryResponse](ctx, rc, "Stat", &fsPathRequest{Path: "/root/secret"}); err != nil || st.Entry.Owner != "0" {
				t.Errorf("root's stat: %+v %v", st, err)
			}
			_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, e.fsClient(t, h2c, sbA, "nobody"), "Stat", &fsPathRequest{Path: "/"})
			wantConnectCode(t, err, connect.CodeInvalidArgument)
			_, err = fsCall[listDirRequest, listDirResponse](ctx, c, "ListDir", &listDirRequest{Path: dir + "/link"})
			wantConnectCode(t, err, connect.CodeNotFound) // the link's target was moved away
		})
	}
}

func entryNames(es []entryInfo) string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name+":"+string(rune('0'+e.Type)))
	}
	return strings.Join(out, " ")
}

// TestFilesystemWire checks the JSON the SDKs read: protojson names, enum
// names, int64 as a string, the timestamp in RFC 3339.
func TestFilesystemWire(t *testing.T) {
	e, root := newFSEnv(t)
	os.WriteFile(filepath.Join(root, "home/user/f"), []byte("12345"), 0o640)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(filepath.Join(root, "home/user/f"), mtime, mtime)
	resp, body := e.do(t, request{method: "POST", path: filesystemService + "Stat", sandbox: sbA, port: "49983", token: e.tokens.Access(sbA),
		header: http.Header{"Content-Type": {"application/json"}}, body: `{"path":"/home/user/f","unknownField":1}`})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, want := range []string{`"name":"f"`, `"type":"FILE_TYPE_FILE"`, `"path":"/home/user/f"`, `"size":"5"`, `"mode":416`,
		`"permissions":"-rw-r-----"`, `"owner":"0"`, `"modifiedTime":"2024-05-06T07:08:09Z"`} {
		if !strings.Contains(body, want) {
			t.Errorf("answer %s lacks %s", body, want)
		}
	}
	resp, body = e.do(t, request{method: "POST", path: filesystemService + "Stat", sandbox: sbA, port: "49983", token: e.tokens.Access(sbA),
		header: http.Header{"Content-Type": {"application/json"}}, body: `{"path":"/home/user/nope"}`})
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("missing file: %d %s", resp.StatusCode, body)
	}
}

// TestFilesystemTeams: a sandbox's token opens only that sandbox.
func TestFilesystemTeams(t *testing.T) {
	e, _ := newFSEnv(t)
	ctx := fsCtx(t)
	c := e.fsClient(t, false, sbA, "")
	c.header.Set(HeaderAccessToken, e.tokens.Access(sbB))
	_, err := fsCall[fsPathRequest, fsEntryResponse](ctx, c, "Stat", &fsPathRequest{Path: "/"})
	wantConnectCode(t, err, connect.CodeUnauthenticated)
	_, err = fsCall[fsPathRequest, fsEntryResponse](ctx, e.fsClient(t, false, sbP, ""), "Stat", &fsPathRequest{Path: "/"})
	if err == nil {
		t.Fatal("stat in a paused sandbox answered")
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
		t.Errorf("paused sandbox: %v, want unavailable", err)
	}
}

func TestResolvePath(t *testing.T) {
	user := &target{Sandbox: sandbox.Sandbox{User: sandbox.User{UID: 1001, GID: 1001, Home: "/home/dev"}}}
	root := &target{Sudo: true}
	tests := []struct {
		name string
		t    *target
		in   string
		want string
		bad  bool
	}{
		{"empty is home", user, "", "/home/dev", false},
		{"tilde", user, "~", "/home/dev", false},
		{"below tilde", user, "~/a/b", "/home/dev/a/b", false},
		{"relative", user, "a/../b", "/home/dev/b", false},
		{"absolute cleaned", user, "/x//y/./z/", "/x/y/z", false},
		{"dotdot past the top", user, "/../../etc", "/etc", false},
		{"relative climbing out of home", user, "../../../etc/passwd", "/etc/passwd", false},
		{"root's home", root, "f", "/root/f", false},
		{"tilde user is a name", user, "~bob/x", "/home/dev/~bob/x", false},
		{"nul", user, "a\x00b", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvePath(tc.t, tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("resolvePath(%q) = %q, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("resolvePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
