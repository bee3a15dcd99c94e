package main

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/examples/goose-standin/standin"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name                  string
		args                  []string
		env                   map[string]string
		host, port, data      string
		ping, chunk, cfgChunk time.Duration
		secret                string
		wantErr               bool
	}{
		{name: "goosed defaults", env: map[string]string{"GOOSE_PATH_ROOT": "/r"},
			host: "127.0.0.1", port: "3000", data: "/r/data", ping: 500 * time.Millisecond, chunk: standin.DefaultChunkDelay, cfgChunk: standin.DefaultChunkDelay},
		{name: "env as goosed reads it", args: []string{"agent"},
			env:  map[string]string{"GOOSE_PATH_ROOT": "/r", "GOOSE_HOST": "0.0.0.0", "GOOSE_PORT": "3001", "GOOSE_SERVER__SECRET_KEY": "k", "GOOSE_STANDIN_PING_INTERVAL": "50ms", "GOOSE_STANDIN_CHUNK_DELAY": "0"},
			host: "0.0.0.0", port: "3001", data: "/r/data", ping: 50 * time.Millisecond, chunk: 0, cfgChunk: -1, secret: "k"},
		{name: "flags win over env", args: []string{"--port", "4000", "--chunk-delay", "1s", "agent"},
			env:  map[string]string{"GOOSE_PATH_ROOT": "/r", "GOOSE_PORT": "3001"},
			host: "127.0.0.1", port: "4000", data: "/r/data", ping: 500 * time.Millisecond, chunk: time.Second, cfgChunk: time.Second},
		{name: "XDG without GOOSE_PATH_ROOT", env: map[string]string{"HOME": "/home/u"},
			host: "127.0.0.1", port: "3000", data: "/home/u/.local/share/goose", ping: 500 * time.Millisecond, chunk: standin.DefaultChunkDelay, cfgChunk: standin.DefaultChunkDelay},
		{name: "bad ping env", env: map[string]string{"GOOSE_PATH_ROOT": "/r", "GOOSE_STANDIN_PING_INTERVAL": "soon"}, wantErr: true},
		{name: "zero ping", args: []string{"--ping-interval", "0s"}, env: map[string]string{"GOOSE_PATH_ROOT": "/r"}, wantErr: true},
		{name: "two subcommands", args: []string{"agent", "agent", "x"}, env: map[string]string{"GOOSE_PATH_ROOT": "/r"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error: %+v", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.host != tt.host || o.port != tt.port || o.cfg.DataDir != filepath.FromSlash(tt.data) ||
				o.ping != tt.ping || o.chunk != tt.chunk || o.cfg.ChunkDelay != tt.cfgChunk || o.cfg.Secret != tt.secret {
				t.Errorf("got %+v", o)
			}
		})
	}
}
