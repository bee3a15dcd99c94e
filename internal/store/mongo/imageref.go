package mongo

import (
	"context"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
)

type imageRefDoc struct {
	ID        string    `bson:"_id"` // imageRefID(scope, ref)
	Scope     string    `bson:"scope"`
	Ref       string    `bson:"ref"`
	Digest    string    `bson:"digest"`
	Source    string    `bson:"source"`
	Platform  string    `bson:"platform"`
	Insecure  bool      `bson:"insecure"`
	Keychain  bool      `bson:"keychain"`
	Replica   string    `bson:"replica"`
	UpdatedAt time.Time `bson:"updatedAt,omitempty"`
}

// imageRefID is the one key of (scope, ref): the scope's length first, so
// that no team id and ref can spell another pair's key.
func imageRefID(scope, ref string) string {
	return strconv.Itoa(len(scope)) + ":" + scope + ref
}

func (d imageRefDoc) rec() store.ImageRef {
	return store.ImageRef{Scope: d.Scope, Ref: d.Ref, Digest: d.Digest, Source: d.Source, Platform: d.Platform,
		Insecure: d.Insecure, Keychain: d.Keychain, Replica: d.Replica, UpdatedAt: store.Time(d.UpdatedAt)}
}

func (s *Store) PutImageRef(ctx context.Context, r store.ImageRef) error {
	if r.Ref == "" || r.Digest == "" {
		return store.Invalid("an image ref needs a ref and a digest")
	}
	id := imageRefID(r.Scope, r.Ref)
	d := imageRefDoc{ID: id, Scope: r.Scope, Ref: r.Ref, Digest: r.Digest, Source: r.Source, Platform: r.Platform,
		Insecure: r.Insecure, Keychain: r.Keychain, Replica: r.Replica, UpdatedAt: store.Time(r.UpdatedAt)}
	// An upsert on _id can race another upsert of the same ref into a
	// duplicate key: the retry replaces.
	err := retryDup(func() error {
		_, err := s.imageRefs.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, d, options.Replace().SetUpsert(true))
		return err
	})
	if err != nil {
		return wrap("put image ref", err)
	}
	return nil
}

func (s *Store) GetImageRef(ctx context.Context, scope, ref string) (store.ImageRef, error) {
	var d imageRefDoc
	if err := findOne(ctx, s.imageRefs, bson.D{{Key: "_id", Value: imageRefID(scope, ref)}}, &d, "image_ref", ref); err != nil {
		return store.ImageRef{}, err
	}
	return d.rec(), nil
}

func (s *Store) DeleteImageRef(ctx context.Context, scope, ref, digest string) (bool, error) {
	res, err := s.imageRefs.DeleteOne(ctx, eq(bson.D{{Key: "_id", Value: imageRefID(scope, ref)}}, "digest", digest))
	if err != nil {
		return false, wrap("delete image ref", err)
	}
	return res.DeletedCount > 0, nil
}

func (s *Store) CountImageRefs(ctx context.Context, scope string) (int, error) {
	// The scope is matched even when "" (the published one): eq would
	// drop the filter.
	n, err := s.imageRefs.CountDocuments(ctx, bson.D{{Key: "scope", Value: scope}})
	if err != nil {
		return 0, wrap("count image refs", err)
	}
	return int(n), nil
}
