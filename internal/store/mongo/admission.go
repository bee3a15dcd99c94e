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

// ---- admission holds ----

type admissionHoldDoc struct {
	SandboxID string    `bson:"_id"`
	TeamID    string    `bson:"teamId"`
	HoldID    string    `bson:"holdId"`
	Replica   string    `bson:"replica"`
	VCPUs     float64   `bson:"vcpus"`
	MemoryMB  int64     `bson:"memoryMb"`
	CreatedAt time.Time `bson:"createdAt"`
}

func (d admissionHoldDoc) rec() store.AdmissionHold {
	return store.AdmissionHold{SandboxID: d.SandboxID, TeamID: d.TeamID, HoldID: d.HoldID, Replica: d.Replica,
		VCPUs: d.VCPUs, MemoryMB: d.MemoryMB, CreatedAt: store.Time(d.CreatedAt)}
}

func (s *Store) CreateAdmissionHold(ctx context.Context, h store.AdmissionHold) error {
	h, err := storeutil.AdmissionHold(h)
	if err != nil {
		return err
	}
	_, err = s.admissionHolds.InsertOne(ctx, admissionHoldDoc{SandboxID: h.SandboxID, TeamID: h.TeamID, HoldID: h.HoldID,
		Replica: h.Replica, VCPUs: h.VCPUs, MemoryMB: h.MemoryMB, CreatedAt: h.CreatedAt})
	if isDup(err) {
		return store.Exists("admission_hold", h.SandboxID)
	}
	if err != nil {
		return wrap("create admission hold", err)
	}
	return nil
}

func (s *Store) DeleteAdmissionHold(ctx context.Context, sandboxID string) (store.AdmissionHold, error) {
	// Read, then delete: the delete's count says who won (FerretDB's
	// findAndModify let two concurrent removes both return the document).
	// A record is never changed, so what was read is what went.
	var d admissionHoldDoc
	if err := findOne(ctx, s.admissionHolds, bson.D{{Key: "_id", Value: sandboxID}}, &d, "admission_hold", sandboxID); err != nil {
		return store.AdmissionHold{}, err
	}
	res, err := s.admissionHolds.DeleteOne(ctx, bson.D{{Key: "_id", Value: sandboxID}})
	if err != nil {
		return store.AdmissionHold{}, wrap("delete admission hold", err)
	}
	if res.DeletedCount == 0 {
		return store.AdmissionHold{}, store.NotFound("admission_hold", sandboxID)
	}
	return d.rec(), nil
}

func (s *Store) ListAdmissionHolds(ctx context.Context, teamID string) ([]store.AdmissionHold, error) {
	return findAll(ctx, s.admissionHolds, bson.D{{Key: "teamId", Value: teamID}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}), admissionHoldDoc.rec, "list admission holds")
}
