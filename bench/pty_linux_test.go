package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// BenchmarkPTYEcho is a keystroke's echo round trip through a terminal
// session, as `paddock sandbox shell` sees it: one byte typed through the
// API (POST .../pty/{cmd}/input) until the terminal's echo arrives on the
// followed output stream (GET .../pty/{cmd}/output), with `cat` on the
// terminal so the echo is the line discipline's. The baseline, in the same
// run, is the same keystroke on a local pseudo-terminal running cat on the
// host: write to its master, read the echo back.
//
//	go test -run '^$' -bench PTYEcho -benchtime 500x ./bench/
func BenchmarkPTYEcho(b *testing.B) {
	ctx := context.Background()
	if why := doctor.SandboxReady(ctx); why != "" {
		b.Skip("sandboxes cannot run here: " + why)
	}
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "pb-")
	if err != nil {
		b.Fatal(err)
	}
	var sandboxID string
	b.Cleanup(func() {
		checkNoLeaks(b, dir, sandboxID)
		os.RemoveAll(dir)
	})
	d, hs := startDaemon(b, daemon.Config{DataDir: dir, NoNetwork: true, MaxTimeout: time.Hour}, agentPath)
	mgr := d.Node()
	b.Cleanup(func() {
		items, _, _ := mgr.List(ctx, sandbox.ListOptions{Limit: 500})
		for _, sb := range items {
			if err := mgr.Delete(ctx, sb.ID); err != nil {
				b.Errorf("cleanup: delete %s: %v", sb.ID, err)
			}
		}
	})
	token, _ := d.AdminToken()
	client := sdk.New(hs.URL, token)
	sb, err := client.Create(ctx, api.CreateSandboxRequest{TimeoutMs: time.Hour.Milliseconds()})
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	sandboxID = sb.ID
	p, err := sb.StartPTY(ctx, api.PTYRequest{Cmd: "cat"})
	if err != nil {
		b.Fatalf("start the terminal: %v", err)
	}
	sctx, stop := context.WithCancel(ctx)
	echoes := make(chan []byte, 64)
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for l, err := range p.Output(sctx, 0) {
			if err != nil {
				return
			}
			if len(l.Data) > 0 {
				echoes <- l.Data
			}
		}
	}()
	b.Cleanup(func() {
		_ = p.Kill(ctx, "SIGKILL")
		stop()
		<-streamDone
	})

	local := startLocalEcho(b)
	keystroke := func(send func([]byte) error, recv func() []byte) time.Duration {
		start := time.Now()
		if err := send([]byte("a")); err != nil {
			b.Fatalf("type: %v", err)
		}
		for got := []byte{}; !bytes.Contains(got, []byte("a")); {
			got = append(got, recv()...)
		}
		return time.Since(start)
	}
	recvRemote := func() []byte {
		select {
		case data := <-echoes:
			return data
		case <-time.After(10 * time.Second):
			b.Fatal("no echo from the sandbox's terminal within 10s")
			return nil
		}
	}
	// The first keystrokes warm connections on both paths.
	for range 3 {
		keystroke(func(d []byte) error { return p.Write(ctx, d) }, recvRemote)
		keystroke(local.send, local.recv)
	}
	var ours, base []time.Duration
	for b.Loop() {
		ours = append(ours, keystroke(func(d []byte) error { return p.Write(ctx, d) }, recvRemote))
		b.StopTimer()
		base = append(base, keystroke(local.send, local.recv))
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(ours, 50)), "p50-ms")
	b.ReportMetric(ms(pct(ours, 99)), "p99-ms")
	b.ReportMetric(ms(pct(base, 50)), "local-pty-p50-ms")
	b.ReportMetric(ms(pct(base, 99)), "local-pty-p99-ms")
	b.ReportMetric(ms(pct(ours, 50))-ms(pct(base, 50)), "added-p50-ms")
}

// localEcho is cat on a pseudo-terminal of the host.
type localEcho struct {
	ptm *os.File
	buf []byte
}

func startLocalEcho(b *testing.B) *localEcho {
	b.Helper()
	cmd := exec.Command("cat")
	ptm, err := pty.Start(cmd)
	if err != nil {
		b.Fatalf("local terminal: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		ptm.Close()
	})
	return &localEcho{ptm: ptm, buf: make([]byte, 4096)}
}

func (l *localEcho) send(d []byte) error { _, err := l.ptm.Write(d); return err }

func (l *localEcho) recv() []byte {
	n, _ := l.ptm.Read(l.buf)
	return l.buf[:n]
}
