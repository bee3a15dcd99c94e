package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// ---- Vercel sandboxes ----

type vercelSandboxDoc struct {
	ID         string    `bson:"_id"` // storeutil.VercelSandboxKey
	TeamID     string    `bson:"teamId"`
	Project    string    `bson:"project"`
	Name       string    `bson:"name"`
	API        int       `bson:"api"`
	SessionIDs []string  `bson:"sessionIds"` // an array, empty rather than absent: the sessions index reads it
	Data       string    `bson:"data"`       // JSON
	Version    int64     `bson:"version"`
	CreatedAt  time.Time `bson:"createdAt"`
	UpdatedAt  time.Time `bson:"updatedAt"`
}

func (d vercelSandboxDoc) rec() store.VercelSandbox {
	v := store.VercelSandbox{TeamID: d.TeamID, Project: d.Project, Name: d.Name, API: d.API, SessionIDs: d.SessionIDs,
		Data: json.RawMessage(d.Data), Version: d.Version, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if len(v.SessionIDs) == 0 {
		v.SessionIDs = nil
	}
	return v
}

// sessionIDs is ids as the document keeps them.
func sessionIDs(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

func (s *Store) CreateVercelSandbox(ctx context.Context, v store.VercelSandbox) error {
	v, err := storeutil.VercelSandbox(v, true)
	if err != nil {
		return err
	}
	_, err = s.vercelSandboxes.InsertOne(ctx, vercelSandboxDoc{ID: storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name),
		TeamID: v.TeamID, Project: v.Project, Name: v.Name, API: v.API, SessionIDs: sessionIDs(v.SessionIDs),
		Data: string(v.Data), Version: v.Version, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt})
	if isDup(err) {
		return store.Conflict("vercel_sandbox_exists", "a sandbox named %q exists in project %s", v.Name, v.Project)
	}
	if err != nil {
		return wrap("create vercel sandbox", err)
	}
	return nil
}

func (s *Store) GetVercelSandbox(ctx context.Context, teamID, project, name string) (store.VercelSandbox, error) {
	var d vercelSandboxDoc
	err := findOne(ctx, s.vercelSandboxes, bson.D{{Key: "_id", Value: storeutil.VercelSandboxKey(teamID, project, name)}},
		&d, "vercel_sandbox", name)
	return d.rec(), err
}

func (s *Store) GetVercelSandboxBySession(ctx context.Context, teamID, sessionID string) (store.VercelSandbox, error) {
	docs, err := findAll(ctx, s.vercelSandboxes, bson.D{{Key: "teamId", Value: teamID}, {Key: "sessionIds", Value: sessionID}},
		sortBy("createdAt", "_id").SetLimit(1), vercelSandboxDoc.rec, "get vercel sandbox")
	if err != nil {
		return store.VercelSandbox{}, err
	}
	if len(docs) == 0 {
		return store.VercelSandbox{}, store.NotFound("vercel_sandbox", "")
	}
	return docs[0], nil
}

func (s *Store) UpdateVercelSandbox(ctx context.Context, v store.VercelSandbox) (store.VercelSandbox, error) {
	v, err := storeutil.VercelSandbox(v, false)
	if err != nil {
		return v, err
	}
	set := bson.D{{Key: "sessionIds", Value: sessionIDs(v.SessionIDs)}, {Key: "data", Value: string(v.Data)},
		{Key: "updatedAt", Value: storeutil.Now()}}
	var d vercelSandboxDoc
	key := storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name)
	if err := s.update(ctx, s.vercelSandboxes, "vercel_sandbox", key, v.Version, nil, set, nil, &d); err != nil {
		return v, err
	}
	return d.rec(), nil
}

// DeleteVercelSandbox holds the same claim as an update from version, so
// that on FerretDB (a query, then a delete) it cannot remove a record
// that an update has just moved past version.
func (s *Store) DeleteVercelSandbox(ctx context.Context, teamID, project, name string, version int64) error {
	key := storeutil.VercelSandboxKey(teamID, project, name)
	lost := func() error {
		if _, err := s.GetVercelSandbox(ctx, teamID, project, name); err != nil {
			return err
		}
		return store.Stale("vercel_sandbox", name)
	}
	release, err := s.claim(ctx, claimKey(s.vercelSandboxes, key, version))
	if errors.Is(err, errClaimed) {
		return lost()
	}
	if err != nil {
		return err
	}
	defer release()
	res, err := s.vercelSandboxes.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}, {Key: "version", Value: version}})
	if err != nil {
		return wrap("delete vercel sandbox", err)
	}
	if res.DeletedCount == 0 {
		return lost()
	}
	return nil
}

func (s *Store) ListVercelSandboxes(ctx context.Context, f store.VercelSandboxFilter, page store.Page) ([]store.VercelSandbox, string, error) {
	filter := eq(bson.D{{Key: "teamId", Value: f.TeamID}}, "project", f.Project)
	if f.API != 0 {
		filter = append(filter, bson.E{Key: "api", Value: f.API})
	}
	return findPage(ctx, s.vercelSandboxes, filter, "createdAt", "_id", page, vercelSandboxDoc.rec,
		func(v store.VercelSandbox) storeutil.Key {
			return storeutil.Key{Time: v.CreatedAt, ID: storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name)}
		}, "list vercel sandboxes")
}

// ---- Vercel snapshots ----

type vercelSnapshotDoc struct {
	ID             string    `bson:"_id"`
	TeamID         string    `bson:"teamId"`
	Project        string    `bson:"project"`
	SandboxName    string    `bson:"sandboxName"`
	SourceSession  string    `bson:"sourceSession"`
	ParentID       string    `bson:"parentId"`
	CreationMethod string    `bson:"creationMethod"`
	CreatedAt      time.Time `bson:"createdAt"`
}

func (d vercelSnapshotDoc) rec() store.VercelSnapshot { return store.VercelSnapshot(d) }

func (s *Store) CreateVercelSnapshot(ctx context.Context, v store.VercelSnapshot) error {
	v, err := storeutil.VercelSnapshot(v)
	if err != nil {
		return err
	}
	_, err = s.vercelSnapshots.InsertOne(ctx, vercelSnapshotDoc(v))
	if isDup(err) {
		return store.Exists("vercel_snapshot", v.ID)
	}
	if err != nil {
		return wrap("create vercel snapshot", err)
	}
	return nil
}

func (s *Store) GetVercelSnapshot(ctx context.Context, teamID, id string) (store.VercelSnapshot, error) {
	var d vercelSnapshotDoc
	err := findOne(ctx, s.vercelSnapshots, bson.D{{Key: "_id", Value: id}, {Key: "teamId", Value: teamID}}, &d, "vercel_snapshot", id)
	return d.rec(), err
}

func (s *Store) DeleteVercelSnapshot(ctx context.Context, teamID, id string) error {
	return deleteOne(ctx, s.vercelSnapshots, bson.D{{Key: "_id", Value: id}, {Key: "teamId", Value: teamID}}, "vercel_snapshot", id)
}

func (s *Store) ListVercelSnapshots(ctx context.Context, f store.VercelSnapshotFilter, page store.Page) ([]store.VercelSnapshot, string, error) {
	filter := eq(eq(bson.D{{Key: "teamId", Value: f.TeamID}}, "project", f.Project), "sandboxName", f.SandboxName)
	return findPage(ctx, s.vercelSnapshots, filter, "createdAt", "_id", page, vercelSnapshotDoc.rec,
		func(v store.VercelSnapshot) storeutil.Key { return storeutil.Key{Time: v.CreatedAt, ID: v.ID} }, "list vercel snapshots")
}
