package store

import (
	"context"
	"time"
)

// ImageRefs is the part of Store that is the image directory: the image
// refs of every scope, recorded by whichever replica pulled or imported
// them, so that a replica whose own image store lacks one pulls it by
// digest from where it came (internal/image's Store.Resolve). The layers
// themselves stay in each replica's own image store.
type ImageRefs interface {
	// PutImageRef inserts or replaces the record of (r.Scope, r.Ref).
	PutImageRef(ctx context.Context, r ImageRef) error
	// GetImageRef returns a scope's ref; ErrNotFound "image_ref_not_found"
	// if the scope has none of that name.
	GetImageRef(ctx context.Context, scope, ref string) (ImageRef, error)
	// DeleteImageRef deletes (scope, ref) if it names digest ("": whatever
	// it names) and reports whether it deleted: a ref another replica has
	// moved to another image meanwhile stays. An unknown ref is not an
	// error.
	DeleteImageRef(ctx context.Context, scope, ref, digest string) (bool, error)
	// CountImageRefs returns how many refs scope has ("" is the published
	// scope, not every scope's), whichever replica recorded them: what a
	// team's image cap counts on every replica alike.
	CountImageRefs(ctx context.Context, scope string) (int, error)
}

// ImageRef is one ref of one scope and where its image can be had again.
// It never holds credentials: a pull that needed a tenant's own can be
// repeated only through a replica that has the image, or with them again.
type ImageRef struct {
	// Scope is a team id, or "" for the refs the host admin publishes to
	// every team (internal/image's Published).
	Scope string `json:"scope"`
	// Ref is the normalised reference (index.docker.io/library/alpine:3.20),
	// or the digest of an image imported without one.
	Ref    string `json:"ref"`
	Digest string `json:"digest"` // the manifest digest
	// Source is the registry reference the image was pulled from; "" for
	// an image imported from an archive, which is in no registry.
	Source string `json:"source,omitempty"`
	// How to pull it again: the platform picked, plain HTTP, and whether
	// the server's own keychain (the operator's logins) was allowed.
	Platform string `json:"platform,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
	Keychain bool   `json:"keychain,omitempty"`
	// Replica names the replica that recorded it: the one that has an
	// imported image.
	Replica   string    `json:"replica,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}
