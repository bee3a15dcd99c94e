package sdk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// File is one file for WriteFiles. Give Content, or Reader with its Size
// (a Reader without Size is read into memory first, since a tar header
// states the size up front).
type File struct {
	Path    string // relative to the target directory; absolute only when it is "/"
	Content []byte
	Reader  io.Reader
	Size    int64
	Mode    fs.FileMode // permission bits; 0 means 0644
}

// WriteOption changes how files are written.
type WriteOption func(*writeOptions)

type writeOptions struct {
	gzip bool
	sudo bool
}

// Gzip compresses the upload, which pays off for text over slow links.
func Gzip() WriteOption { return func(o *writeOptions) { o.gzip = true } }

// Sudo writes the files as root instead of the sandbox user.
func Sudo() WriteOption { return func(o *writeOptions) { o.sudo = true } }

// ReadOption changes how ReadFile and ReadArchive read.
type ReadOption func(*readOptions)

type readOptions struct {
	sudo bool
}

// ReadSudo reads as root instead of the sandbox user, who cannot read
// what only root may.
func ReadSudo() ReadOption { return func(o *readOptions) { o.sudo = true } }

// readQuery is the query of a read of path.
func readQuery(path string, opts []ReadOption) url.Values {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	q := url.Values{"path": {path}}
	if o.sudo {
		q.Set("sudo", "true")
	}
	return q
}

// WriteFiles writes files under dir in the sandbox, creating parent
// directories. The tar stream is built while it is sent, so large Readers
// are never held in memory.
func (s *Sandbox) WriteFiles(ctx context.Context, dir string, files []File, opts ...WriteOption) (api.WriteFilesResult, error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	names := make([]string, len(files))
	for i, f := range files {
		name, err := tarName(dir, f.Path)
		if err != nil {
			return api.WriteFilesResult{}, err
		}
		names[i] = name
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() { // owned: WriteFiles waits for it below
		defer close(done)
		pw.CloseWithError(writeTar(pw, files, names, o.gzip))
	}()
	res, err := s.WriteTar(ctx, dir, pr, opts...)
	// Unblock the writer if the request ended before reading everything.
	pr.CloseWithError(errors.New("paddock: upload ended"))
	<-done
	return res, err
}

// tarName is the entry name of p below dir, rejecting names that would
// leave dir.
func tarName(dir, p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("paddock: invalid file path %q", p)
	}
	if strings.HasPrefix(p, "/") && dir != "/" {
		return "", fmt.Errorf("paddock: file path %q is absolute; make it relative to %q", p, dir)
	}
	clean := path.Clean(strings.TrimPrefix(p, "/"))
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("paddock: file path %q leaves the target directory", p)
	}
	return clean, nil
}

func writeTar(w io.Writer, files []File, names []string, zip bool) error {
	var zw *gzip.Writer
	if zip {
		zw = gzip.NewWriter(w)
		w = zw
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	dirs := map[string]bool{}
	for i, f := range files {
		// Parent directories first, so the sandbox user owns them.
		for _, d := range parents(names[i]) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: now}); err != nil {
				return fmt.Errorf("tar %s: %w", d, err)
			}
		}
		r, size := f.Reader, f.Size
		switch {
		case r == nil:
			r, size = bytes.NewReader(f.Content), int64(len(f.Content))
		case size <= 0:
			data, err := io.ReadAll(r)
			if err != nil {
				return fmt.Errorf("read %s: %w", f.Path, err)
			}
			r, size = bytes.NewReader(data), int64(len(data))
		}
		mode := int64(f.Mode.Perm())
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: names[i], Size: size, Mode: mode, ModTime: now}); err != nil {
			return fmt.Errorf("tar %s: %w", names[i], err)
		}
		if _, err := io.CopyN(tw, r, size); err != nil {
			return fmt.Errorf("tar %s: %w", names[i], err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	}
	return nil
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var out []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

func decodeJSONBody(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
