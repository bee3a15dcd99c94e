// Command echoserver is the static HTTP server BenchmarkProxy runs inside a
// sandbox: GET /small answers 2 bytes and GET /big 1 MiB, both from memory,
// so that what the benchmark measures is the path to the server (direct or
// through paddock's proxy), not the server's own work.
//
// Standard library only: the benchmark builds it with CGO_ENABLED=0 so the
// binary runs in a sandbox whatever libraries the image has.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()

	small := []byte("ok")
	big := make([]byte, 1<<20) // pre-allocated once; every response is the same bytes
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", serve(small))
	mux.HandleFunc("GET /big", serve(big))
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Fatal(srv.ListenAndServe())
}

// serve answers body with an explicit Content-Length, so 1 MiB goes out as
// one plain body rather than chunked, as a static file server would send it.
func serve(body []byte) http.HandlerFunc {
	n := strconv.Itoa(len(body))
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", n)
		w.Write(body)
	}
}
