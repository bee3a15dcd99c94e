//go:build linux

package agent

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// userTree lays out, in the test root: root-owned /etc (with passwd and a
// dir), /root
// (0700, with a 0600 secret) and /pub (with a root-only and an open file);
// the user's /home/user with symlinks it made into them.
func userTree(t *testing.T, e *testEnv) {
	t.Helper()
	mk := func(p string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Join(e.root, p), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(e.root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, body string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(e.root, p), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("etc/sub", 0o755)
	write("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
	mk("root", 0o700)
	write("root/secret", "root only", 0o600)
	mk("pub", 0o755)
	write("pub/secret", "root only", 0o600)
	write("pub/open", "for all", 0o644)
	mk("home/user", 0o755)
	home := filepath.Join(e.root, "home/user")
	if err := os.Chown(home, UserUID, UserGID); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"app": "../../etc", "rootdir": "../../root"} {
		if err := os.Symlink(target, filepath.Join(home, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(home, name), UserUID, UserGID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFilesAsUser: without sudo, writes, mkdir, reads and archives are done
// with the user's identity, so the user's symlinks lead nowhere the user
// could not go; with sudo they are root's.
func TestFilesAsUser(t *testing.T) {
	e := startServer(t, nil)
	userTree(t, e)
	ctx := testCtx(t)
	etcBefore := treeState(t, filepath.Join(e.root, "etc"))

	denied := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, sandbox.ErrForbidden) || sandbox.CodeOf(err) != "permission_denied" {
			t.Errorf("%s: got %v (code %q), want permission_denied", what, err, sandbox.CodeOf(err))
		}
	}
	writes := []struct {
		name string
		dir  string
		tar  []byte
	}{
		{"new file through a symlink to /etc", "/home/user/app", makeTar(t, tarEntry{hdr: tar.Header{Name: "evil", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")})},
		{"replace /etc/passwd through it", "/home/user/app", makeTar(t, tarEntry{hdr: tar.Header{Name: "passwd", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")})},
		{"chmod a dir of /etc through it", "/home/user/app", makeTar(t, tarEntry{hdr: tar.Header{Name: "sub/", Typeflag: tar.TypeDir, Mode: 0o777}})},
		{"into a root-owned dir", "/etc", makeTar(t, tarEntry{hdr: tar.Header{Name: "evil", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")})},
	}
	for _, tc := range writes {
		t.Run("write/"+tc.name, func(t *testing.T) {
			_, err := e.client.WriteTar(ctx, tc.dir, false, bytes.NewReader(tc.tar))
			denied(t, "write", err)
		})
	}
	t.Run("mkdir through a symlink to /etc", func(t *testing.T) {
		denied(t, "mkdir", e.client.Mkdir(ctx, MkdirRequest{Path: "/home/user/app/made"}))
	})
	if got := treeState(t, filepath.Join(e.root, "etc")); got != etcBefore {
		t.Errorf("/etc changed:\nbefore %s\nafter  %s", etcBefore, got)
	}

	for _, p := range []string{"/root/secret", "/home/user/rootdir/secret", "/pub/secret"} {
		t.Run("read "+p, func(t *testing.T) {
			_, _, err := e.client.ReadFile(ctx, p, false)
			denied(t, "read", err)
			rc, _, err := e.client.ReadFile(ctx, p, true)
			if err != nil {
				t.Fatalf("sudo read: %v", err)
			}
			defer rc.Close()
			if b, _ := io.ReadAll(rc); string(b) != "root only" {
				t.Errorf("sudo read %q", b)
			}
		})
	}
	for _, p := range []string{"/root", "/home/user/rootdir", "/root/secret"} {
		t.Run("archive "+p, func(t *testing.T) {
			_, err := e.client.ReadArchive(ctx, p, false)
			denied(t, "archive", err)
		})
	}
	t.Run("archive leaves out what the user cannot read", func(t *testing.T) {
		names := func(sudo bool) string {
			rc, err := e.client.ReadArchive(ctx, "/pub", sudo)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var got []string
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					return strings.Join(got, ",")
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, h.Name)
			}
		}
		if got := names(false); got != "open" {
			t.Errorf("as the user: %q, want open", got)
		}
		if got := names(true); !strings.Contains(got, "secret") {
			t.Errorf("with sudo: %q, want secret too", got)
		}
	})

	// sudo keeps root's powers: through the same symlink, into /etc.
	data := makeTar(t, tarEntry{hdr: tar.Header{Name: "sudo-made", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")})
	if _, err := e.client.WriteTar(ctx, "/home/user/app", true, bytes.NewReader(data)); err != nil {
		t.Fatalf("sudo write: %v", err)
	}
	if err := e.client.Mkdir(ctx, MkdirRequest{Path: "/etc/sudo-dir", Sudo: true}); err != nil {
		t.Fatalf("sudo mkdir: %v", err)
	}
	for _, p := range []string{"etc/sudo-made", "etc/sudo-dir"} {
		fi, err := os.Stat(filepath.Join(e.root, p))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
	// And the user's own writes still work and are the user's.
	if _, err := e.client.WriteTar(ctx, "/home/user/proj", false, bytes.NewReader(data)); err != nil {
		t.Fatalf("write in the user's home: %v", err)
	}
	fi, err := os.Stat(filepath.Join(e.root, "home/user/proj/sudo-made"))
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != UserUID {
		t.Errorf("file in the user's home: %v", err)
	}
}

// TestReadProcAsUser: with the agent rooted at "/" as in a sandbox, the
// environment of a root process (a sudo command's secrets) is not readable
// without sudo.
func TestReadProcAsUser(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.Root = "/" })
	cmd := exec.Command("sleep", "30")
	cmd.Env = []string{"PADDOCK_TEST_SECRET=hunter2"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ"
	if _, _, err := e.client.ReadFile(testCtx(t), p, false); !errors.Is(err, sandbox.ErrForbidden) {
		t.Errorf("read %s as the user: %v, want forbidden", p, err)
	}
	// Bounded retries: one CI run read it empty once (cause not found:
	// the process had exec'd); the point here is who may read it.
	var b []byte
	for try := 0; try < 20 && !bytes.Contains(b, []byte("hunter2")); try++ {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		rc, _, err := e.client.ReadFile(testCtx(t), p, true)
		if err != nil {
			t.Fatalf("sudo read %s: %v", p, err)
		}
		b, _ = io.ReadAll(rc)
		rc.Close()
	}
	if !bytes.Contains(b, []byte("hunter2")) {
		t.Errorf("sudo read %s: %q", p, b)
	}
}

// treeState describes a tree's names, modes and sizes.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.FormatInt(fi.Size(), 10) + "; ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestAsUserStaysOnItsThread: the user's identity never reaches the
// threads other goroutines run on, however many operations run as the
// user meanwhile.
func TestAsUserStaysOnItsThread(t *testing.T) {
	requireRoot(t)
	u := DefaultUser("/tmp")
	stop := make(chan struct{})
	leaked := make(chan int, 8)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, id, _ := unix.Getresuid(); id != 0 {
					leaked <- id
					return
				}
				runtime.Gosched()
			}
		}()
	}
	var users sync.WaitGroup
	for range 200 {
		users.Add(1)
		go func() {
			defer users.Done()
			err := asUser(u, func() error {
				if _, id, _ := unix.Getresuid(); id != int(u.UID) {
					return fmt.Errorf("euid %d inside asUser", id)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	users.Wait()
	close(stop)
	wg.Wait()
	select {
	case id := <-leaked:
		t.Fatalf("a goroutine outside asUser ran with euid %d", id)
	default:
	}
}

// TestMkdirForUser: root makes what the user may not (a project's
// persistent path under a root-owned dir) and gives it to the user, but
// follows no symlink on the way.
func TestMkdirForUser(t *testing.T) {
	e := startServer(t, nil)
	userTree(t, e)
	ctx := testCtx(t)
	if err := os.Mkdir(filepath.Join(e.root, "opt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Mkdir(ctx, MkdirRequest{Path: "/opt/app/state", Mode: 0o2750, Sudo: true, ForUser: true}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"opt": "0:0 drwxr-xr-x", "opt/app": "1000:1000 drwxr-x---", "opt/app/state": "1000:1000 drwxr-x---"} {
		fi, err := os.Stat(filepath.Join(e.root, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fmt.Sprintf("%d:%d %v", st.Uid, st.Gid, fi.Mode()); got != want {
			t.Errorf("/%s: %s, want %s", p, got, want)
		}
	}
	etcBefore := treeState(t, filepath.Join(e.root, "etc"))
	err := e.client.Mkdir(ctx, MkdirRequest{Path: "/home/user/app/made", Sudo: true, ForUser: true})
	if sandbox.CodeOf(err) != "invalid_path" {
		t.Errorf("through the user's symlink: %v, want invalid_path", err)
	}
	if got := treeState(t, filepath.Join(e.root, "etc")); got != etcBefore {
		t.Errorf("/etc changed: %s", got)
	}
	if err := e.client.Mkdir(ctx, MkdirRequest{Path: "/x", ForUser: true}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("forUser without sudo: %v", err)
	}
}
