package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/paddock-dev/paddock/api"
)

// PullImage pulls an image into the server's image store, calling progress
// (may be nil) with each layer event as the server reports it. A pull
// refused before any layer started (bad credentials, unknown image) is an
// *APIError with the HTTP status; one that fails later is an *APIError with
// Status 0, like an error line ending a log stream.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, progress func(api.PullProgress)) (api.Image, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return api.Image{}, fmt.Errorf("paddock: encode request: %w", err)
	}
	hreq, err := c.request(ctx, http.MethodPost, "/images/pull", nil, bytes.NewReader(body), api.ContentTypeJSON)
	if err != nil {
		return api.Image{}, err
	}
	resp, err := c.send(hreq)
	if err != nil {
		return api.Image{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line api.PullProgress
		if err := dec.Decode(&line); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return api.Image{}, fmt.Errorf("paddock: pull %s: %w", req.Ref, err)
		}
		switch {
		case line.Error != nil:
			return api.Image{}, &APIError{Code: line.Error.Code, Message: line.Error.Message}
		case line.Image != nil:
			return *line.Image, nil
		case progress != nil:
			progress(line)
		}
	}
}

// ImageOption changes an import or a removal.
type ImageOption func(url.Values)

// Published imports into, or removes from, the refs every team sees
// (host admin only); without it the ref is the caller's team's.
func Published() ImageOption { return func(q url.Values) { q.Set("published", "true") } }

func imageQuery(q url.Values, opts []ImageOption) url.Values {
	for _, o := range opts {
		o(q)
	}
	return q
}

// ListImages returns the image refs the caller sees (its team's and the
// published ones; every team's to the host admin), sorted by ref, without
// the configs' Env.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var out api.ImageList
	err := c.do(ctx, http.MethodGet, "/images", nil, nil, &out)
	return out.Images, err
}

// GetImage returns one image by ref or digest.
func (c *Client) GetImage(ctx context.Context, ref string) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, http.MethodGet, "/images/", url.Values{"ref": {ref}}, nil, &out)
	return out, err
}

// RemoveImage removes a ref of the caller's team (a digest removes every
// ref of the team to it; Published removes a published ref). The server
// refuses an image a running sandbox uses ("image_in_use").
func (c *Client) RemoveImage(ctx context.Context, ref string, opts ...ImageOption) error {
	return c.do(ctx, http.MethodDelete, "/images", imageQuery(url.Values{"ref": {ref}}, opts), nil, nil)
}

// ImportImage uploads a docker-archive tar (as written by docker save) into
// the server's store, as a ref of the caller's team (Published: of every
// team). Whatever the archive's tag, it never moves another team's ref.
func (c *Client) ImportImage(ctx context.Context, archive io.Reader, opts ...ImageOption) (api.Image, error) {
	req, err := c.request(ctx, http.MethodPost, "/images/import", imageQuery(url.Values{}, opts), archive, api.ContentTypeTar)
	if err != nil {
		return api.Image{}, err
	}
	resp, err := c.send(req)
	if err != nil {
		return api.Image{}, err
	}
	defer resp.Body.Close()
	var out api.Image
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return api.Image{}, fmt.Errorf("paddock: import image: decode answer: %w", err)
	}
	return out, nil
}
