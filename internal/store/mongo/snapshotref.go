package mongo

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

type snapshotRefDoc struct {
	ID          string    `bson:"_id"`
	Team        string    `bson:"team"`
	Ref         string    `bson:"ref"`
	Digest      string    `bson:"digest"`
	Replica     string    `bson:"replica"`
	Source      string    `bson:"source"`
	Image       string    `bson:"image"`
	ImageDigest string    `bson:"imageDigest"`
	OnHost      bool      `bson:"onHost"`
	Runtime     string    `bson:"runtime"`
	Env         []string  `bson:"env"`
	WorkingDir  string    `bson:"workingDir"`
	User        string    `bson:"user"`
	Size        int64     `bson:"size"`
	CreatedAt   time.Time `bson:"createdAt,omitempty"`
	LastUsed    time.Time `bson:"lastUsed,omitempty"`
}

func (d snapshotRefDoc) rec() store.SnapshotRef {
	return store.SnapshotRef{ID: d.ID, Team: d.Team, Ref: d.Ref, Digest: d.Digest, Replica: d.Replica, Source: d.Source,
		Image: d.Image, ImageDigest: d.ImageDigest, OnHost: d.OnHost, Runtime: d.Runtime, Env: d.Env,
		WorkingDir: d.WorkingDir, User: d.User, Size: d.Size, CreatedAt: store.Time(d.CreatedAt), LastUsed: store.Time(d.LastUsed)}
}

func (s *Store) PutSnapshotRef(ctx context.Context, r store.SnapshotRef) error {
	if r.ID == "" || r.Team == "" || r.Replica == "" || r.CreatedAt.IsZero() {
		return store.Invalid("a snapshot ref needs an id, a team, a replica and a creation time")
	}
	d := snapshotRefDoc{ID: r.ID, Team: r.Team, Ref: r.Ref, Digest: r.Digest, Replica: r.Replica, Source: r.Source,
		Image: r.Image, ImageDigest: r.ImageDigest, OnHost: r.OnHost, Runtime: r.Runtime, Env: r.Env,
		WorkingDir: r.WorkingDir, User: r.User, Size: r.Size, CreatedAt: store.Time(r.CreatedAt), LastUsed: store.Time(r.LastUsed)}
	// An upsert on _id can race another upsert of the same id into a
	// duplicate key: the retry replaces.
	err := retryDup(func() error {
		_, err := s.snapshotRefs.ReplaceOne(ctx, bson.D{{Key: "_id", Value: r.ID}}, d, options.Replace().SetUpsert(true))
		return err
	})
	if err != nil {
		return wrap("put snapshot ref", err)
	}
	return nil
}

func (s *Store) GetSnapshotRef(ctx context.Context, id string) (store.SnapshotRef, error) {
	var d snapshotRefDoc
	if err := findOne(ctx, s.snapshotRefs, bson.D{{Key: "_id", Value: id}}, &d, "snapshot_ref", id); err != nil {
		return store.SnapshotRef{}, err
	}
	return d.rec(), nil
}

func (s *Store) ListSnapshotRefs(ctx context.Context, team string, page store.Page) ([]store.SnapshotRef, string, error) {
	return findPage(ctx, s.snapshotRefs, eq(bson.D{}, "team", team), "createdAt", "_id", page, snapshotRefDoc.rec,
		func(r store.SnapshotRef) storeutil.Key { return storeutil.Key{Time: r.CreatedAt, ID: r.ID} }, "list snapshot refs")
}

func (s *Store) TouchSnapshotRef(ctx context.Context, id string, at time.Time) error {
	at = store.Time(at)
	// Either it has no time yet or an earlier one: a later touch through
	// another replica stays.
	filter := bson.D{{Key: "_id", Value: id}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "lastUsed", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "lastUsed", Value: bson.D{{Key: "$lt", Value: at}}}},
	}}}
	if _, err := s.snapshotRefs.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{{Key: "lastUsed", Value: at}}}}); err != nil {
		return wrap("touch snapshot ref", err)
	}
	return nil
}

func (s *Store) DeleteSnapshotRef(ctx context.Context, id string) (bool, error) {
	res, err := s.snapshotRefs.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return false, wrap("delete snapshot ref", err)
	}
	return res.DeletedCount > 0, nil
}
