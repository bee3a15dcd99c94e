package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Images is what the server needs from the host's image store. Refs live
// in a scope: a team's id, or image.Published; Get and List answer what a
// team sees (its own refs, then the published ones). StartPull runs a pull
// the store owns, detached from the request (see image.Store.StartPull).
// Remove is refused with ErrConflict "image_in_use" while a running sandbox
// uses the image (node.Manager.RemoveImage); internal/daemon puts the two
// together.
type Images interface {
	StartPull(ctx context.Context, scope, ref string, opts image.PullOptions, progress func(image.LayerProgress)) <-chan image.PullResult
	Import(ctx context.Context, scope, path string) (*image.Image, error)
	List(team string) []*image.Image
	Get(team, ref string) (*image.Image, error)
	Remove(ctx context.Context, scope, ref string) error
}

// importTimeout bounds one import. It runs detached from the request's
// cancellation, as a pull does, so a client that hangs up does not waste a
// half-done import; the request's goroutine waits for it.
const importTimeout = image.DefaultPullTimeout

var errNoImages = sandbox.Errorf(sandbox.ErrUnsupported, "images_disabled", "this server has no image store")

func toAPIImage(img *image.Image) api.Image {
	c := img.Config
	return api.Image{
		Ref: img.Ref, Digest: img.Digest, TeamID: img.Team, Published: img.Team == image.Published,
		Layers: len(img.Layers), Size: img.Size,
		Config: api.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd},
	}
}

// listImages shows the caller's team's refs and the published ones (every
// scope's to the host admin), without the configs' Env.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	p := callerOf(r)
	team := p.TeamID
	if p.HostAdmin {
		team = image.AllScopes
	}
	out := api.ImageList{Images: []api.Image{}}
	for _, img := range s.images.List(team) {
		a := toAPIImage(img)
		a.Config.Env = nil
		out.Images = append(out.Images, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// imageScope is where a pull, import or remove puts or takes a ref: the
// caller's team, or the published scope, which only the host admin writes.
func imageScope(r *http.Request, published bool) (string, error) {
	p := callerOf(r)
	if !published {
		return p.TeamID, nil
	}
	if !p.HostAdmin {
		return "", sandbox.Errorf(sandbox.ErrForbidden, "host_admin_required", "only the host admin publishes images to every team")
	}
	return image.Published, nil
}

// publishedParam reads ?published=true.
func publishedParam(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("published")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, sandbox.Errorf(sandbox.ErrInvalid, "invalid_parameter", "published must be true or false, got %q", v)
	}
	return b, nil
}

// imageRef reads the ref from the path ({ref...}, URL-escaped by clients)
// or from ?ref=, which needs no escaping of '/' and ':'.
func imageRef(r *http.Request) (string, error) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = r.PathValue("ref")
	}
	if ref == "" {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "an image reference is required")
	}
	return ref, nil
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	ref, err := imageRef(r)
	if err != nil {
		return err
	}
	img, err := s.images.Get(callerOf(r).TeamID, ref)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIImage(img))
	return nil
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	// A team removes its own refs; the published ones are the host admin's.
	published, err := publishedParam(r)
	if err != nil {
		return err
	}
	scope, err := imageScope(r, published)
	if err != nil {
		return err
	}
	ref, err := imageRef(r)
	if err != nil {
		return err
	}
	if err := s.images.Remove(context.WithoutCancel(r.Context()), scope, ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// pullImage streams progress as NDJSON. The status line waits for the
// first layer event, so a pull refused before any layer (bad credentials,
// unknown image or registry) answers with its own status and error body;
// a failure later ends the stream with an error line.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	var req api.PullImageRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Ref == "" {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "ref is required")
	}
	scope, err := imageScope(r, req.Published)
	if err != nil {
		return err
	}
	// Plain HTTP to a registry the network can tamper with is the
	// operator's call: the host admin's only.
	if req.Insecure && !callerOf(r).HostAdmin {
		return sandbox.Errorf(sandbox.ErrForbidden, "host_admin_required", "only the host admin pulls over plain HTTP (insecure)")
	}
	// The server's keychain holds the operator's registry logins: a team
	// pulls with its own credentials or none, unless the operator allows it.
	keychain := callerOf(r).HostAdmin || s.imageKeychain
	opts := image.PullOptions{Username: req.Username, Password: req.Password, Token: req.Token, Insecure: req.Insecure, Keychain: keychain}

	events := make(chan image.LayerProgress, 64)
	handlerGone := make(chan struct{})
	defer close(handlerGone)
	// The store owns the pull: it goes on when the client leaves.
	done := s.images.StartPull(r.Context(), scope, req.Ref, opts, func(p image.LayerProgress) {
		select {
		case events <- p:
		case <-handlerGone: // nobody listens any more; the pull goes on
		}
	})

	// The stream ends with the request or with CloseStreams; the pull
	// does not.
	ctx, stop := s.longPoll(r)
	defer stop()
	var enc *json.Encoder
	flush := func() { _ = http.NewResponseController(w).Flush() }
	for {
		select {
		case <-ctx.Done():
			err := s.shutdownErr(r, fmt.Errorf("pull %s: %w", req.Ref, ctx.Err()))
			if enc == nil {
				return err
			}
			status, code := httperr.Status(err)
			_ = enc.Encode(api.PullProgress{Error: &api.ErrorDetail{Code: code, Message: httperr.Message(err, status)}})
			return nil
		case p := <-events:
			if enc == nil {
				w.Header().Set("Content-Type", api.ContentTypeNDJSON)
				w.WriteHeader(http.StatusOK)
				enc = json.NewEncoder(w)
			}
			if err := enc.Encode(api.PullProgress{Digest: p.Digest, Index: p.Index, Count: p.Count, Bytes: p.Bytes, Cached: p.Cached, Done: p.Done}); err != nil {
				return nil // the client left; the pull finishes on its own
			}
			flush()
		case res := <-done:
			// Progress sent before the result is already in events.
			for len(events) > 0 {
				p := <-events
				if enc != nil {
					_ = enc.Encode(api.PullProgress{Digest: p.Digest, Index: p.Index, Count: p.Count, Bytes: p.Bytes, Cached: p.Cached, Done: p.Done})
				}
			}
			if enc == nil {
				if res.Err != nil {
					return res.Err
				}
				w.Header().Set("Content-Type", api.ContentTypeNDJSON)
				w.WriteHeader(http.StatusOK)
				enc = json.NewEncoder(w)
			}
			if res.Err != nil {
				status, code := httperr.Status(res.Err)
				s.log.Warn("image pull failed", "image", req.Ref, "status", status, "err", res.Err)
				_ = enc.Encode(api.PullProgress{Error: &api.ErrorDetail{Code: code, Message: httperr.Message(res.Err, status)}})
				return nil
			}
			img := toAPIImage(res.Image)
			_ = enc.Encode(api.PullProgress{Index: len(res.Image.Layers), Count: len(res.Image.Layers), Image: &img})
			flush()
			return nil
		}
	}
}

// importImage saves the request body (a docker-archive tar, as written by
// docker save) to a temporary file, which Import needs to seek, and
// imports it.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	published, err := publishedParam(r)
	if err != nil {
		return err
	}
	scope, err := imageScope(r, published)
	if err != nil {
		return err
	}
	f, err := s.staging.create(r.ContentLength)
	if err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	defer f.remove()
	body := http.MaxBytesReader(w, r.Body, s.maxUpload)
	if _, err := io.Copy(f, body); err != nil {
		return fmt.Errorf("import image: read body: %w", err) // httperr maps a MaxBytesError to 413
	}
	if err := f.finish(); err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), importTimeout)
	defer cancel()
	img, err := s.images.Import(ctx, scope, f.path())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toAPIImage(img))
	return nil
}
