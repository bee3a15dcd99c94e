package control

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// maxStateBytes bounds the content of one saved state (before
// compression), so an app cannot fill the host's disk through it.
const maxStateBytes = 4 << 30

// refPattern is what a StateRef may be: a file name the Service made.
// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var refPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^act-[0-9a-f]{16}\.tar\.gz$`) })

func (s *Service) stateDir(projectID string) string {
	return filepath.Join(s.cfg.DataDir, "state", projectID)
}

// The saved state of a project is one tar.gz: the content of each
// persistent path under that path without its leading slash
// (home/user/.local/share/goose/...), so restore routes every entry back to
// its path, and a path dropped from the spec since is skipped.

// save archives the persistent paths of r's sandbox into
// <data>/state/<project>/<activation>.tar.gz, written whole before it is
// renamed into place, then points the project's StateRef at it and removes
// the state it replaces. Everything read from the sandbox is hostile: only
// clean relative names, regular files, directories and symlinks (and hard
// links) that stay inside their path are kept; nothing is extracted on the
// host.
func (s *Service) save(ctx context.Context, r *run, ag Agent, log *slog.Logger) (err error) {
	if !sandbox.ValidID(r.projectID) {
		return fmt.Errorf("project id %q cannot name a directory", r.projectID)
	}
	dir := s.stateDir(r.projectID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	gz := gzip.NewWriter(tmp)
	tw := tar.NewWriter(gz)
	var total, files int64
	for _, p := range r.spec.PersistentPaths {
		n, c, err := copyArchive(ctx, ag, p, tw, maxStateBytes-total, log)
		if err != nil {
			return err
		}
		total += n
		files += c
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	name := r.id + ".tar.gz"
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	_ = atomicfile.SyncDir(dir) // the state is kept either way; durability is best effort here
	crashpoint.Hit("control/state/renamed")
	var old string
	if _, err := s.updateProject(ctx, r.projectID, func(p *store.Project) bool {
		old = p.StateRef
		p.StateRef = name
		return true
	}); err != nil {
		os.Remove(final)
		return fmt.Errorf("record saved state: %w", err)
	}
	if old != "" && old != name && refPattern().MatchString(old) {
		if err := os.Remove(filepath.Join(dir, old)); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("remove replaced state", "ref", old, "err", err)
		}
	}
	s.eventFor(ctx, r, string(StateDeactivating), "state saved",
		map[string]string{"stateRef": name, "files": fmt.Sprint(files), "bytes": fmt.Sprint(total)})
	log.Info("state saved", "ref", name, "files", files, "bytes", total)
	return nil
}

// copyArchive appends the sandbox's archive of p to tw under p's prefix
// and returns the bytes and entries it kept. A path that does not exist
// adds nothing.
func copyArchive(ctx context.Context, ag Agent, p string, tw *tar.Writer, budget int64, log *slog.Logger) (int64, int64, error) {
	rc, err := ag.ReadArchive(ctx, p)
	if errors.Is(err, sandbox.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("archive %s: %w", p, err)
	}
	defer rc.Close()
	prefix := strings.TrimPrefix(p, "/")
	var total, files int64
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return total, files, nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("archive %s: %w", p, err)
		}
		name, ok := safeEntry(hdr)
		if !ok {
			log.Warn("state entry skipped", "path", p, "name", hdr.Name, "type", string(hdr.Typeflag))
			continue
		}
		out := &tar.Header{Typeflag: hdr.Typeflag, Name: prefix + "/" + name, Mode: hdr.Mode & 0o777, // no setuid or setgid from a sandbox
			ModTime: hdr.ModTime, Format: tar.FormatPAX}
		switch hdr.Typeflag {
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > budget-total {
				return 0, 0, fmt.Errorf("archive %s: saved state exceeds %d bytes", p, int64(maxStateBytes))
			}
			out.Size = hdr.Size
		case tar.TypeDir:
			out.Name += "/"
		case tar.TypeSymlink:
			out.Linkname = hdr.Linkname
		case tar.TypeLink:
			out.Linkname = prefix + "/" + path.Clean(hdr.Linkname)
		}
		if err := tw.WriteHeader(out); err != nil {
			return 0, 0, fmt.Errorf("state file: %w", err)
		}
		if out.Size > 0 {
			if _, err := io.CopyN(tw, tr, out.Size); err != nil {
				return 0, 0, fmt.Errorf("archive %s: %w", p, err)
			}
		}
		total += out.Size
		files++
		crashpoint.Hit("control/state/entry")
	}
}

// safeEntry returns hdr's clean relative name, or false for an entry the
// saved state must not keep: a name that is absolute or climbs out, a link
// that leads out of its path, or anything but a file, directory or link.
func safeEntry(hdr *tar.Header) (string, bool) {
	name := strings.TrimSuffix(hdr.Name, "/")
	if name == "" || name == "." || !local(name) {
		return "", false
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		if path.IsAbs(hdr.Linkname) || !local(path.Join(path.Dir(name), hdr.Linkname)) {
			return "", false
		}
	case tar.TypeLink:
		if path.IsAbs(hdr.Linkname) || !local(hdr.Linkname) {
			return "", false
		}
	default:
		return "", false
	}
	return name, true
}

// local reports whether name is clean, relative and does not climb out.
func local(name string) bool {
	return name != "" && !path.IsAbs(name) && path.Clean(name) == name && name != ".." &&
		!strings.HasPrefix(name, "../") && !strings.ContainsRune(name, 0)
}

// restore writes the project's saved state into r's sandbox, one tar
// stream per persistent path (created first for the sandbox's user, by
// root where the user could not, through no symlink).
func (s *Service) restore(ctx context.Context, r *run, ag Agent, log *slog.Logger) error {
	for _, p := range r.spec.PersistentPaths {
		if err := ag.Mkdir(ctx, agent.MkdirRequest{Path: p, Mode: 0o755, Sudo: true, ForUser: true}); err != nil {
			return fail("restore_failed", "create %s: %s", p, errMessage(err))
		}
	}
	pr, err := s.cfg.Store.GetProject(ctx, "", r.projectID)
	if err != nil {
		return err
	}
	if pr.StateRef == "" {
		return nil
	}
	if !refPattern().MatchString(pr.StateRef) {
		return fail("restore_failed", "saved state %q is not a state file", pr.StateRef)
	}
	f, err := os.Open(filepath.Join(s.stateDir(r.projectID), pr.StateRef))
	if errors.Is(err, os.ErrNotExist) {
		log.Warn("saved state missing", "ref", pr.StateRef)
		s.eventFor(ctx, r, string(StateRestoring), "saved state "+pr.StateRef+" is missing; starting empty", nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("open saved state: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fail("restore_failed", "saved state %s: %v", pr.StateRef, err)
	}
	tr := tar.NewReader(gz)
	var sec *section
	defer func() {
		if sec != nil {
			sec.abort()
		}
	}()
	var files int
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail("restore_failed", "saved state %s: %v", pr.StateRef, err)
		}
		p, rel := route(r.spec.PersistentPaths, strings.TrimSuffix(hdr.Name, "/"))
		if p == "" || rel == "" {
			continue
		}
		if sec == nil || sec.path != p {
			if sec != nil {
				if err := sec.close(); err != nil {
					return fail("restore_failed", "restore %s: %s", sec.path, errMessage(err))
				}
			}
			sec = s.openSection(ctx, ag, p)
		}
		h := *hdr
		h.Name = rel
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			lp, lrel := route(r.spec.PersistentPaths, h.Linkname)
			if lp != p || lrel == "" {
				continue
			}
			h.Linkname = lrel
		}
		if err := sec.tw.WriteHeader(&h); err != nil {
			return fail("restore_failed", "restore %s: %s", p, errMessage(sec.cause(err)))
		}
		if _, err := io.Copy(sec.tw, tr); err != nil {
			return fail("restore_failed", "restore %s: %s", p, errMessage(sec.cause(err)))
		}
		files++
	}
	if sec != nil {
		if err := sec.close(); err != nil {
			return fail("restore_failed", "restore %s: %s", sec.path, errMessage(err))
		}
	}
	s.eventFor(ctx, r, string(StateRestoring), "state restored", map[string]string{"stateRef": pr.StateRef, "files": fmt.Sprint(files)})
	return nil
}

// route finds the persistent path a saved entry belongs to and its name
// relative to it.
func route(paths []string, name string) (string, string) {
	for _, p := range paths {
		prefix := strings.TrimPrefix(p, "/")
		if name == prefix {
			return p, ""
		}
		if rest, ok := strings.CutPrefix(name, prefix+"/"); ok && local(rest) {
			return p, rest
		}
	}
	return "", ""
}

// section streams one persistent path's entries into the agent.
type section struct {
	path   string
	pw     *io.PipeWriter
	tw     *tar.Writer
	done   chan error
	waited bool
	err    error // the agent's answer, once waited
}

func (s *Service) openSection(ctx context.Context, ag Agent, p string) *section {
	pr, pw := io.Pipe()
	sec := &section{path: p, pw: pw, tw: tar.NewWriter(pw), done: make(chan error, 1)}
	go func() { // owned by restore, which always waits for done
		_, err := ag.WriteTar(ctx, p, false, pr)
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		sec.done <- err
	}()
	return sec
}

func (sec *section) wait() error {
	if !sec.waited {
		sec.err, sec.waited = <-sec.done, true
	}
	return sec.err
}

// close ends the tar stream and waits for the agent's answer.
func (sec *section) close() error {
	werr := sec.tw.Close()
	sec.pw.Close()
	if err := sec.wait(); err != nil {
		return err
	}
	return werr
}

// cause prefers the agent's error over the pipe's when a write failed.
func (sec *section) cause(err error) error {
	sec.pw.CloseWithError(err)
	if aerr := sec.wait(); aerr != nil {
		return aerr
	}
	return err
}

func (sec *section) abort() {
	sec.pw.CloseWithError(errors.New("restore aborted"))
	sec.wait()
}
