//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// scriptFrames turns fuzz input into frames: each frame takes a kind byte
// and a two-byte length, and its payload repeats the next byte (so short
// inputs can make frames big enough to cross log checkpoints).
func scriptFrames(script []byte) []Frame {
	var frames []Frame
	for len(script) >= 4 {
		kind, n, fill := script[0], int(binary.BigEndian.Uint16(script[1:3])), script[3]
		script = script[4:]
		frames = append(frames, Frame{Kind: kind, Data: bytes.Repeat([]byte{fill}, n)})
	}
	return frames
}

// FuzzCommandLog writes frames with the agent's own encoder into a command
// log and reads them back with the host's reader: decode(encode(x)) == x,
// every frame boundary is a valid resume offset, and nothing else is, for
// any offset a client sends (negative and past the end included).
func FuzzCommandLog(f *testing.F) {
	f.Add([]byte{}, int64(0))
	f.Add([]byte{1, 0, 6, 'a', 2, 0, 5, 'b', 3, 0, 2, '{'}, int64(11))
	f.Add([]byte{1, 0, 0, 0}, int64(-1))
	f.Add([]byte{1, 0, 0, 0}, int64(1<<62))
	f.Add(bytes.Repeat([]byte{1, 0xff, 0xff, 'x'}, 17), int64(1<<20+5)) // past the first checkpoint
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, script []byte, off int64) {
		frames := scriptFrames(script)
		logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		c := &command{id: "cmd-fuzz", log: logf, checkpoints: []int64{0}, changed: make(chan struct{})}
		boundaries := []int64{0}
		for _, fr := range frames {
			buf := make([]byte, frameHeader+len(fr.Data))
			copy(buf[frameHeader:], fr.Data)
			c.appendFrame(fr.Kind, buf)
			boundaries = append(boundaries, boundaries[len(boundaries)-1]+int64(len(buf)))
		}
		if c.logErr != nil {
			t.Fatal(c.logErr)
		}
		if c.size != boundaries[len(boundaries)-1] {
			t.Fatalf("log size %d, want %d", c.size, boundaries[len(boundaries)-1])
		}
		// Decode from the start, and resume from a boundary near off.
		for i, start := range []int64{0, boundaries[int(uint64(off)%uint64(len(boundaries)))]} {
			o := &OutputReader{body: io.NopCloser(nil), r: bufio.NewReader(io.NewSectionReader(logf, start, c.size-start)), offset: start}
			k := slices.Index(boundaries, start)
			for {
				fr, err := o.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("pass %d: frame %d: %v", i, k, err)
				}
				if k >= len(frames) || fr.Kind != frames[k].Kind || !bytes.Equal(fr.Data, frames[k].Data) || fr.Offset != boundaries[k+1] {
					t.Fatalf("pass %d: frame %d decoded as kind %d, %d bytes, offset %d", i, k, fr.Kind, len(fr.Data), fr.Offset)
				}
				k++
			}
			if k != len(frames) {
				t.Fatalf("pass %d: %d frames decoded, %d written", i, k, len(frames))
			}
		}
		for _, o := range []int64{off, off - 1, off + 1, boundaries[len(boundaries)-1], c.size + 1} {
			ok, err := c.validOffset(o)
			if err != nil {
				t.Fatalf("validOffset(%d): %v", o, err)
			}
			if want := slices.Contains(boundaries, o); ok != want {
				t.Fatalf("validOffset(%d) = %v, want %v (boundaries %v)", o, ok, want, boundaries)
			}
		}
		// The command is still usable: nothing left its lock held.
		if !c.mu.TryLock() {
			t.Fatal("validOffset left the command's lock held")
		}
		c.mu.Unlock()
	})
}
