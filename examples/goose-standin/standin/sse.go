package standin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// sseWriter writes one SSE response, each frame flushed at once. Frames
// from several goroutines (the turn and the heartbeat) are serialized.
type sseWriter struct {
	mu  sync.Mutex // guards w and err
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the first write error: the client is gone
}

// startSSE sends goosed's SSE headers and the 200.
func startSSE(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	rc := http.NewResponseController(w)
	// A turn can stream for minutes: no server write timeout applies.
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: rc}
	s.err = rc.Flush()
	return s
}

// write sends one whole frame and flushes it.
func (s *sseWriter) write(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, err := s.w.Write(frame); err != nil {
		s.err = err
		return err
	}
	if err := s.rc.Flush(); err != nil {
		s.err = err
	}
	return s.err
}

// dataFrame is "data: <json>\n\n"; with an id, "id: <seq>\n" comes first.
func dataFrame(id *uint64, data []byte) []byte {
	var b bytes.Buffer
	if id != nil {
		fmt.Fprintf(&b, "id: %d\n", *id)
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	return b.Bytes()
}

// Frame is one SSE frame as FrameReader reads it.
type Frame struct {
	// ID is the frame's "id:" field, "" when it has none.
	ID string
	// HasID tells an absent id from an empty one.
	HasID bool
	// Data is the frame's data lines joined by "\n".
	Data string
	// Comment is the text of a comment line (": ping 3" gives "ping 3"),
	// for frames that are only a comment.
	Comment string
}

// FrameReader reads SSE frames, for tests and clients of the stand-in (and
// of goosed): paddock's end-to-end tests read replies through the app proxy
// with it.
type FrameReader struct {
	r *bufio.Reader
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next frame; io.EOF when the stream ended between frames,
// io.ErrUnexpectedEOF when it ended inside one.
func (fr *FrameReader) Next() (Frame, error) {
	var (
		f       Frame
		data    []string
		started bool
	)
	for {
		line, err := fr.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				if started || line != "" {
					return f, io.ErrUnexpectedEOF
				}
				return f, io.EOF
			}
			return f, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if !started {
				continue
			}
			f.Data = strings.Join(data, "\n")
			return f, nil
		}
		started = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			f.Comment = value
		case "id":
			f.ID, f.HasID = value, true
		case "data":
			data = append(data, value)
		}
	}
}
