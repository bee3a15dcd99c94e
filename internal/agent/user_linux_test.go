//go:build linux

package agent

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// withEtc writes etc files into the server's root before it starts and
// sets its image user.
func withEtc(user string, files map[string]string, links map[string]string) func(*ServerConfig) {
	return func(cfg *ServerConfig) {
		cfg.ImageUser = user
		etc := filepath.Join(cfg.Root, "etc")
		if err := os.MkdirAll(etc, 0o755); err != nil {
			panic(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(cfg.Root, name), []byte(content), 0o644); err != nil {
				panic(err)
			}
		}
		for name, target := range links {
			if err := os.Symlink(target, filepath.Join(cfg.Root, name)); err != nil {
				panic(err)
			}
		}
	}
}

// TestServerImageUser: the image's user, resolved in the agent's root, runs
// commands, gets HOME and the default cwd, and owns what is written for it;
// sudo is still root.
func TestServerImageUser(t *testing.T) {
	e := startServer(t, withEtc("app", map[string]string{
		// Home /tmp: commands run on the host's filesystem in this test.
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/tmp:/bin/sh\n",
		"etc/group":  "appgrp:x:2345:\nextra:x:3456:app\n",
	}, nil))
	ctx := testCtx(t)
	info, err := e.client.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.UserError != nil || info.User == nil || info.User.UID != 1234 || info.User.GID != 2345 || info.User.Home != "/tmp" {
		t.Fatalf("ping user = %+v, error %+v", info.User, info.UserError)
	}

	cmd := e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", "id -u; id -g; id -G; echo $HOME $USER; pwd"}})
	out, errOut, _ := readOutput(t, e.client, cmd.ID, 0, false, nil)
	if want := "1234\n2345\n2345 3456\n/tmp app\n/tmp\n"; string(out) != want {
		t.Errorf("stdout = %q, want %q (stderr %q)", out, want, errOut)
	}
	cmd = e.run(t, CommandRequest{Cmd: "id", Args: []string{"-u"}, Sudo: true})
	if out, _, _ := readOutput(t, e.client, cmd.ID, 0, false, nil); string(out) != "0\n" {
		t.Errorf("sudo id -u = %q, want 0", out)
	}

	data := makeTar(t, tarEntry{hdr: tar.Header{Name: "d/f.txt", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")})
	if _, err := e.client.WriteTar(ctx, "/up", false, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Mkdir(ctx, MkdirRequest{Path: "/made/sub"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"up", "up/d", "up/d/f.txt", "made", "made/sub"} {
		fi, err := os.Lstat(filepath.Join(e.root, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 2345 {
			t.Errorf("/%s owned by %d:%d, want 1234:2345", p, st.Uid, st.Gid)
		}
	}
}

// TestServerImageUserUnknown: a name the image lacks is reported in the ping
// answer, and the agent refuses every command and write.
func TestServerImageUserUnknown(t *testing.T) {
	e := startServer(t, withEtc("nosuch", map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"}, nil))
	ctx := testCtx(t)
	info, err := e.client.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := info.UserErr(); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != CodeUserUnknown || info.User != nil {
		t.Fatalf("ping: user %+v, error %v; want %s", info.User, err, CodeUserUnknown)
	}
	for name, call := range map[string]func() error{
		"start": func() error {
			_, err := e.client.Start(ctx, CommandRequest{Cmd: "true", Sudo: true})
			return err
		},
		"write": func() error {
			_, err := e.client.WriteTar(ctx, "/x", false, bytes.NewReader(makeTar(t)))
			return err
		},
		"mkdir": func() error { return e.client.Mkdir(ctx, MkdirRequest{Path: "/x"}) },
	} {
		if err := call(); sandbox.CodeOf(err) != CodeUserUnknown {
			t.Errorf("%s: %v, want %s", name, err, CodeUserUnknown)
		}
	}
}

// TestServerImageUserHostile: the image's user files are read inside the
// root (an absolute symlink resolves there, not on the host), at most
// MaxUserDBBytes of them, and a directory in their place reads as empty.
func TestServerImageUserHostile(t *testing.T) {
	t.Run("symlink resolves in the root", func(t *testing.T) {
		// /etc/hostile-passwd exists only inside the root.
		e := startServer(t, withEtc("app", map[string]string{
			"etc/hostile-passwd": "app:x:1234:1234::/tmp:/bin/sh\n",
		}, map[string]string{"etc/passwd": "/etc/hostile-passwd"}))
		info, err := e.client.Ping(testCtx(t))
		if err != nil || info.User == nil || info.User.UID != 1234 {
			t.Fatalf("ping = %+v, %v", info, err)
		}
	})
	t.Run("symlink to a host file", func(t *testing.T) {
		// The link names a host file that has the user; inside the root
		// the same path does not exist, so the user is unknown.
		hostFile := filepath.Join(t.TempDir(), "passwd")
		if err := os.WriteFile(hostFile, []byte("app:x:1234:1234::/tmp:/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e := startServer(t, withEtc("app", nil, map[string]string{"etc/passwd": hostFile}))
		info, err := e.client.Ping(testCtx(t))
		if err != nil || sandbox.CodeOf(info.UserErr()) != CodeUserUnknown {
			t.Fatalf("ping = %+v, %v; want %s", info, err, CodeUserUnknown)
		}
	})
	t.Run("huge file", func(t *testing.T) {
		filler := strings.Repeat("junk:x:1:1::/junk:/bin/sh\n", MaxUserDBBytes/26+10)
		e := startServer(t, withEtc("late", map[string]string{
			"etc/passwd": "early:x:1111:1111::/tmp:/bin/sh\n" + filler + "late:x:2222:2222::/tmp:/bin/sh\n",
		}, nil))
		info, err := e.client.Ping(testCtx(t))
		if err != nil || sandbox.CodeOf(info.UserErr()) != CodeUserUnknown {
			t.Fatalf("an entry past the cap: ping = %+v, %v; want %s", info, err, CodeUserUnknown)
		}
	})
	t.Run("directory", func(t *testing.T) {
		e := startServer(t, func(cfg *ServerConfig) {
			cfg.ImageUser = "4321"
			if err := os.MkdirAll(filepath.Join(cfg.Root, "etc/passwd"), 0o755); err != nil {
				t.Fatal(err)
			}
		})
		info, err := e.client.Ping(testCtx(t))
		if err != nil || info.User == nil || info.User.UID != 4321 || info.User.GID != 0 || info.User.Home != "/" {
			t.Fatalf("ping = %+v, %v", info, err)
		}
	})
}

// TestServerDefaultUser: no image user (or root) keeps uid 1000 and the
// configured home.
func TestServerDefaultUser(t *testing.T) {
	for _, user := range []string{"", "root", "0:0"} {
		e := startServer(t, func(cfg *ServerConfig) { cfg.ImageUser = user })
		info, err := e.client.Ping(testCtx(t))
		if err != nil || info.User == nil || info.User.UID != UserUID || info.User.GID != UserGID || info.User.Home != "/tmp" {
			t.Errorf("user %q: ping = %+v, %v", user, info.User, err)
		}
		cmd := e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", "id -u; id -G; echo $HOME $USER"}})
		if out, _, _ := readOutput(t, e.client, cmd.ID, 0, false, nil); string(out) != "1000\n1000\n/tmp user\n" {
			t.Errorf("user %q: stdout = %q", user, out)
		}
	}
}
