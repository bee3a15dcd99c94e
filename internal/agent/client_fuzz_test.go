package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// encodeFrames writes frames in the agent's log format, as the host
// expects them on the wire.
func encodeFrames(frames []Frame) []byte {
	var buf bytes.Buffer
	for _, fr := range frames {
		var hdr [5]byte
		hdr[0] = fr.Kind
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(fr.Data)))
		buf.Write(hdr[:])
		buf.Write(fr.Data)
	}
	return buf.Bytes()
}

// FuzzOutputReader feeds the host's frame reader whatever an agent (code in
// the sandbox) might send: every frame it returns is exactly the bytes at
// its offset, no frame is larger than MaxFrame, a clean io.EOF comes only
// at a frame boundary, and anything else ends in ErrAgentProtocol.
func FuzzOutputReader(f *testing.F) {
	exit := []byte(`{"id":"cmd-1","cmd":"true","cwd":"/","status":"exited","exitCode":0,"startedAt":"2026-01-02T03:04:05Z"}`)
	f.Add([]byte{}, int64(0))
	f.Add(encodeFrames([]Frame{{Kind: FrameStdout, Data: []byte("hello\n")}, {Kind: FrameStderr, Data: []byte("oops\n")}, {Kind: FrameExit, Data: exit}}), int64(0))
	f.Add(encodeFrames([]Frame{{Kind: FrameStdout}, {Kind: 9, Data: []byte("unknown kind")}}), int64(1234))
	f.Add([]byte{1, 0, 0}, int64(0))                                       // truncated header
	f.Add([]byte{1, 0, 0, 0, 9, 'a'}, int64(0))                            // truncated payload
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff}, int64(0))                     // 4 GiB frame
	f.Add([]byte{1, 0, 0x10, 0, 1}, int64(0))                              // MaxFrame + 1
	f.Add(append([]byte{1, 0, 0x10, 0, 0}, make([]byte, 16)...), int64(0)) // MaxFrame, cut short
	f.Fuzz(func(t *testing.T, data []byte, start int64) {
		if start < 0 || start > 1<<62 {
			return // offsets are the host's own, from 0
		}
		o := &OutputReader{body: io.NopCloser(nil), r: bufio.NewReaderSize(bytes.NewReader(data), 64<<10), offset: start}
		pos, offset := 0, start
		for {
			fr, err := o.Next()
			if err == io.EOF {
				if pos != len(data) {
					t.Fatalf("clean EOF at %d of %d bytes", pos, len(data))
				}
				return
			}
			rest := data[pos:]
			if err != nil {
				if !errors.Is(err, sandbox.ErrAgentProtocol) {
					t.Fatalf("at %d: %v, want ErrAgentProtocol", pos, err)
				}
				if len(rest) >= 5 {
					n := int(binary.BigEndian.Uint32(rest[1:5]))
					if n <= frameLimit(rest[0]) && len(rest) >= 5+n && !badGap(rest[0], rest[5:5+n], offset) {
						t.Fatalf("at %d: %v for a whole frame of %d bytes", pos, err, n)
					}
				}
				return
			}
			n := len(fr.Data)
			switch {
			case n > frameLimit(fr.Kind):
				t.Fatalf("frame of kind %d with %d bytes, past its limit", fr.Kind, n)
			case len(rest) < 5+n || rest[0] != fr.Kind || int(binary.BigEndian.Uint32(rest[1:5])) != n || !bytes.Equal(rest[5:5+n], fr.Data):
				t.Fatalf("at %d: frame kind %d with %d bytes is not what was sent", pos, fr.Kind, n)
			}
			pos += 5 + n
			if fr.Kind == FrameGap {
				// A gap is not in the log: it moves the offset forward to
				// where the stream resumes.
				to := int64(binary.BigEndian.Uint64(fr.Data))
				if fr.Dropped != to-offset {
					t.Fatalf("gap to %d from %d says %d dropped", to, offset, fr.Dropped)
				}
				offset = to
			} else {
				offset += 5 + int64(n)
			}
			if fr.Offset != offset {
				t.Fatalf("frame offset %d, want %d", fr.Offset, offset)
			}
		}
	})
}

// frameLimit is the largest payload the host takes in a frame of kind.
func frameLimit(kind byte) int {
	if kind == FrameExit {
		return maxCommandAnswer
	}
	return MaxFrame
}

// badGap reports whether a whole frame is a gap the host must refuse: one
// whose payload is not an 8-byte offset, or that does not move forward.
func badGap(kind byte, payload []byte, offset int64) bool {
	return kind == FrameGap && (len(payload) != 8 || int64(binary.BigEndian.Uint64(payload)) <= offset)
}
