//go:build linux

package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// logFrames reads a command's whole output from offset, without follow.
func logFrames(t *testing.T, c *Client, id string, offset int64) []Frame {
	t.Helper()
	out, err := c.Output(testCtx(t), id, offset, false)
	if err != nil {
		t.Fatalf("output from %d: %v", offset, err)
	}
	defer out.Close()
	var frames []Frame
	for {
		f, err := out.Next()
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Fatalf("next frame: %v", err)
		}
		frames = append(frames, f)
	}
}

// stdoutOf joins the stdout frames.
func stdoutOf(frames []Frame) []byte {
	var b bytes.Buffer
	for _, f := range frames {
		if f.Kind == FrameStdout {
			b.Write(f.Data)
		}
	}
	return b.Bytes()
}

// checkMonotonic fails unless offsets only grow.
func checkMonotonic(t *testing.T, frames []Frame, from int64) {
	t.Helper()
	for i, f := range frames {
		if f.Offset <= from {
			t.Fatalf("frame %d (kind %d) at offset %d, not past %d", i, f.Kind, f.Offset, from)
		}
		from = f.Offset
	}
}

// dirBytes sums the sizes of the files in dir.
func dirBytes(t *testing.T, dir string) (total int64, files int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ChangesMark {
			continue // the agent's start mark (an empty file), no log
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		files++
	}
	return total, files
}

// TestCommandLogRotation: past its cap a command's log drops its oldest
// output. A reader from before what is kept gets a gap frame, then the
// newest output in order and the exit; offsets stay valid and only grow.
func TestCommandLogRotation(t *testing.T) {
	const capBytes = 256 << 10
	e := startServer(t, func(c *ServerConfig) { c.MaxLogBytes = capBytes })
	const n = 200_000 // about 1.3 MB of numbered lines
	want := seqOutput(n)
	done := e.run(t, CommandRequest{Cmd: "seq", Args: []string{"1", strconv.Itoa(n)}})
	if done.Status != StatusExited {
		t.Fatalf("seq: %+v", done)
	}
	if size, _ := dirBytes(t, e.cfg.StateDir); size > capBytes {
		t.Errorf("%d bytes of log on disk, cap %d", size, capBytes)
	}

	frames := logFrames(t, e.client, done.ID, 0)
	if len(frames) < 3 || frames[0].Kind != FrameGap || frames[len(frames)-1].Kind != FrameExit {
		t.Fatalf("want a gap, output, the exit; got %d frames, first kind %d", len(frames), frames[0].Kind)
	}
	checkMonotonic(t, frames, 0)
	gap := frames[0]
	if gap.Dropped != gap.Offset || gap.Dropped < int64(len(want))-capBytes {
		t.Errorf("gap to %d dropping %d bytes of a %d-byte output", gap.Offset, gap.Dropped, len(want))
	}
	kept := stdoutOf(frames)
	if !bytes.HasSuffix(want, kept) || len(kept) < capBytes*3/4 {
		t.Fatalf("kept %d bytes, not the last of the output (or too few)", len(kept))
	}

	// Every start before the window gets the same gap; from the gap's
	// offset, the same frames without it.
	for _, off := range []int64{1, gap.Offset - 1} {
		again := logFrames(t, e.client, done.ID, off)
		if again[0].Kind != FrameGap || again[0].Offset != gap.Offset || again[0].Dropped != gap.Offset-off {
			t.Errorf("from %d: first frame %+v, want a gap to %d", off, again[0].Kind, gap.Offset)
		}
	}
	from := logFrames(t, e.client, done.ID, gap.Offset)
	if from[0].Kind == FrameGap || !bytes.Equal(stdoutOf(from), kept) {
		t.Errorf("from the gap's offset: first kind %d, %d bytes", from[0].Kind, len(stdoutOf(from)))
	}
	// A frame boundary inside the window resumes there; inside a frame it
	// is refused as before.
	mid := frames[len(frames)/2]
	rest := logFrames(t, e.client, done.ID, mid.Offset)
	if rest[0].Kind == FrameGap || !bytes.HasSuffix(kept, stdoutOf(rest)) || rest[len(rest)-1].Kind != FrameExit {
		t.Errorf("resume at %d: first kind %d", mid.Offset, rest[0].Kind)
	}
	if _, err := e.client.Output(testCtx(t), done.ID, mid.Offset+1, false); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("offset inside a frame: %v, want invalid", err)
	}
	end := frames[len(frames)-1].Offset
	if _, err := e.client.Output(testCtx(t), done.ID, end+1, false); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("offset past the end: %v, want invalid", err)
	}
}

// TestCommandLogStalledFollower: a follower that stops reading while the
// command writes past the cap resumes with a gap, never an error, and never
// holds the command back.
func TestCommandLogStalledFollower(t *testing.T) {
	const capBytes = 256 << 10
	e := startServer(t, func(c *ServerConfig) { c.MaxLogBytes = capBytes })
	ctx := testCtx(t)
	const n = 200_000
	want := seqOutput(n)
	// The first thousand lines, then the rest once stdin closes.
	cmd, err := e.client.Start(ctx, CommandRequest{Cmd: "sh", Args: []string{"-c",
		"seq 1 1000; read x; seq 1001 " + strconv.Itoa(n)}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.client.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var frames []Frame
	for len(stdoutOf(frames)) < len(seqOutput(1000)) {
		f, err := out.Next()
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	if err := e.client.Stdin(ctx, cmd.ID, strings.NewReader("go\n"), true); err != nil {
		t.Fatal(err)
	}
	if done, err := e.client.Wait(ctx, cmd.ID); err != nil || done.Status != StatusExited {
		t.Fatalf("wait: %+v %v", done, err)
	}
	for {
		f, err := out.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	checkMonotonic(t, frames, 0)
	// The output between gaps, in order. A follower the socket still
	// accepted frames from when the cap first passed it may fall behind
	// more than once, so there is at least one gap, not exactly one.
	pieces := []*bytes.Buffer{{}}
	for _, f := range frames {
		switch f.Kind {
		case FrameGap:
			pieces = append(pieces, &bytes.Buffer{})
		case FrameStdout:
			pieces[len(pieces)-1].Write(f.Data)
		}
	}
	if len(pieces) < 2 || frames[len(frames)-1].Kind != FrameExit {
		t.Fatalf("%d gaps, last kind %d; want a gap and the exit", len(pieces)-1, frames[len(frames)-1].Kind)
	}
	first, last := pieces[0].Bytes(), pieces[len(pieces)-1].Bytes()
	if !bytes.HasPrefix(want, first) || !bytes.HasSuffix(want, last) || len(last) < capBytes/2 {
		t.Errorf("before the first gap %d bytes, after the last %d: not the start and the end of the output", len(first), len(last))
	}
	// Each piece is output in order: it comes after the one before it.
	at := len(first)
	for i, p := range pieces[1:] {
		j := bytes.Index(want[at:], p.Bytes())
		if j < 0 {
			t.Fatalf("piece %d after a gap (%d bytes) is not the output that follows", i+1, p.Len())
		}
		at += j + p.Len()
	}
}

// TestCommandLogBudget: the sandbox-wide caps drop the oldest commands'
// output first; their exit frames stay.
func TestCommandLogBudget(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*ServerConfig)
		script string // run three times
	}{
		{"bytes", func(c *ServerConfig) { c.MaxLogBytes, c.MaxLogTotalBytes = 256<<10, 512<<10 }, "head -c 200000 /dev/zero"},
		{"files", func(c *ServerConfig) { c.MaxLogFiles = 2 }, "echo hello"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := startServer(t, tc.mod)
			var ids []string
			for range 3 {
				done := e.run(t, CommandRequest{Cmd: "sh", Args: []string{"-c", tc.script}})
				if done.Status != StatusExited {
					t.Fatalf("%+v", done)
				}
				ids = append(ids, done.ID)
			}
			cfg := e.srv.cfg // with the defaults filled in
			size, files := dirBytes(t, cfg.StateDir)
			if size > cfg.MaxLogTotalBytes || files > cfg.MaxLogFiles {
				t.Errorf("%d bytes in %d files on disk; caps %d and %d", size, files, cfg.MaxLogTotalBytes, cfg.MaxLogFiles)
			}
			first := logFrames(t, e.client, ids[0], 0)
			if first[0].Kind != FrameGap || first[len(first)-1].Kind != FrameExit {
				t.Errorf("oldest command: first kind %d, last %d; want its output dropped, its exit kept", first[0].Kind, first[len(first)-1].Kind)
			}
			last := logFrames(t, e.client, ids[2], 0)
			if last[0].Kind == FrameGap || last[len(last)-1].Kind != FrameExit {
				t.Errorf("newest command: first kind %d; want its output whole", last[0].Kind)
			}
		})
	}
}

// TestCommandLogFullDisk: output that cannot be stored (the state dir's
// filesystem is full) is a gap; the command's exit is still told, and
// logging resumes once there is room.
func TestCommandLogFullDisk(t *testing.T) {
	state := t.TempDir()
	if err := unix.Mount("tmpfs", state, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700"); err != nil {
		t.Skipf("needs a tmpfs mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(state, unix.MNT_DETACH) })
	e := startServer(t, func(c *ServerConfig) { c.StateDir = state })
	// Someone else's file (a sudo command's) fills the filesystem.
	filler := filepath.Join(state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	done := e.run(t, CommandRequest{Cmd: "echo", Args: []string{"lost"}})
	frames := logFrames(t, e.client, done.ID, 0)
	if len(frames) != 2 || frames[0].Kind != FrameGap || frames[1].Kind != FrameExit {
		t.Fatalf("frames %+v; want a gap and the exit", frames)
	}
	os.Remove(filler)
	done = e.run(t, CommandRequest{Cmd: "echo", Args: []string{"kept"}})
	if got := stdoutOf(logFrames(t, e.client, done.ID, 0)); string(got) != "kept\n" {
		t.Errorf("after room was made: %q", got)
	}
}
