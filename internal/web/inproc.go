package web

import (
	"io"
	"net/http"
	"strconv"
	"sync"
)

// inProcess is an http.RoundTripper that serves requests with an
// http.Handler in this process (the API's), so the dashboard reads
// through the Go SDK exactly what a client would, with the same
// authentication and team scoping, without a socket. The response body
// streams: the handler runs in a goroutine that ends when it returns,
// which it does when the request's context ends or the body is closed
// (its writes then fail).
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, body: pw, ready: make(chan struct{})}
	r := req.Clone(req.Context())
	r.RequestURI = r.URL.RequestURI()
	r.RemoteAddr = "127.0.0.1:0"
	if r.Body == nil {
		r.Body = http.NoBody
	}
	go func() {
		defer func() {
			w.start(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(w, r)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	// A length the handler declared is the body's, as on the wire (a file
	// read's size reaches the SDK's FileInfo).
	length, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64)
	if err != nil || length < 0 {
		length = -1
	}
	resp := &http.Response{Status: http.StatusText(w.status), StatusCode: w.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: readCloser{pr}, ContentLength: length, Request: req}
	return resp, nil
}

// readCloser closes the pipe's read side, which fails the handler's next write.
type readCloser struct{ *io.PipeReader }

func (r readCloser) Close() error { return r.PipeReader.CloseWithError(io.ErrClosedPipe) }

// pipeWriter is the handler's side: headers are published once, at the
// first WriteHeader or Write (or when the handler returns).
type pipeWriter struct {
	header http.Header
	body   *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
	status int         // set before ready closes
	sent   http.Header // a copy of header at start
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) start(status int) {
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		return
	}
	w.start(status)
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	return w.body.Write(b)
}

// Flush is a no-op: every Write already reaches the reader.
func (w *pipeWriter) Flush() {}
