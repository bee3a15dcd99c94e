package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// TestTerminalAndWatch drives a terminal session and a directory watch in a
// real sandbox through the SDK, and `paddock sandbox shell` on a real
// pseudo-terminal as a person at a keyboard would: type a command, read its
// output, resize the window, exit with a code.
func TestTerminalAndWatch(t *testing.T) {
	requireSandboxes(t)
	s := startStack(t, newDataDir(t), stackOptions{})
	ctx := ctxFor(t, 5*time.Minute)
	sb, err := s.client.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("watch", func(t *testing.T) {
		w, err := sb.Watch(ctx, "/home/user", sdk.Recursive())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "mkdir -p a/b && echo x > a/b/f && mv a/b/f a/b/g && chmod 600 a/b/g && rm a/b/g"}}); err != nil {
			t.Fatal(err)
		}
		want := []api.WatchEvent{
			{Type: api.WatchCreate, Name: "a/b/f", Path: "/home/user/a/b/f"},
			{Type: api.WatchRename, Name: "a/b/f", Path: "/home/user/a/b/f"},
			{Type: api.WatchCreate, Name: "a/b/g", Path: "/home/user/a/b/g"},
			{Type: api.WatchChmod, Name: "a/b/g", Path: "/home/user/a/b/g"},
			{Type: api.WatchRemove, Name: "a/b/g", Path: "/home/user/a/b/g"},
		}
		var got []api.WatchEvent
		for len(want) > 0 {
			ev, err := w.Next()
			if err != nil {
				t.Fatalf("waiting for %+v after %+v: %v", want[0], got, err)
			}
			got = append(got, ev)
			if ev == want[0] {
				want = want[1:]
			}
		}
		// The user's watch does not reach what the user cannot read.
		if _, err := sb.Watch(ctx, "/root"); !errors.Is(err, sdk.ErrForbidden) {
			t.Errorf("watch /root as the user: %v, want forbidden", err)
		}
	})

	t.Run("sdk", func(t *testing.T) {
		p, err := sb.StartPTY(ctx, api.PTYRequest{Rows: 20, Cols: 70, Tag: "sdk"})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(ctx, []byte("stty size; echo v$((6*7))\n")); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		for l, err := range p.Output(ctx, 0) {
			if err != nil {
				t.Fatal(err)
			}
			out.Write(l.Data)
			if strings.Contains(out.String(), "v42") {
				break
			}
		}
		if !strings.Contains(out.String(), "20 70") {
			t.Errorf("stty size: %q", out.String())
		}
		if err := p.Write(ctx, []byte("exit 4\n")); err != nil {
			t.Fatal(err)
		}
		if done, err := p.Wait(ctx); err != nil || done.ExitCodeOr(-1) != 4 {
			t.Errorf("exit: %+v %v", done, err)
		}
		// A terminal session is a command: it is in the sandbox's list.
		cmds, err := sb.Commands(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range cmds {
			found = found || c.ID == p.ID && c.PTY != nil && c.Tag == "sdk"
		}
		if !found {
			t.Errorf("terminal session %s not in the command list", p.ID)
		}
	})

	t.Run("cli", func(t *testing.T) {
		bin := buildPaddock(t)
		cmd := exec.CommandContext(ctx, bin, "sandbox", "shell", sb.ID)
		cmd.Env = append(os.Environ(), "PADDOCK_URL="+s.http.URL, "PADDOCK_TOKEN="+s.token, "TERM=xterm")
		ptm, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
		if err != nil {
			t.Fatal(err)
		}
		defer ptm.Close()
		screen := &screenBuffer{}
		copied := make(chan struct{})
		go func() { defer close(copied); _, _ = io.Copy(screen, ptm) }()
		typeLine := func(line string) {
			t.Helper()
			if _, err := ptm.Write([]byte(line + "\r")); err != nil {
				t.Fatal(err)
			}
		}

		typeLine("echo $((6*7))x; stty size")
		screen.expect(t, "42x", "30 90")
		// A resize of this window reaches the session (SIGWINCH, then a
		// resize request): ask until the new size shows.
		if err := pty.Setsize(ptm, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for k := 1; !screen.has("40 120"); k++ {
			if time.Now().After(deadline) {
				t.Fatalf("the new size never showed: %q", screen.String())
			}
			typeLine(fmt.Sprintf("stty size; echo r$((%d*7))", k))
			screen.expect(t, fmt.Sprintf("r%d", k*7))
		}
		typeLine("exit 7")
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 7 {
			t.Errorf("paddock sandbox shell exit: %v, want 7; screen %q", err, screen.String())
		}
		ptm.Close()
		<-copied
	})
}

// screenBuffer collects what a terminal shows.
type screenBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *screenBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *screenBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *screenBuffer) has(s string) bool { return strings.Contains(b.String(), s) }

// expect waits until the screen shows every one of want.
func (b *screenBuffer) expect(t *testing.T, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		all := true
		for _, w := range want {
			all = all && b.has(w)
		}
		if all {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the screen never showed %q: %q", want, b.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
