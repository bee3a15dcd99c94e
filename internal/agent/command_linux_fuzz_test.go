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
		if kind == 0 || kind >= FrameGap {
			// The agent logs only what commands wrote and their exit; a
			// gap is made by readers, never written.
			kind = FrameStdout + kind%3
		}
		script = script[4:]
		frames = append(frames, Frame{Kind: kind, Data: bytes.Repeat([]byte{fill}, n)})
	}
	return frames
}

// FuzzCommandLog writes frames with the agent's own encoder into a command
// log (segmented, as the agent keeps it) and reads them back with the
// host's reader over the store's own read steps: decode(encode(x)) == x,
// offsets run on across segments, every frame boundary is a valid resume
// offset and nothing else is, for any offset a client sends (negative and
// past the end included).
func FuzzCommandLog(f *testing.F) {
	f.Add([]byte{}, int64(0))
	f.Add([]byte{1, 0, 6, 'a', 2, 0, 5, 'b', 3, 0, 2, '{'}, int64(11))
	f.Add([]byte{1, 0, 0, 0}, int64(-1))
	f.Add([]byte{1, 0, 0, 0}, int64(1<<62))
	f.Add(bytes.Repeat([]byte{1, 0xff, 0xff, 'x'}, 5), int64(1<<16+5)) // across segments
	f.Fuzz(func(t *testing.T, script []byte, off int64) {
		frames := scriptFrames(script)
		// At most 4 MiB of frames, segments of 64 KiB and caps past that:
		// no rotation here (rotation has its own tests), every byte is kept.
		for total, i := 0, 0; i < len(frames); i++ {
			if total += frameHeader + len(frames[i].Data); total > 4<<20 {
				frames = frames[:i]
				break
			}
		}
		store := newLogStore(ServerConfig{StateDir: t.TempDir(), MaxLogBytes: 8 << 20, MaxLogTotalBytes: 64 << 20, MaxLogFiles: 1 << 10})
		store.segSize = 64 << 10
		defer store.close()
		c := &command{id: "cmd-fuzz", store: store, out: store.newLog("cmd-fuzz")}
		boundaries := []int64{0}
		for _, fr := range frames {
			buf := make([]byte, frameHeader+len(fr.Data))
			copy(buf[frameHeader:], fr.Data)
			c.appendFrame(fr.Kind, buf)
			boundaries = append(boundaries, boundaries[len(boundaries)-1]+int64(len(buf)))
		}
		end := boundaries[len(boundaries)-1]
		if c.out.size != end {
			t.Fatalf("log size %d, want %d", c.out.size, end)
		}
		// Decode from the start, and resume from a boundary near off.
		for i, start := range []int64{0, boundaries[int(uint64(off)%uint64(len(boundaries)))]} {
			k := slices.Index(boundaries, start)
			for pos := start; pos < end; {
				st := store.next(c.out, pos)
				if st.seg == "" {
					t.Fatalf("pass %d: nothing to read at %d of %d: %+v", i, pos, end, st)
				}
				seg, err := os.Open(filepath.Join(store.dir, st.seg))
				if err != nil {
					t.Fatal(err)
				}
				o := &OutputReader{body: io.NopCloser(nil), r: bufio.NewReader(io.NewSectionReader(seg, st.from-st.segBase, st.to-st.from)), offset: st.from}
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
				seg.Close()
				pos = st.to
			}
			if k != len(frames) {
				t.Fatalf("pass %d: %d frames decoded, %d written", i, k, len(frames))
			}
		}
		for _, o := range []int64{off, off - 1, off + 1, end, end + 1} {
			ok, err := store.validOffset(c.out, o)
			if err != nil {
				t.Fatalf("validOffset(%d): %v", o, err)
			}
			if want := slices.Contains(boundaries, o); ok != want {
				t.Fatalf("validOffset(%d) = %v, want %v (boundaries %v)", o, ok, want, boundaries)
			}
		}
		// The store is still usable: nothing left its lock held.
		if !store.mu.TryLock() {
			t.Fatal("validOffset left the store's lock held")
		}
		store.mu.Unlock()
	})
}
