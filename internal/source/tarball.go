package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fetchTarball downloads the archive into a temp file (capped, hashed),
// then streams its entries, sanitized, as a plain tar. Downloading first
// gives the digest before anything is written, and keeps a slow server from
// holding the sandbox's agent.
func (f *Fetcher) fetchTarball(ctx context.Context, src sandbox.Source, u *url.URL) (io.ReadCloser, *sandbox.SourceInfo, error) {
	if src.StripComponents < 0 {
		return nil, nil, invalidf(CodeInvalid, "stripComponents must not be negative")
	}
	file, err := os.CreateTemp(f.cfg.TempDir, "paddock-tarball-")
	if err != nil {
		return nil, nil, fmt.Errorf("source: temp file: %w", err)
	}
	release := func() {
		file.Close()
		os.Remove(file.Name())
	}
	digest, err := f.download(ctx, src, u, file)
	if err != nil {
		release()
		return nil, nil, err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		release()
		return nil, nil, fmt.Errorf("source: rewind download: %w", err)
	}
	info := &sandbox.SourceInfo{Type: sandbox.SourceTarball, URL: Redact(u), Digest: digest}
	strip := src.StripComponents
	rc := pipeStream(func(w *tarWriter) error {
		return f.sanitizeTar(file, strip, w)
	}, release)
	return rc, info, nil
}

// download GETs u into file and returns the content's sha256.
func (f *Fetcher) download(ctx context.Context, src sandbox.Source, u *url.URL, file *os.File) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	clean := *u
	clean.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clean.String(), nil)
	if err != nil {
		return "", invalidf("source_invalid_url", "source url %q: %v", Redact(u), err)
	}
	user, pass := src.Username, src.Password
	if u.User != nil && user == "" && pass == "" {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	switch {
	case src.Token != "":
		req.Header.Set("Authorization", "Bearer "+src.Token)
	case user != "" || pass != "":
		req.SetBasicAuth(user, pass)
	}
	req.Header.Set("User-Agent", "paddock-source")
	c := &http.Client{Transport: f.http.t, CheckRedirect: checkRedirect}
	host := u.Hostname()
	resp, err := c.Do(req)
	if err != nil {
		return "", networkError(ctx, host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", sandbox.Errorf(sandbox.ErrInvalid, CodeAuthFailed,
			"source host %s refused access (%s): the source's credentials are missing or wrong", host, resp.Status)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return "", sandbox.Errorf(sandbox.ErrInvalid, CodeNotFound, "source host %s has no such file (%s)", host, resp.Status)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return "", sandbox.Errorf(sandbox.ErrInvalid, CodeUnreachable, "source host %s answered %s", host, resp.Status)
	case resp.ContentLength > f.cfg.MaxBytes:
		return "", tooLarge("download", f.cfg.MaxBytes)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(file, h), io.LimitReader(resp.Body, f.cfg.MaxBytes+1))
	if err != nil {
		return "", networkError(ctx, host, unwrapURLError(err))
	}
	if n > f.cfg.MaxBytes {
		return "", tooLarge("download", f.cfg.MaxBytes)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Magic numbers of the compressions a tarball may use.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
)

// decompress detects the compression by its magic number.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, invalidf(CodeInvalidArchive, "gzip: %v", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, nil, invalidf(CodeInvalidArchive, "zstd: %v", err)
		}
		return zr, zr.Close, nil
	case bytes.HasPrefix(head, magicBzip2):
		return bzip2.NewReader(br), func() {}, nil
	case bytes.HasPrefix(head, magicXz):
		return nil, nil, invalidf(CodeInvalidArchive, "xz archives are not supported: use gzip, zstd, bzip2 or plain tar")
	}
	return br, func() {}, nil
}

// capReader fails once more than n bytes were read: it bounds the
// decompressed stream, headers and padding included, against a bomb.
type capReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return n, tooLarge("decompressed archive", c.limit)
	}
	return n, err
}

// sanitizeTar copies the archive's entries to w under the rules of the
// package comment. Neutralised: absolute names lose their leading "/";
// device nodes and fifos are dropped. Refused: ".." in a name or hardlink
// target, a hardlink to anything but an earlier regular file, an entry
// below a symlink, unknown entry types, the caps.
func (f *Fetcher) sanitizeTar(r io.Reader, strip int, w *tarWriter) error {
	in, closeIn, err := decompress(r)
	if err != nil {
		return err
	}
	defer closeIn()
	limit := 2*f.cfg.MaxBytes + int64(f.cfg.MaxEntries)*1024
	tr := tar.NewReader(&capReader{r: in, n: limit, limit: limit})
	chk := newChecker(f.cfg.MaxBytes, f.cfg.MaxEntries)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var se *sandbox.Error
			if errors.As(err, &se) {
				return err
			}
			return invalidf(CodeInvalidArchive, "the source is not a valid (gzip, zstd, bzip2 or plain) tar archive: %v", err)
		}
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			continue // dropped: no device nodes or fifos in a sandbox's files
		case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		default:
			return entryErrorf("entry %q has unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		name, keep, err := archiveName(hdr.Name, strip)
		if err != nil || !keep {
			if err != nil {
				return err
			}
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := chk.add(name, tar.TypeDir, 0); err != nil {
				return err
			}
			err = w.dir(name, hdr.Mode, hdr.ModTime)
		case tar.TypeReg, tar.TypeRegA:
			if err := chk.add(name, tar.TypeReg, hdr.Size); err != nil {
				return err
			}
			err = w.file(name, hdr.Mode, hdr.Size, hdr.ModTime, tr)
		case tar.TypeSymlink:
			if err := symlinkTarget(name, hdr.Linkname); err != nil {
				return err
			}
			if err := chk.add(name, tar.TypeSymlink, 0); err != nil {
				return err
			}
			err = w.symlink(name, hdr.Linkname, hdr.ModTime)
		case tar.TypeLink:
			target, keep, terr := archiveName(hdr.Linkname, strip)
			if terr != nil {
				return terr
			}
			if !keep {
				return entryErrorf("hardlink %q points to %q, which leaves the archive", hdr.Name, hdr.Linkname)
			}
			if err := chk.hardlink(name, target); err != nil {
				return err
			}
			err = w.hardlink(name, target, hdr.ModTime)
		}
		if err != nil {
			var se *sandbox.Error
			if errors.As(err, &se) {
				return err
			}
			return invalidf(CodeInvalidArchive, "read entry %q: %v", hdr.Name, err)
		}
	}
}

// archiveName validates an archive name and returns it relative and clean
// with strip leading components removed; keep is false when nothing is left.
func archiveName(raw string, strip int) (name string, keep bool, err error) {
	if raw == "" || strings.ContainsRune(raw, 0) || len(raw) > maxNameLen {
		return "", false, entryErrorf("entry name %q is empty, too long or contains NUL", raw)
	}
	var parts []string
	for _, p := range strings.Split(raw, "/") {
		switch p {
		case "..":
			return "", false, entryErrorf("entry %q contains ..", raw)
		case "", ".":
			// "/abs", "./x", "a//b": an absolute name is made relative.
		default:
			parts = append(parts, p)
		}
	}
	if len(parts) <= strip {
		return "", false, nil
	}
	return path.Join(parts[strip:]...), true, nil
}
