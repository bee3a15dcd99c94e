package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// uploadTypes are the Content-Types a tar upload may carry. The agent
// detects gzip itself, so the type only has to say "a tar, maybe zipped".
var uploadTypes = map[string]bool{
	"":                             true,
	api.ContentTypeTar:             true,
	"application/tar":              true,
	api.ContentTypeGzip:            true,
	"application/x-gzip":           true,
	"application/x-gtar":           true,
	api.ContentTypeBinary:          true,
	"application/x-compressed-tar": true,
}

// pathRequest reads the sandbox id and the clean ?path= of a file request,
// both checked before any agent is asked.
func pathRequest(r *http.Request) (id, path string, err error) {
	if id, err = sandboxID(r); err != nil {
		return "", "", err
	}
	if path, err = cleanPath(r.URL.Query().Get("path")); err != nil {
		return "", "", err
	}
	return id, path, nil
}

func (s *Server) writeFiles(w http.ResponseWriter, r *http.Request) error {
	id, dir, err := pathRequest(r)
	if err != nil {
		return err
	}
	sudo, err := boolQuery(r, "sudo", false)
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !uploadTypes[mt] {
			return errUnsupportedMedia
		}
	}
	// A declared length past the bound is refused before anything is written.
	if r.ContentLength > s.maxUpload {
		return &http.MaxBytesError{Limit: s.maxUpload}
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	body := &readWatch{r: http.MaxBytesReader(w, r.Body, s.maxUpload)}
	res, err := ac.WriteTar(r.Context(), dir, sudo, body)
	if err != nil {
		// The agent client reports a failing request body as an unavailable
		// agent; the real cause is the client's oversized body.
		if body.err != nil {
			return fmt.Errorf("upload to sandbox %s: %w", id, body.err)
		}
		return fmt.Errorf("upload to sandbox %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, api.WriteFilesResult{Files: res.Files, Bytes: res.Bytes})
	return nil
}

// readWatch remembers the first read error other than EOF.
type readWatch struct {
	r   io.Reader
	err error
}

func (w *readWatch) Read(p []byte) (int, error) {
	crashpoint.Hit("server/upload/read")
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) error {
	id, p, err := pathRequest(r)
	if err != nil {
		return err
	}
	sudo, err := boolQuery(r, "sudo", false)
	if err != nil {
		return err
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	rc, info, err := ac.ReadFile(r.Context(), p, sudo)
	if err != nil {
		return readError(id, p, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", api.ContentTypeBinary)
	if info.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	}
	w.Header().Set(api.HeaderFileMode, strconv.FormatUint(uint64(info.Mode), 8))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		// The status is sent; all that is left is to log and cut the answer short.
		s.log.Warn("file read cut short", "sandbox", id, "path", p, "err", err)
	}
	return nil
}

// readError wraps an agent's refusal to read p. A bare not-found from the
// agent means the file: the sandbox itself was found before the agent was asked.
func readError(id, p string, err error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		if c := sandbox.CodeOf(err); c == "" || c == "not_found" {
			return &sandbox.Error{Kind: sandbox.ErrNotFound, Code: "file_not_found", Message: fmt.Sprintf("file %q not found", p)}
		}
	}
	return fmt.Errorf("read %s in sandbox %s: %w", p, id, err)
}

// readArchive streams a directory (or one file) of the sandbox as a tar. The
// tar is passed through untouched; its entries come from inside the sandbox,
// so clients must extract them as hostile input (the CLI does).
func (s *Server) readArchive(w http.ResponseWriter, r *http.Request) error {
	id, p, err := pathRequest(r)
	if err != nil {
		return err
	}
	sudo, err := boolQuery(r, "sudo", false)
	if err != nil {
		return err
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	rc, err := ac.ReadArchive(r.Context(), p, sudo)
	if err != nil {
		return readError(id, p, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", api.ContentTypeTar)
	w.WriteHeader(http.StatusOK)
	// Send the status now: a large tree can take a while to walk before its
	// first bytes fill a buffer.
	_ = http.NewResponseController(w).Flush()
	if _, err := io.Copy(w, rc); err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("archive read cut short", "sandbox", id, "path", p, "err", err)
		}
		// The status is sent and a tar cut between entries would read as
		// complete: abort the connection so the client sees the failure.
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *Server) mkdir(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.MkdirRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Path, err = cleanPath(req.Path); err != nil {
		return err
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	if err := ac.Mkdir(r.Context(), agent.MkdirRequest{Path: req.Path, Sudo: req.Sudo}); err != nil {
		return fmt.Errorf("mkdir %s in sandbox %s: %w", req.Path, id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDirectory answers GET /directories?path=: the entries below a
// directory of the sandbox to ?depth= levels (1, its own entries, by
// default), read as the sandbox user unless ?sudo. The agent resolves
// path inside the sandbox's root and follows nothing below it; its answer
// is still the sandbox's word, so entries that do not lie below path, or
// whose name is not their path's last element, are dropped.
func (s *Server) listDirectory(w http.ResponseWriter, r *http.Request) error {
	id, dir, err := pathRequest(r)
	if err != nil {
		return err
	}
	sudo, err := boolQuery(r, "sudo", false)
	if err != nil {
		return err
	}
	depth := 1
	if v := r.URL.Query().Get("depth"); v != "" {
		if depth, err = strconv.Atoi(v); err != nil || depth < 1 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_query", "depth must be a positive integer, got %q", v)
		}
	}
	ac, err := s.agentFor(r.Context(), id)
	if err != nil {
		return err
	}
	entries, err := ac.ListDir(r.Context(), dir, min(depth, agent.MaxListDepth), sudo)
	if err != nil {
		return readError(id, dir, err)
	}
	out := api.DirectoryListing{Path: dir, Entries: make([]api.FileEntry, 0, len(entries))}
	for _, e := range entries {
		if !below(dir, e.Path) || e.Name != path.Base(e.Path) {
			continue
		}
		out.Entries = append(out.Entries, api.FileEntry{Name: e.Name, Path: e.Path, Type: entryType(e.Type), Size: e.Size,
			Mode: e.Mode & 0o7777, Permissions: e.Permissions, Owner: e.Owner, Group: e.Group, ModTime: utcOrZero(e.ModTime),
			SymlinkTarget: e.SymlinkTarget})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// below reports whether p is a clean absolute path strictly below dir.
func below(dir, p string) bool {
	if sandbox.ValidatePath(p) != nil || path.Clean(p) != p || p == dir {
		return false
	}
	return dir == "/" || strings.HasPrefix(p, dir+"/")
}

func entryType(t string) string {
	switch t {
	case agent.EntryFile:
		return api.FileTypeFile
	case agent.EntryDir:
		return api.FileTypeDir
	case agent.EntrySymlink:
		return api.FileTypeSymlink
	}
	return api.FileTypeOther
}
