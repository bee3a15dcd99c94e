//go:build linux

package image

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// failingReader yields data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestUnpackLayerStreamErrors: a stream that is not a tar, or ends inside
// one, is an invalid layer; the source failing (a download cut short,
// whatever error it says) is not the layer's fault and keeps its error.
func TestUnpackLayerStreamErrors(t *testing.T) {
	needRoot(t)
	layer := tartest.Archive(t, tartest.Reg("f", "content", 0o644))
	cut := errors.New("connection reset")
	tests := []struct {
		name        string
		r           io.Reader
		wantInvalid bool
		wantErr     error
	}{
		{"not a tar", bytes.NewReader([]byte("not a tar at all")), true, nil},
		{"ends inside a header", bytes.NewReader(layer[:300]), true, nil},
		{"ends inside a file", bytes.NewReader(layer[:515]), true, nil},
		{"source fails", &failingReader{data: layer[:300], err: cut}, false, cut},
		{"source cut short", &failingReader{data: layer[:515], err: io.ErrUnexpectedEOF}, false, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layer")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			_, err := unpackLayer(t.Context(), dir, tt.r, 1<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if got := errors.Is(err, sandbox.ErrInvalid); got != tt.wantInvalid || err == nil {
				t.Fatalf("err = %v: invalid %v, want %v", err, got, tt.wantInvalid)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want it to wrap %v", err, tt.wantErr)
			}
		})
	}
}

// TestUnpackLayerLongNames: names and link targets past PATH_MAX are
// invalid layers (a name of a million components was a million
// directories, made in quadratic time).
func TestUnpackLayerLongNames(t *testing.T) {
	needRoot(t)
	long := strings.Repeat(strings.Repeat("n", 250)+"/", 20) + "f" // 5021 bytes, each component legal
	tests := []struct {
		name  string
		entry tartest.Entry
	}{
		{"name", tartest.Reg(long, "x", 0o644)},
		{"hardlink target", tartest.Hardlink("h", long)},
		{"symlink target", tartest.Symlink("l", long)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layer")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			data := tartest.Archive(t, tt.entry)
			_, err := unpackLayer(t.Context(), dir, bytes.NewReader(data), 1<<20, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_layer" {
				t.Fatalf("err = %v, want invalid_layer", err)
			}
		})
	}
}
