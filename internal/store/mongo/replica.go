package mongo

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
)

type replicaDoc struct {
	Name      string    `bson:"_id"`
	URL       string    `bson:"url"`
	UpdatedAt time.Time `bson:"updatedAt,omitempty"`
}

func (d replicaDoc) rec() store.Replica {
	return store.Replica{Name: d.Name, URL: d.URL, UpdatedAt: store.Time(d.UpdatedAt)}
}

func (s *Store) PutReplica(ctx context.Context, r store.Replica) error {
	if r.Name == "" {
		return store.Invalid("a replica needs a name")
	}
	d := replicaDoc{Name: r.Name, URL: r.URL, UpdatedAt: store.Time(r.UpdatedAt)}
	// An upsert on _id can race another upsert of the same name into a
	// duplicate key: the retry replaces.
	err := retryDup(func() error {
		_, err := s.replicas.ReplaceOne(ctx, bson.D{{Key: "_id", Value: r.Name}}, d, options.Replace().SetUpsert(true))
		return err
	})
	if err != nil {
		return wrap("put replica", err)
	}
	return nil
}

func (s *Store) GetReplica(ctx context.Context, name string) (store.Replica, error) {
	var d replicaDoc
	if err := findOne(ctx, s.replicas, bson.D{{Key: "_id", Value: name}}, &d, "replica", name); err != nil {
		return store.Replica{}, err
	}
	return d.rec(), nil
}

func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	return findAll(ctx, s.replicas, bson.D{}, sortBy("_id"), replicaDoc.rec, "list replicas")
}
