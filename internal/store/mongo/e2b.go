package mongo

import (
	"context"
	"encoding/json"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

type e2bSandboxDoc struct {
	ID        string    `bson:"_id"`
	TeamID    string    `bson:"teamId"`
	Data      string    `bson:"data"` // JSON: metadata keys may hold '.' or '$'
	CreatedAt time.Time `bson:"createdAt"`
}

func (d e2bSandboxDoc) rec() store.E2BSandbox {
	return store.E2BSandbox{ID: d.ID, TeamID: d.TeamID, Data: json.RawMessage(d.Data), CreatedAt: d.CreatedAt}
}

func (s *Store) CreateE2BSandbox(ctx context.Context, v store.E2BSandbox) error {
	v, err := storeutil.E2BSandbox(v)
	if err != nil {
		return err
	}
	_, err = s.e2bSandboxes.InsertOne(ctx, e2bSandboxDoc{ID: v.ID, TeamID: v.TeamID, Data: string(v.Data), CreatedAt: v.CreatedAt})
	if isDup(err) {
		return store.Exists("e2b_sandbox", v.ID)
	}
	if err != nil {
		return wrap("create e2b sandbox", err)
	}
	return nil
}

func (s *Store) GetE2BSandbox(ctx context.Context, teamID, id string) (store.E2BSandbox, error) {
	var d e2bSandboxDoc
	err := findOne(ctx, s.e2bSandboxes, bson.D{{Key: "_id", Value: id}, {Key: "teamId", Value: teamID}}, &d, "e2b_sandbox", id)
	return d.rec(), err
}

func (s *Store) DeleteE2BSandbox(ctx context.Context, teamID, id string) error {
	return deleteOne(ctx, s.e2bSandboxes, bson.D{{Key: "_id", Value: id}, {Key: "teamId", Value: teamID}}, "e2b_sandbox", id)
}

func (s *Store) ListE2BSandboxes(ctx context.Context, f store.E2BSandboxFilter, page store.Page) ([]store.E2BSandbox, string, error) {
	return findPage(ctx, s.e2bSandboxes, bson.D{{Key: "teamId", Value: f.TeamID}}, "createdAt", "_id", page, e2bSandboxDoc.rec,
		func(v store.E2BSandbox) storeutil.Key { return storeutil.Key{Time: v.CreatedAt, ID: v.ID} }, "list e2b sandboxes")
}
