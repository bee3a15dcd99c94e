package mongo

import (
	"context"
	"encoding/json"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// ---- admission ----

type admissionDoc struct {
	TeamID    string    `bson:"_id"`
	Data      string    `bson:"data"` // JSON
	Version   int64     `bson:"version"`
	UpdatedAt time.Time `bson:"updatedAt"`
}

func (d admissionDoc) rec() store.Admission {
	return store.Admission{TeamID: d.TeamID, Data: json.RawMessage(d.Data), Version: d.Version, UpdatedAt: d.UpdatedAt}
}

func (s *Store) CreateAdmission(ctx context.Context, a store.Admission) error {
	a, err := storeutil.Admission(a, true)
	if err != nil {
		return err
	}
	_, err = s.admissions.InsertOne(ctx, admissionDoc{TeamID: a.TeamID, Data: string(a.Data), Version: a.Version, UpdatedAt: a.UpdatedAt})
	if isDup(err) {
		return store.Exists("admission", a.TeamID)
	}
	if err != nil {
		return wrap("create admission", err)
	}
	return nil
}

func (s *Store) GetAdmission(ctx context.Context, teamID string) (store.Admission, error) {
	var d admissionDoc
	err := findOne(ctx, s.admissions, bson.D{{Key: "_id", Value: teamID}}, &d, "admission", teamID)
	return d.rec(), err
}

func (s *Store) UpdateAdmission(ctx context.Context, a store.Admission) (store.Admission, error) {
	a, err := storeutil.Admission(a, false)
	if err != nil {
		return a, err
	}
	set := bson.D{{Key: "data", Value: string(a.Data)}, {Key: "updatedAt", Value: storeutil.Now()}}
	var d admissionDoc
	if err := s.update(ctx, s.admissions, "admission", a.TeamID, a.Version, nil, set, nil, &d); err != nil {
		return a, err
	}
	return d.rec(), nil
}

func (s *Store) ListAdmissions(ctx context.Context) ([]store.Admission, error) {
	return findAll(ctx, s.admissions, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}), admissionDoc.rec, "list admissions")
}
