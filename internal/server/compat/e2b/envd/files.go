package envd

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// envd's REST file routes: GET /files streams one file out of the sandbox,
// POST /files writes files into it (multipart/form-data, one part per
// file, or one application/octet-stream body). The user comes from the
// username query (else the Basic user), the credential is the access
// token or a signed URL: ServeHTTP's authorize checks both.

func init() { addService(addFiles) }

func addFiles(h *Handler, mux *http.ServeMux) {
	mux.HandleFunc("GET /files", h.getFile)
	mux.HandleFunc("POST /files", h.postFiles)
}

// maxUploadParts bounds the files of one multipart upload; each file is
// bounded by the agent's write limit.
const maxUploadParts = 1000

// writtenFile is envd's EntryInfo of an upload's answer.
type writtenFile struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// getFile streams a regular file; a directory is 400, a missing file 404.
func (h *Handler) getFile(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r.Context())
	q := r.URL.Query()
	if !q.Has("path") {
		h.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "the path query is required"))
		return
	}
	p, err := resolvePath(t, q.Get("path"))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	rc, info, err := t.Agent.ReadFile(r.Context(), p, t.Sudo)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	if info.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

// postFiles writes the uploaded files, each created with its missing
// parents (owned by the writer) and replacing what was there, and answers
// what it wrote.
func (h *Handler) postFiles(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r.Context())
	q := r.URL.Query()
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		written []writtenFile
		err     error
	)
	switch ct {
	case "multipart/form-data":
		written, err = h.writeParts(r, t, q.Get("path"), params["boundary"])
	case "application/octet-stream", "":
		written, err = h.writeBody(r, t, q)
	default:
		err = sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_media_type",
			"upload as multipart/form-data or application/octet-stream, not %q", ct)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(written)
}

// writeBody writes an octet-stream body (gzip with Content-Encoding:
// gzip) to the path query.
func (h *Handler) writeBody(r *http.Request, t *target, q map[string][]string) ([]writtenFile, error) {
	raw := ""
	if v := q["path"]; len(v) > 0 {
		raw = v[0]
	}
	if raw == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "an octet-stream upload needs the path query")
	}
	var body io.Reader = r.Body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_body", "gzip: %v", err)
		}
		defer zr.Close()
		body = zr // the agent bounds what it writes, so a bomb is cut off there
	default:
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_encoding", "content encoding %q: identity or gzip", enc)
	}
	f, err := h.writeOne(r, t, raw, body)
	if err != nil {
		return nil, err
	}
	return []writtenFile{f}, nil
}

// writeParts writes each file part of a multipart body, streamed to the
// agent. A part's path is the path query if given, else its file name
// (the SDKs send the sandbox path there), resolved like any path.
func (h *Handler) writeParts(r *http.Request, t *target, queryPath, boundary string) ([]writtenFile, error) {
	if boundary == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_body", "multipart upload without a boundary")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_body", "multipart: %v", err)
	}
	var written []writtenFile
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return written, sandbox.Errorf(sandbox.ErrInvalid, "invalid_body", "multipart: %v", err)
		}
		name := partFileName(part.Header.Get("Content-Disposition"))
		if part.FormName() != "file" && name == "" {
			drainBody(part)
			continue
		}
		if len(written) >= maxUploadParts {
			return written, sandbox.Errorf(sandbox.ErrTooLarge, "too_many_files", "an upload may carry at most %d files", maxUploadParts)
		}
		p := queryPath
		if p == "" {
			p = name
		}
		if p == "" {
			return written, sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "a file part names no path (the path query or the part's filename)")
		}
		f, err := h.writeOne(r, t, p, part)
		if err != nil {
			return written, err
		}
		written = append(written, f)
	}
	if len(written) == 0 {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_body", "the upload carries no file part")
	}
	return written, nil
}

// partFileName is a part's filename parameter as sent: multipart.Part's
// FileName keeps only the base name, and the SDKs send the whole path.
func partFileName(disposition string) string {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// writeOne writes body to the sandbox path raw (resolved against the
// user's home) through the agent.
func (h *Handler) writeOne(r *http.Request, t *target, raw string, body io.Reader) (writtenFile, error) {
	p, err := resolvePath(t, raw)
	if err != nil {
		return writtenFile{}, err
	}
	e, err := t.Agent.WriteFile(r.Context(), p, 0, t.Sudo, body)
	if err != nil {
		return writtenFile{}, err
	}
	return writtenFile{Name: e.Name, Type: "file", Path: e.Path}, nil
}
