//go:build linux

package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/tartest"
)

// FuzzFileOps runs stat, list, move, remove and a single-file write on
// hostile paths, as the user and with sudo, over a root whose symlinks
// (one the input makes, fz -> target) point out of it every way there is,
// and checks: nothing outside the root changes, every answer is below 500,
// and what stat and list describe is named by the path asked for.
func FuzzFileOps(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: the agent switches to the sandbox user's identity")
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	tartest.Watched(f, outside)
	if err := os.MkdirAll(root, 0o755); err != nil {
		f.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{
		StateDir: filepath.Join(base, "state"), Root: root, CgroupRoot: filepath.Join(base, "nocgroup"),
		UserHome: "/tmp", MaxWriteBytes: 1 << 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	if err := os.Chown(root, UserUID, UserGID); err != nil {
		f.Fatal(err)
	}
	links := map[string]string{"abs": "/etc", "up": "../../..", "host": outside, "self": ".", "loop": "loop",
		"proc": "/proc/self/root", "dotdot": "etc/../.."}
	// reset puts the root back as every iteration starts from it.
	reset := func(t *testing.T) {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
		tartest.Watched(t, filepath.Join(root, "etc"))
		for name, target := range links {
			if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	paths := []string{"/", "/etc", "/etc/passwd", "/abs/passwd", "/up/etc/passwd", "/host/passwd", "/host", "/self/etc", "/loop",
		"/proc/1/environ", "/dotdot/outside/passwd", "/fz", "/fz/passwd", "/fz/sub/x", "/new/dir/file", "etc", "/etc/../..", "/a\x00b", ""}
	for i, p := range paths {
		for _, target := range []string{"..", "/", "../outside", outside, "etc", "abs/.."} {
			f.Add(uint8(i%10), p, paths[(i+3)%len(paths)], target)
		}
	}
	before := tartest.Tree(f, outside)
	f.Fuzz(func(t *testing.T, op uint8, p, q, target string) {
		reset(t)
		if target != "" && !strings.ContainsRune(target, 0) && len(target) < 4096 {
			if err := os.Symlink(target, filepath.Join(root, "fz")); err != nil {
				t.Fatal(err)
			}
		}
		sudo := op&1 == 1
		do := func(method, route string, query url.Values, body any) *httptest.ResponseRecorder {
			var in io.Reader = strings.NewReader("data")
			if body != nil {
				b, _ := json.Marshal(body)
				in = bytes.NewReader(b)
			}
			query.Set("sudo", map[bool]string{true: "true", false: "false"}[sudo])
			req := httptest.NewRequest(method, route+"?"+query.Encode(), in)
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s %v: %d %s", method, route, query, rec.Code, rec.Body)
			}
			return rec
		}
		switch op / 2 % 5 {
		case 0:
			rec := do("GET", "/v1/stat", url.Values{"path": {p}}, nil)
			if rec.Code == http.StatusOK {
				var e Entry
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Path != p {
					t.Fatalf("stat %q answered %s", p, rec.Body)
				}
			}
		case 1:
			rec := do("GET", "/v1/list", url.Values{"path": {p}, "depth": {"3"}}, nil)
			if rec.Code == http.StatusOK {
				var es []Entry
				if err := json.Unmarshal(rec.Body.Bytes(), &es); err != nil {
					t.Fatal(err)
				}
				for _, e := range es {
					if !strings.HasPrefix(e.Path, strings.TrimSuffix(p, "/")+"/") {
						t.Fatalf("list %q has %q", p, e.Path)
					}
				}
			}
		case 2:
			do("POST", "/v1/move", url.Values{}, MoveRequest{Source: p, Destination: q, Sudo: sudo})
		case 3:
			do("POST", "/v1/remove", url.Values{}, RemoveRequest{Path: p, Sudo: sudo})
		case 4:
			do("PUT", "/v1/file", url.Values{"path": {p}}, nil)
		}
		if after := tartest.Tree(t, outside); len(tartest.Diff(before, after)) > 0 {
			t.Fatalf("op %d on %q, %q (fz -> %q) changed the host outside the root: %v", op, p, q, target, tartest.Diff(before, after))
		}
	})
}
