package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// DefaultStagingBytes is the default budget of all uploads staged at once
// (Config.StagingBytes): two of the largest uploads.
const DefaultStagingBytes = 2 * DefaultMaxUploadBytes

// staging holds request bodies the server must keep whole before using
// them (an image import needs to seek in its archive), in a directory of
// its own on the data dir's disk (never a RAM-backed /tmp) and within one
// byte budget shared by every upload in flight, counted as bytes arrive:
// many concurrent uploads cannot fill the disk together.
type staging struct {
	dir string
	max int64

	mu   sync.Mutex
	used int64 // guarded by mu: bytes staged by uploads in flight
}

// stagingFor readies the staging dir cfg names: emptied, since only a
// crash leaves anything there, unless it is the shared os.TempDir().
func stagingFor(cfg Config) (*staging, error) {
	dir, own := cfg.StagingDir, cfg.StagingDir != ""
	if !own {
		dir = os.TempDir()
	}
	max := cfg.StagingBytes
	if max == 0 {
		max = DefaultStagingBytes
	}
	if own {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("server: clean staging dir: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("server: staging dir: %w", err)
	}
	return &staging{dir: dir, max: max}, nil
}

// stagedFile is one upload being staged; its Write charges the budget.
// It is an io.Writer only (no ReadFrom), so io.Copy goes through Write.
type stagedFile struct {
	f  *os.File
	st *staging
	n  int64 // bytes charged
}

// create starts staging an upload. An upload announced (Content-Length)
// larger than the whole budget could never fit: too large.
func (st *staging) create(announced int64) (*stagedFile, error) {
	if announced > st.max {
		return nil, sandbox.Errorf(sandbox.ErrTooLarge, "too_large",
			"the upload's %d bytes exceed the %d bytes this server stages at once", announced, st.max)
	}
	f, err := os.CreateTemp(st.dir, "paddock-upload-*")
	if err != nil {
		return nil, fmt.Errorf("stage upload: %w", err)
	}
	return &stagedFile{f: f, st: st}, nil
}

// Write charges len(p) to the budget, then writes: past the budget the
// upload fails (429 staging_full) and its bytes so far are released when
// it is removed.
func (f *stagedFile) Write(p []byte) (int, error) {
	st := f.st
	st.mu.Lock()
	if st.used+int64(len(p)) > st.max {
		used := st.used
		st.mu.Unlock()
		return 0, sandbox.Errorf(sandbox.ErrExhausted, "staging_full",
			"the server is staging %d MiB of uploads, its limit is %d MiB: retry later", used>>20, st.max>>20)
	}
	st.used += int64(len(p))
	st.mu.Unlock()
	f.n += int64(len(p))
	return f.f.Write(p)
}

// finish closes the file for writing; it stays staged until remove.
func (f *stagedFile) finish() error { return f.f.Close() }

// path is where the staged file is, for whoever reads it next.
func (f *stagedFile) path() string { return f.f.Name() }

// remove deletes the staged file and gives its bytes back to the budget.
func (f *stagedFile) remove() {
	f.f.Close()
	if err := os.Remove(f.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return // the bytes stay charged: they are still on disk
	}
	f.st.mu.Lock()
	f.st.used -= f.n
	f.st.mu.Unlock()
	f.n = 0
}
