package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Images is what the server needs from the host's image store. Remove is
// refused with ErrConflict "image_in_use" while a running sandbox uses the
// image; nodeadapter.Images implements it over *image.Store and node.
type Images interface {
	Pull(ctx context.Context, ref string, opts image.PullOptions, progress func(image.LayerProgress)) (*image.Image, error)
	Import(ctx context.Context, path string) (*image.Image, error)
	List() []*image.Image
	Get(ref string) (*image.Image, error)
	Remove(ctx context.Context, ref string) error
}

// pullTimeout bounds one pull or import. Both run detached from the
// request, so a client that hangs up does not waste a half-done download;
// the work is content-addressed, so a retry reuses every finished layer.
const pullTimeout = 30 * time.Minute

var errNoImages = sandbox.Errorf(sandbox.ErrUnsupported, "images_disabled", "this server has no image store")

func toAPIImage(img *image.Image) api.Image {
	c := img.Config
	return api.Image{
		Ref: img.Ref, Digest: img.Digest, Layers: len(img.Layers), Size: img.Size,
		Config: api.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd},
	}
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	if s.images == nil {
		return errNoImages
	}
	out := api.ImageList{Images: []api.Image{}}
	for _, img := range s.images.List() {
		out.Images = append(out.Images, toAPIImage(img))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
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
	img, err := s.images.Get(ref)
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
	// Images are the host's, shared by every team: only its admin removes one.
	if !callerOf(r).HostAdmin {
		return errHostAdminRequired
	}
	ref, err := imageRef(r)
	if err != nil {
		return err
	}
	if err := s.images.Remove(context.WithoutCancel(r.Context()), ref); err != nil {
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
	opts := image.PullOptions{Username: req.Username, Password: req.Password, Token: req.Token, Insecure: req.Insecure}

	type result struct {
		img *image.Image
		err error
	}
	events := make(chan image.LayerProgress, 64)
	done := make(chan result, 1)
	handlerGone := make(chan struct{})
	defer close(handlerGone)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), pullTimeout)
	go func() {
		defer cancel()
		img, err := s.images.Pull(ctx, req.Ref, opts, func(p image.LayerProgress) {
			select {
			case events <- p:
			case <-handlerGone: // nobody listens any more; the pull goes on
			}
		})
		done <- result{img, err}
	}()

	var enc *json.Encoder
	flush := func() { _ = http.NewResponseController(w).Flush() }
	for {
		select {
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
				if res.err != nil {
					return res.err
				}
				w.Header().Set("Content-Type", api.ContentTypeNDJSON)
				w.WriteHeader(http.StatusOK)
				enc = json.NewEncoder(w)
			}
			if res.err != nil {
				status, code := httperr.Status(res.err)
				s.log.Warn("image pull failed", "image", req.Ref, "status", status, "err", res.err)
				_ = enc.Encode(api.PullProgress{Error: &api.ErrorDetail{Code: code, Message: httperr.Message(res.err, status)}})
				return nil
			}
			img := toAPIImage(res.img)
			_ = enc.Encode(api.PullProgress{Index: len(res.img.Layers), Count: len(res.img.Layers), Image: &img})
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
	f, err := os.CreateTemp("", "paddock-import-*.tar")
	if err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	body := http.MaxBytesReader(w, r.Body, s.maxUpload)
	if _, err := io.Copy(f, body); err != nil {
		return fmt.Errorf("import image: read body: %w", err) // httperr maps a MaxBytesError to 413
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), pullTimeout)
	defer cancel()
	img, err := s.images.Import(ctx, f.Name())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toAPIImage(img))
	return nil
}
