package server

import (
	"encoding/json"
	"io"
	"unicode/utf8"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
)

// logEncoder turns output frames into NDJSON log lines. A chunk that ends
// inside a UTF-8 sequence keeps that tail back (per stream) and prepends it
// to the stream's next chunk, so text split by a pipe read never degrades to
// base64; only chunks that really are not UTF-8 go out as dataBase64.
type logEncoder struct {
	enc   *json.Encoder
	carry [2][]byte // incomplete trailing sequence of stdout, stderr
}

func newLogEncoder(w io.Writer) *logEncoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &logEncoder{enc: enc}
}

func streamOf(kind byte) (int, string) {
	if kind == agent.FrameStderr {
		return 1, api.StreamStderr
	}
	return 0, api.StreamStdout
}

// chunk encodes one output frame of kind FrameStdout or FrameStderr.
func (e *logEncoder) chunk(kind byte, data []byte) error {
	i, stream := streamOf(kind)
	buf := append(e.carry[i], data...)
	cut := incompleteTail(buf)
	e.carry[i] = append([]byte(nil), buf[cut:]...)
	return e.emit(stream, buf[:cut])
}

// flush writes what both streams hold back; the stream is ending, so an
// incomplete sequence will never complete and goes out as base64.
func (e *logEncoder) flush() error {
	for i, stream := range []string{api.StreamStdout, api.StreamStderr} {
		b := e.carry[i]
		e.carry[i] = nil
		if err := e.emit(stream, b); err != nil {
			return err
		}
	}
	return nil
}

func (e *logEncoder) emit(stream string, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	l := api.LogLine{Stream: stream}
	if utf8.Valid(b) {
		l.Data = string(b)
	} else {
		l.DataBase64 = b
	}
	return e.line(l)
}

func (e *logEncoder) line(l api.LogLine) error { return e.enc.Encode(l) }

// incompleteTail returns where a trailing, not yet complete UTF-8 sequence
// starts in b, or len(b) if b does not end inside one. Invalid lead bytes
// count as complete: holding them back would not make them valid.
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		c := b[i]
		switch {
		case c < utf8.RuneSelf:
			return len(b)
		case c >= 0xC0: // a lead byte
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
		// a continuation byte: its lead is further back
	}
	return len(b)
}
