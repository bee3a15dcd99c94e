// Command goose-standin is a stand-in for goose's agent server, goosed
// v1.31: the same HTTP API on GOOSE_HOST:GOOSE_PORT, the same
// X-Secret-Key auth (GOOSE_SERVER__SECRET_KEY), sessions kept under
// GOOSE_PATH_ROOT, and deterministic echo replies instead of an LLM.
// Paddock's projects run it as their app; see README.md.
//
//	goose-standin [agent] [--host H] [--port P] [--ping-interval D] [--chunk-delay D]
//
// SIGTERM or SIGINT shut it down gracefully: streams end, turns are
// cancelled, sessions are on disk when it exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standin"
)

// shutdownGrace bounds the graceful shutdown, as the desktop waits 5 s
// before SIGKILL.
const shutdownGrace = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "goose-standin:", err)
		os.Exit(1)
	}
}

// options are the command line and environment, resolved.
type options struct {
	host, port   string
	ping, chunk  time.Duration
	cfg          standin.Config
	tlsRequested bool
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	envDuration := func(name string, def time.Duration) (time.Duration, error) {
		v := getenv(name)
		if v == "" {
			return def, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return d, nil
	}
	defPing, err := envDuration("GOOSE_STANDIN_PING_INTERVAL", standin.DefaultPingInterval)
	if err != nil {
		return o, err
	}
	defChunk, err := envDuration("GOOSE_STANDIN_CHUNK_DELAY", standin.DefaultChunkDelay)
	if err != nil {
		return o, err
	}
	host, port := getenv("GOOSE_HOST"), getenv("GOOSE_PORT")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "3000"
	}

	// goosed's server is its "agent" subcommand; the stand-in takes it, or
	// nothing, before or after the flags.
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("goose-standin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.host, "host", host, "address to listen on (GOOSE_HOST)")
	fs.StringVar(&o.port, "port", port, "port to listen on (GOOSE_PORT)")
	fs.DurationVar(&o.ping, "ping-interval", defPing, "SSE heartbeat interval (GOOSE_STANDIN_PING_INTERVAL)")
	fs.DurationVar(&o.chunk, "chunk-delay", defChunk, "pause between reply chunks, negative for none (GOOSE_STANDIN_CHUNK_DELAY)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if rest := fs.Args(); len(rest) > 1 || (len(rest) == 1 && rest[0] != "agent") {
		return o, fmt.Errorf("unexpected arguments %q: the only subcommand is agent", rest)
	}
	if n, err := strconv.Atoi(o.port); err != nil || n < 0 || n > 65535 {
		return o, fmt.Errorf("port %q is not a port number", o.port)
	}
	if o.ping <= 0 {
		return o, fmt.Errorf("ping interval %s must be positive", o.ping)
	}
	dataDir, configDir, err := standin.DirsFromEnv(getenv)
	if err != nil {
		return o, err
	}
	o.tlsRequested = strings.EqualFold(getenv("GOOSE_TLS"), "true")
	o.cfg = standin.Config{
		Secret:       getenv("GOOSE_SERVER__SECRET_KEY"),
		DataDir:      dataDir,
		ConfigDir:    configDir,
		Provider:     getenv("GOOSE_PROVIDER"),
		Model:        getenv("GOOSE_MODEL"),
		PingInterval: o.ping,
		ChunkDelay:   o.chunk,
	}
	if o.cfg.ChunkDelay == 0 {
		o.cfg.ChunkDelay = -1 // an explicit 0 means no pause
	}
	return o, nil
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	o.cfg.Logger = log
	if o.cfg.Secret == "" {
		log.Warn("GOOSE_SERVER__SECRET_KEY is not set: a random secret was chosen and no client can authenticate (as goosed v1.31)")
	}
	if o.tlsRequested {
		log.Warn("GOOSE_TLS=true: the stand-in serves plain HTTP only")
	}
	srv, err := standin.New(o.cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.host, o.port))
	if err != nil {
		srv.Close()
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for idle connections; SSE streams never are, so the
	// stand-in ends them as soon as the shutdown starts.
	hs.RegisterOnShutdown(func() { srv.Close() })
	log.Info("goose stand-in listening", "addr", ln.Addr().String(), "data", o.cfg.DataDir)

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("goose stand-in shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	serr := hs.Shutdown(sctx)
	if errors.Is(serr, context.DeadlineExceeded) {
		serr = hs.Close()
	}
	// Close again: it waits for the first call, and reports its flush.
	if err := srv.Close(); err != nil {
		return fmt.Errorf("flush sessions: %w", err)
	}
	if serr != nil {
		return serr
	}
	log.Info("goose stand-in stopped")
	return nil
}
