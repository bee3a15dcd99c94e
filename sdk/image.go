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

// ListImages returns the images in the server's store, sorted by ref.
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

// RemoveImage removes a ref from the store (a digest removes every ref to
// it). The server refuses an image a running sandbox uses ("image_in_use").
func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/images", url.Values{"ref": {ref}}, nil, nil)
}

// ImportImage uploads a docker-archive tar (as written by docker save) into
// the server's store.
func (c *Client) ImportImage(ctx context.Context, archive io.Reader) (api.Image, error) {
	req, err := c.request(ctx, http.MethodPost, "/images/import", nil, archive, api.ContentTypeTar)
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
