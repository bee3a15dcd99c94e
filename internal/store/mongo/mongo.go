// Package mongo is paddock's production store on MongoDB, for several
// control-plane replicas sharing one database.
//
// It uses no transactions, change streams or TTL indexes, so that it runs
// on FerretDB (which the tests use) as well as on MongoDB. Every guarantee
// rests on what both make atomic: inserting a document whose _id or unique
// key is taken fails.
//
//   - Optimistic updates filter on {_id, version} with findOneAndUpdate and
//     $inc the version; a miss is told apart from a missing record by a
//     follow-up read. FerretDB runs findOneAndUpdate as a query followed by
//     a separate write, so two writers that read the same version could
//     both win there. Each update therefore first inserts a claim document
//     {_id: "<collection>/<id>/<version>"} into the claims collection: of
//     the writers that read one version, one inserts the claim and the
//     others conflict. The claim is deleted after the update; one left by a
//     crashed writer is taken over once it is older than claimLease. On
//     MongoDB the claim is redundant (findOneAndUpdate is atomic) but
//     harmless, and the same code runs on both.
//   - Event Seq is the events' _id, taken as the largest _id + 1 and
//     inserted; a duplicate means another writer took that Seq first, and
//     the append retries with the next. An event is visible from the moment
//     its Seq is taken, so Seq order is visibility order (no counter handing
//     out numbers ahead of inserts, which a feed could overtake). Events
//     must never be deleted from the top of the sequence, or a Seq would be
//     reused.
//   - Unique keys are unique indexes, created at Open. FerretDB has no
//     partial or sparse indexes, so a user's identity is a computed field
//     that is unique for users without an OIDC subject too.
//
// Records with free-form keys (a sandbox's Env, a project's Spec, an
// event's Data, a Vercel sandbox's Data) are stored as JSON strings: a key with '.' or '$' is not
// a field name MongoDB or FerretDB accept everywhere.
package mongo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mgo "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// claimLease is how long a claim protects an update before another writer
// may take it over (its holder is presumed dead).
const claimLease = 30 * time.Second

// Store is a store.Store on one MongoDB database.
type Store struct {
	client   *mgo.Client
	uri      string
	database string

	teams, users, tokens, projects, activations *mgo.Collection
	sandboxes, commands, usage, events, claims  *mgo.Collection
	vercelSandboxes, vercelSnapshots            *mgo.Collection
	admissions, admissionHolds                  *mgo.Collection
	usageRollups, budgets                       *mgo.Collection
	e2bSandboxes                                *mgo.Collection
	webhooks, deliveries                        *mgo.Collection
	leases, replicas, imageRefs, snapshotRefs   *mgo.Collection

	// seq is the largest event Seq this store knows to be taken: the next
	// append tries seq+1 (see AppendEvent).
	seq atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open connects to uri, uses database, and creates the indexes.
func Open(ctx context.Context, uri, database string) (*Store, error) {
	if database == "" {
		return nil, errors.New("mongo store: a database name is required")
	}
	client, err := mgo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("mongo store: connect: %w", err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		client.Disconnect(context.Background())
		return nil, fmt.Errorf("mongo store: connect: %w", err)
	}
	db := client.Database(database)
	s := &Store{
		client: client, uri: uri, database: database,
		teams: db.Collection("teams"), users: db.Collection("users"), tokens: db.Collection("tokens"),
		projects: db.Collection("projects"), activations: db.Collection("activations"),
		sandboxes: db.Collection("sandboxes"), commands: db.Collection("commands"), usage: db.Collection("usage"),
		events: db.Collection("events"), claims: db.Collection("claims"),
		vercelSandboxes: db.Collection("vercel_sandboxes"), vercelSnapshots: db.Collection("vercel_snapshots"),
		admissions: db.Collection("admissions"), admissionHolds: db.Collection("admission_holds"),
		usageRollups: db.Collection("usage_rollups"), budgets: db.Collection("budgets"),
		e2bSandboxes: db.Collection("e2b_sandboxes"),
		webhooks:     db.Collection("webhooks"), deliveries: db.Collection("webhook_deliveries"),
		leases: db.Collection("leases"), replicas: db.Collection("replicas"),
		imageRefs: db.Collection("image_refs"), snapshotRefs: db.Collection("snapshot_refs"),
	}
	if err := s.createIndexes(ctx); err != nil {
		client.Disconnect(context.Background())
		return nil, err
	}
	last, err := s.lastSeq(ctx)
	if err != nil {
		client.Disconnect(context.Background())
		return nil, wrap("read last event", err)
	}
	s.seq.Store(last)
	return s, nil
}

// URI and Database say where the store is.
func (s *Store) URI() string      { return s.uri }
func (s *Store) Database() string { return s.database }

// Close disconnects; closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.closeErr = s.client.Disconnect(ctx)
	})
	return s.closeErr
}

func keys(fields ...string) bson.D {
	d := make(bson.D, 0, len(fields))
	for _, f := range fields {
		d = append(d, bson.E{Key: f, Value: 1})
	}
	return d
}

// ix is an index: its name is how Open tells whether it exists.
type ix struct {
	name   string
	unique bool
	fields []string
}

func unique(name string, fields ...string) ix { return ix{name, true, fields} }
func index(name string, fields ...string) ix  { return ix{name, false, fields} }

func (s *Store) createIndexes(ctx context.Context) error {
	for _, ci := range []struct {
		c   *mgo.Collection
		ixs []ix
	}{
		{s.teams, []ix{unique("name_unique", "name"), index("page", "createdAt", "_id")}},
		{s.users, []ix{unique("identity_unique", "identity"), index("team_page", "teamId", "createdAt", "_id")}},
		{s.tokens, []ix{unique("hash_unique", "hash"), index("team_page", "teamId", "createdAt", "_id")}},
		{s.projects, []ix{unique("team_name_unique", "teamId", "name"),
			index("team_page", "teamId", "createdAt", "_id"), index("page", "createdAt", "_id")}},
		{s.activations, []ix{index("page", "createdAt", "_id"), index("project_page", "projectId", "createdAt", "_id"),
			index("team_page", "teamId", "createdAt", "_id"), index("state", "state")}},
		{s.sandboxes, []ix{index("node_page", "node", "createdAt", "_id"), index("team", "teamId")}},
		{s.commands, []ix{unique("sandbox_cmd_unique", "sandboxId", "cmdId"),
			index("sandbox_page", "sandboxId", "startedAt", "cmdId"), index("started", "startedAt")}},
		{s.usage, []ix{index("team_start", "teamId", "start"), index("project_start", "projectId", "start"),
			index("sandbox_start", "sandboxId", "start"), index("start", "start")}},
		{s.usageRollups, []ix{index("team_start", "teamId", "start"), index("start", "start")}},
		{s.events, []ix{index("team_seq", "teamId", "_id"), index("project_seq", "projectId", "_id"),
			index("activation_seq", "activationId", "_id")}},
		{s.vercelSandboxes, []ix{index("team_page", "teamId", "createdAt", "_id"), index("sessions", "sessionIds")}},
		{s.vercelSnapshots, []ix{index("team_page", "teamId", "createdAt", "_id")}},
		{s.e2bSandboxes, []ix{index("team_page", "teamId", "createdAt", "_id")}},
		{s.admissionHolds, []ix{index("team", "teamId", "_id")}},
		{s.imageRefs, []ix{index("scope", "scope")}},
		{s.snapshotRefs, []ix{index("team_page", "team", "createdAt", "_id"), index("page", "createdAt", "_id")}},
		{s.webhooks, []ix{index("team_page", "teamId", "createdAt", "_id")}},
		{s.deliveries, []ix{index("webhook_seq", "webhookId", "eventSeq", "_id"), index("state_seq", "state", "eventSeq", "_id"),
			index("webhook_state", "webhookId", "state", "eventSeq"),
			index("team_seq", "teamId", "eventSeq", "_id")}},
	} {
		if err := ensureIndexes(ctx, ci.c, ci.ixs); err != nil {
			return fmt.Errorf("mongo store: create indexes on %s: %w", ci.c.Name(), err)
		}
	}
	return nil
}

// ensureIndexes creates the indexes c lacks, by name: an index whose keys
// change must get a new name. (MongoDB's createIndexes is idempotent, but
// FerretDB v1.24 panics when asked for indexes that exist.)
func ensureIndexes(ctx context.Context, c *mgo.Collection, want []ix) error {
	cur, err := c.Indexes().List(ctx)
	if err != nil {
		return err
	}
	var have []struct {
		Name string `bson:"name"`
	}
	if err := cur.All(ctx, &have); err != nil {
		return err
	}
	var missing []mgo.IndexModel
	for _, w := range want {
		exists := false
		for _, h := range have {
			exists = exists || h.Name == w.name
		}
		if !exists {
			missing = append(missing, mgo.IndexModel{Keys: keys(w.fields...),
				Options: options.Index().SetName(w.name).SetUnique(w.unique)})
		}
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.Indexes().CreateMany(ctx, missing)
	return err
}

// ---- helpers ----

func wrap(op string, err error) error { return fmt.Errorf("mongo store: %s: %w", op, err) }

func isDup(err error) bool { return mgo.IsDuplicateKeyError(err) }

func noDoc(err error) bool { return errors.Is(err, mgo.ErrNoDocuments) }

// findOne decodes the document filter matches into out; NotFound if none.
func findOne(ctx context.Context, c *mgo.Collection, filter bson.D, out any, what, id string) error {
	err := c.FindOne(ctx, filter).Decode(out)
	if noDoc(err) {
		return store.NotFound(what, id)
	}
	if err != nil {
		return wrap("get "+what, err)
	}
	return nil
}

// findAll decodes every document into T and converts it.
func findAll[D, T any](ctx context.Context, c *mgo.Collection, filter bson.D, opts *options.FindOptionsBuilder, conv func(D) T, op string) ([]T, error) {
	cur, err := c.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap(op, err)
	}
	var docs []D
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(op, err)
	}
	out := make([]T, 0, len(docs))
	for _, d := range docs {
		out = append(out, conv(d))
	}
	return out, nil
}

// findPage is findAll for a keyset page ordered by (timeField, idField).
func findPage[D, T any](ctx context.Context, c *mgo.Collection, filter bson.D, timeField, idField string,
	page store.Page, conv func(D) T, key func(T) storeutil.Key, op string,
) ([]T, string, error) {
	k, ok, err := storeutil.Decode(page.Cursor)
	if err != nil {
		return nil, "", err
	}
	if ok {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: timeField, Value: bson.D{{Key: "$gt", Value: k.Time}}}},
			bson.D{{Key: timeField, Value: k.Time}, {Key: idField, Value: bson.D{{Key: "$gt", Value: k.ID}}}},
		}})
	}
	limit := storeutil.Limit(page)
	opts := options.Find().SetSort(bson.D{{Key: timeField, Value: 1}, {Key: idField, Value: 1}}).SetLimit(int64(limit + 1))
	out, err := findAll(ctx, c, filter, opts, conv, op)
	if err != nil {
		return nil, "", err
	}
	out, next := storeutil.Cut(out, limit, key)
	return out, next, nil
}

func sortBy(fields ...string) *options.FindOptionsBuilder {
	return options.Find().SetSort(keys(fields...))
}

// eq appends field: v to d when v is not "".
func eq(d bson.D, field, v string) bson.D {
	if v == "" {
		return d
	}
	return append(d, bson.E{Key: field, Value: v})
}

// setTime puts field in set, or in unset if t is zero.
func setTime(set, unset bson.D, field string, t time.Time) (bson.D, bson.D) {
	if t.IsZero() {
		return set, append(unset, bson.E{Key: field, Value: ""})
	}
	return append(set, bson.E{Key: field, Value: t}), unset
}

// retryDup runs f again while it fails with a duplicate key: an upsert that
// raced another (FerretDB runs an upsert as a query and an insert).
func retryDup(f func() error) error {
	var err error
	for range 5 {
		if err = f(); !isDup(err) {
			return err
		}
	}
	return err
}

// ---- optimistic updates ----

var errClaimed = errors.New("claimed by another writer")

type claimDoc struct {
	ID string    `bson:"_id"`
	At time.Time `bson:"at"`
}

// claim reserves the update of one record from version; the returned
// release deletes the claim.
func (s *Store) claim(ctx context.Context, key string) (release func(), err error) {
	for range 2 {
		_, err := s.claims.InsertOne(ctx, claimDoc{ID: key, At: time.Now()})
		if err == nil {
			return func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				_, _ = s.claims.DeleteOne(rctx, bson.D{{Key: "_id", Value: key}})
			}, nil
		}
		if !isDup(err) {
			return nil, wrap("claim update", err)
		}
		var c claimDoc
		switch err := s.claims.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&c); {
		case noDoc(err):
			continue // released meanwhile
		case err != nil:
			return nil, wrap("claim update", err)
		}
		if time.Since(c.At) < claimLease {
			return nil, errClaimed
		}
		// Left by a writer that died: take it over.
		if _, err := s.claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: c.ID}, {Key: "at", Value: c.At}}); err != nil {
			return nil, wrap("claim update", err)
		}
	}
	return nil, errClaimed
}

// claimKey names the claim on the update of record id from version.
func claimKey(c *mgo.Collection, id string, version int64) string {
	return c.Name() + "/" + id + "/" + strconv.FormatInt(version, 10)
}

// update applies set/unset to the record id at version (and matching
// scope), $inc-ing its version, and decodes the result into out.
func (s *Store) update(ctx context.Context, c *mgo.Collection, what, id string, version int64, scope, set, unset bson.D, out any) error {
	lost := func() error {
		// Lost the race, or is the record gone?
		err := c.FindOne(ctx, append(bson.D{{Key: "_id", Value: id}}, scope...)).Err()
		if noDoc(err) {
			return store.NotFound(what, id)
		}
		if err != nil {
			return wrap("update "+what, err)
		}
		return store.Stale(what, id)
	}
	release, err := s.claim(ctx, claimKey(c, id, version))
	if errors.Is(err, errClaimed) {
		return lost()
	}
	if err != nil {
		return err
	}
	defer release()
	upd := bson.D{{Key: "$set", Value: set}, {Key: "$inc", Value: bson.D{{Key: "version", Value: int64(1)}}}}
	if len(unset) > 0 {
		upd = append(upd, bson.E{Key: "$unset", Value: unset})
	}
	filter := append(bson.D{{Key: "_id", Value: id}, {Key: "version", Value: version}}, scope...)
	err = c.FindOneAndUpdate(ctx, filter, upd, options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(out)
	switch {
	case noDoc(err):
		return lost()
	case isDup(err):
		return store.Exists(what, id)
	case err != nil:
		return wrap("update "+what, err)
	}
	return nil
}

// ---- teams ----

type teamDoc struct {
	ID        string    `bson:"_id"`
	Name      string    `bson:"name"`
	CreatedAt time.Time `bson:"createdAt"`
}

func (d teamDoc) rec() store.Team { return store.Team{ID: d.ID, Name: d.Name, CreatedAt: d.CreatedAt} }

func (s *Store) CreateTeam(ctx context.Context, t store.Team) error {
	t, err := storeutil.Team(t)
	if err != nil {
		return err
	}
	_, err = s.teams.InsertOne(ctx, teamDoc{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt})
	if isDup(err) {
		return store.Conflict("team_exists", "a team with id %s or name %q exists", t.ID, t.Name)
	}
	if err != nil {
		return wrap("create team", err)
	}
	return nil
}

func (s *Store) GetTeam(ctx context.Context, id string) (store.Team, error) {
	var d teamDoc
	err := findOne(ctx, s.teams, bson.D{{Key: "_id", Value: id}}, &d, "team", id)
	return d.rec(), err
}

func (s *Store) ListTeams(ctx context.Context) ([]store.Team, error) {
	return findAll(ctx, s.teams, bson.D{}, sortBy("createdAt", "_id"), teamDoc.rec, "list teams")
}

// ---- users ----

type userDoc struct {
	ID        string    `bson:"_id"`
	TeamID    string    `bson:"teamId"`
	Issuer    string    `bson:"issuer"`
	Subject   string    `bson:"subject"`
	Email     string    `bson:"email"`
	Name      string    `bson:"name"`
	Role      string    `bson:"role"`
	CreatedAt time.Time `bson:"createdAt"`
	// Identity is unique: the OIDC (issuer, subject), or for a user
	// without a subject its own ID (there are no sparse indexes).
	Identity string `bson:"identity"`
}

func identity(issuer, subject string) string {
	return "oidc:" + strconv.Itoa(len(issuer)) + ":" + issuer + subject
}

func (d userDoc) rec() store.User {
	return store.User{ID: d.ID, TeamID: d.TeamID, Issuer: d.Issuer, Subject: d.Subject, Email: d.Email,
		Name: d.Name, Role: d.Role, CreatedAt: d.CreatedAt}
}

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	u, err := storeutil.User(u)
	if err != nil {
		return err
	}
	d := userDoc{ID: u.ID, TeamID: u.TeamID, Issuer: u.Issuer, Subject: u.Subject, Email: u.Email,
		Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt, Identity: "id:" + u.ID}
	if u.Subject != "" {
		d.Identity = identity(u.Issuer, u.Subject)
	}
	_, err = s.users.InsertOne(ctx, d)
	if isDup(err) {
		return store.Conflict("user_exists", "a user with id %s or the same identity exists", u.ID)
	}
	if err != nil {
		return wrap("create user", err)
	}
	return nil
}

func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	var d userDoc
	err := findOne(ctx, s.users, bson.D{{Key: "_id", Value: id}}, &d, "user", id)
	return d.rec(), err
}

func (s *Store) GetUserBySubject(ctx context.Context, issuer, subject string) (store.User, error) {
	if subject == "" {
		return store.User{}, store.NotFound("user", "")
	}
	var d userDoc
	err := findOne(ctx, s.users, bson.D{{Key: "identity", Value: identity(issuer, subject)}}, &d, "user", "")
	return d.rec(), err
}

func (s *Store) ListUsers(ctx context.Context, teamID string) ([]store.User, error) {
	return findAll(ctx, s.users, eq(bson.D{}, "teamId", teamID), sortBy("createdAt", "_id"), userDoc.rec, "list users")
}

// ---- tokens ----

type tokenDoc struct {
	ID        string    `bson:"_id"`
	TeamID    string    `bson:"teamId"`
	UserID    string    `bson:"userId"`
	Name      string    `bson:"name"`
	Hash      []byte    `bson:"hash"`
	Role      string    `bson:"role"`
	CreatedAt time.Time `bson:"createdAt"`
	ExpiresAt time.Time `bson:"expiresAt,omitempty"`
}

func (d tokenDoc) rec() store.Token {
	return store.Token{ID: d.ID, TeamID: d.TeamID, UserID: d.UserID, Name: d.Name, Hash: d.Hash, Role: d.Role,
		CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt}
}

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	t, err := storeutil.Token(t)
	if err != nil {
		return err
	}
	_, err = s.tokens.InsertOne(ctx, tokenDoc{ID: t.ID, TeamID: t.TeamID, UserID: t.UserID, Name: t.Name, Hash: t.Hash,
		Role: t.Role, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt})
	if isDup(err) {
		return store.Conflict("token_exists", "a token with id %s or the same hash exists", t.ID)
	}
	if err != nil {
		return wrap("create token", err)
	}
	return nil
}

func (s *Store) GetTokenByHash(ctx context.Context, hash []byte) (store.Token, error) {
	var d tokenDoc
	err := findOne(ctx, s.tokens, bson.D{{Key: "hash", Value: hash}}, &d, "token", "")
	return d.rec(), err
}

func (s *Store) ListTokens(ctx context.Context, teamID string) ([]store.Token, error) {
	return findAll(ctx, s.tokens, eq(bson.D{}, "teamId", teamID), sortBy("createdAt", "_id"), tokenDoc.rec, "list tokens")
}

func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return deleteOne(ctx, s.users, bson.D{{Key: "_id", Value: id}}, "user", id)
}

func (s *Store) DeleteToken(ctx context.Context, id string) error {
	return deleteOne(ctx, s.tokens, bson.D{{Key: "_id", Value: id}}, "token", id)
}

func deleteOne(ctx context.Context, c *mgo.Collection, filter bson.D, what, id string) error {
	res, err := c.DeleteOne(ctx, filter)
	if err != nil {
		return wrap("delete "+what, err)
	}
	if res.DeletedCount == 0 {
		return store.NotFound(what, id)
	}
	return nil
}

// ---- projects ----

type projectDoc struct {
	ID               string    `bson:"_id"`
	TeamID           string    `bson:"teamId"`
	Name             string    `bson:"name"`
	Spec             string    `bson:"spec,omitempty"` // JSON
	ActiveActivation string    `bson:"activeActivation"`
	StateRef         string    `bson:"stateRef"`
	Version          int64     `bson:"version"`
	CreatedAt        time.Time `bson:"createdAt"`
	UpdatedAt        time.Time `bson:"updatedAt"`
}

func (d projectDoc) rec() store.Project {
	p := store.Project{ID: d.ID, TeamID: d.TeamID, Name: d.Name, ActiveActivation: d.ActiveActivation,
		StateRef: d.StateRef, Version: d.Version, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if d.Spec != "" {
		p.Spec = json.RawMessage(d.Spec)
	}
	return p
}

func (s *Store) CreateProject(ctx context.Context, p store.Project) error {
	p, err := storeutil.Project(p, true)
	if err != nil {
		return err
	}
	_, err = s.projects.InsertOne(ctx, projectDoc{ID: p.ID, TeamID: p.TeamID, Name: p.Name, Spec: string(p.Spec),
		ActiveActivation: p.ActiveActivation, StateRef: p.StateRef, Version: p.Version, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt})
	if isDup(err) {
		return store.Conflict("project_exists", "a project with id %s or name %q exists", p.ID, p.Name)
	}
	if err != nil {
		return wrap("create project", err)
	}
	return nil
}

func (s *Store) GetProject(ctx context.Context, teamID, id string) (store.Project, error) {
	var d projectDoc
	err := findOne(ctx, s.projects, eq(bson.D{{Key: "_id", Value: id}}, "teamId", teamID), &d, "project", id)
	return d.rec(), err
}

func (s *Store) ListProjects(ctx context.Context, teamID string, page store.Page) ([]store.Project, string, error) {
	return findPage(ctx, s.projects, eq(bson.D{}, "teamId", teamID), "createdAt", "_id", page, projectDoc.rec,
		func(p store.Project) storeutil.Key { return storeutil.Key{Time: p.CreatedAt, ID: p.ID} }, "list projects")
}

func (s *Store) UpdateProject(ctx context.Context, p store.Project) (store.Project, error) {
	p, err := storeutil.Project(p, false)
	if err != nil {
		return p, err
	}
	set := bson.D{{Key: "name", Value: p.Name}, {Key: "activeActivation", Value: p.ActiveActivation},
		{Key: "stateRef", Value: p.StateRef}, {Key: "updatedAt", Value: storeutil.Now()}}
	var unset bson.D
	if p.Spec == nil {
		unset = bson.D{{Key: "spec", Value: ""}}
	} else {
		set = append(set, bson.E{Key: "spec", Value: string(p.Spec)})
	}
	var d projectDoc
	err = s.update(ctx, s.projects, "project", p.ID, p.Version, eq(nil, "teamId", p.TeamID), set, unset, &d)
	if err != nil && (sandbox.CodeOf(err) == "project_exists" || sandbox.CodeOf(err) == "" && s.nameTaken(ctx, p)) {
		return p, store.Conflict("project_exists", "a project named %q exists", p.Name)
	}
	if err != nil {
		return p, err
	}
	return d.rec(), nil
}

// nameTaken reports whether another project of p's team is named p.Name.
// FerretDB reports a unique index violated by an update as an internal
// error, not a duplicate key: this tells the two apart after the fact.
func (s *Store) nameTaken(ctx context.Context, p store.Project) bool {
	var cur projectDoc
	if err := s.projects.FindOne(ctx, bson.D{{Key: "_id", Value: p.ID}}).Decode(&cur); err != nil {
		return false
	}
	err := s.projects.FindOne(ctx, bson.D{{Key: "teamId", Value: cur.TeamID}, {Key: "name", Value: p.Name},
		{Key: "_id", Value: bson.D{{Key: "$ne", Value: p.ID}}}}).Err()
	return err == nil
}

func (s *Store) DeleteProject(ctx context.Context, teamID, id string) error {
	return deleteOne(ctx, s.projects, eq(bson.D{{Key: "_id", Value: id}}, "teamId", teamID), "project", id)
}

// ---- activations ----

type activationDoc struct {
	ID             string    `bson:"_id"`
	ProjectID      string    `bson:"projectId"`
	TeamID         string    `bson:"teamId"`
	SandboxID      string    `bson:"sandboxId"`
	ImageDigest    string    `bson:"imageDigest,omitempty"`
	State          string    `bson:"state"`
	Error          string    `bson:"error"`
	LogTail        string    `bson:"logTail"`
	EndReason      string    `bson:"endReason"`
	CreatedAt      time.Time `bson:"createdAt"`
	ReadyAt        time.Time `bson:"readyAt,omitempty"`
	EndedAt        time.Time `bson:"endedAt,omitempty"`
	LastActivityAt time.Time `bson:"lastActivityAt,omitempty"`
	Replica        string    `bson:"replica,omitempty"`
	Version        int64     `bson:"version"`
}

func (d activationDoc) rec() store.Activation { return store.Activation(d) }

func (s *Store) CreateActivation(ctx context.Context, a store.Activation) error {
	a, err := storeutil.Activation(a, true)
	if err != nil {
		return err
	}
	_, err = s.activations.InsertOne(ctx, activationDoc(a))
	if isDup(err) {
		return store.Exists("activation", a.ID)
	}
	if err != nil {
		return wrap("create activation", err)
	}
	return nil
}

func (s *Store) GetActivation(ctx context.Context, id string) (store.Activation, error) {
	var d activationDoc
	err := findOne(ctx, s.activations, bson.D{{Key: "_id", Value: id}}, &d, "activation", id)
	return d.rec(), err
}

func (s *Store) UpdateActivation(ctx context.Context, a store.Activation) (store.Activation, error) {
	a, err := storeutil.Activation(a, false)
	if err != nil {
		return a, err
	}
	set := bson.D{{Key: "sandboxId", Value: a.SandboxID}, {Key: "imageDigest", Value: a.ImageDigest}, {Key: "state", Value: a.State}, {Key: "error", Value: a.Error},
		{Key: "logTail", Value: a.LogTail}, {Key: "endReason", Value: a.EndReason}, {Key: "replica", Value: a.Replica}}
	var unset bson.D
	set, unset = setTime(set, unset, "readyAt", a.ReadyAt)
	set, unset = setTime(set, unset, "endedAt", a.EndedAt)
	set, unset = setTime(set, unset, "lastActivityAt", a.LastActivityAt)
	var d activationDoc
	if err := s.update(ctx, s.activations, "activation", a.ID, a.Version, nil, set, unset, &d); err != nil {
		return a, err
	}
	return d.rec(), nil
}

func (s *Store) ListActivations(ctx context.Context, f store.ActivationFilter, page store.Page) ([]store.Activation, string, error) {
	filter := eq(eq(bson.D{}, "teamId", f.TeamID), "projectId", f.ProjectID)
	if len(f.States) > 0 {
		filter = append(filter, bson.E{Key: "state", Value: bson.D{{Key: "$in", Value: f.States}}})
	}
	return findPage(ctx, s.activations, filter, "createdAt", "_id", page, activationDoc.rec,
		func(a store.Activation) storeutil.Key { return storeutil.Key{Time: a.CreatedAt, ID: a.ID} }, "list activations")
}

// ---- sandboxes ----

type sandboxDoc struct {
	ID        string    `bson:"_id"`
	Node      string    `bson:"node"`
	TeamID    string    `bson:"teamId"`
	State     string    `bson:"state"`
	CreatedAt time.Time `bson:"createdAt"`
	Data      string    `bson:"data"` // sandbox.Sandbox as JSON
}

func (d sandboxDoc) rec() (store.SandboxRecord, error) {
	r := store.SandboxRecord{Node: d.Node}
	err := json.Unmarshal([]byte(d.Data), &r.Sandbox)
	return r, err
}

func (s *Store) PutSandbox(ctx context.Context, r store.SandboxRecord) error {
	r, data, err := storeutil.Sandbox(r)
	if err != nil {
		return err
	}
	sb := r.Sandbox
	d := sandboxDoc{ID: sb.ID, Node: r.Node, TeamID: sb.TeamID, State: string(sb.State), CreatedAt: sb.CreatedAt, Data: data}
	err = retryDup(func() error {
		_, err := s.sandboxes.ReplaceOne(ctx, bson.D{{Key: "_id", Value: sb.ID}}, d, options.Replace().SetUpsert(true))
		return err
	})
	if err != nil {
		return wrap("put sandbox", err)
	}
	return nil
}

func (s *Store) GetSandbox(ctx context.Context, id string) (store.SandboxRecord, error) {
	var d sandboxDoc
	if err := findOne(ctx, s.sandboxes, bson.D{{Key: "_id", Value: id}}, &d, "sandbox", id); err != nil {
		return store.SandboxRecord{}, err
	}
	r, err := d.rec()
	if err != nil {
		return r, wrap("decode sandbox "+id, err)
	}
	return r, nil
}

func (s *Store) DeleteSandbox(ctx context.Context, id string) error {
	if _, err := s.sandboxes.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		return wrap("delete sandbox", err)
	}
	return nil
}

// MoveSandbox is a findOneAndUpdate filtered on {_id, node}. FerretDB
// runs that as a read and a write, so the move first takes a claim on
// (id, from), as optimistic updates do: of the movers that found the
// record from's, one takes the claim and the others conflict, and the
// winner's filter is read after the claim is taken. (A PutSandbox by from
// itself is a plain replace: on MongoDB the move's filter is atomic
// against it; on FerretDB the two can interleave.)
func (s *Store) MoveSandbox(ctx context.Context, id, from, to string) (store.SandboxRecord, error) {
	moved := func() (store.SandboxRecord, error) {
		var d sandboxDoc
		if err := findOne(ctx, s.sandboxes, bson.D{{Key: "_id", Value: id}}, &d, "sandbox", id); err != nil {
			return store.SandboxRecord{}, err
		}
		return store.SandboxRecord{}, store.Moved(id, d.Node, from)
	}
	release, err := s.claim(ctx, s.sandboxes.Name()+"/"+id+"/node/"+from)
	if errors.Is(err, errClaimed) {
		return moved()
	}
	if err != nil {
		return store.SandboxRecord{}, err
	}
	defer release()
	var d sandboxDoc
	err = s.sandboxes.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}, {Key: "node", Value: from}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "node", Value: to}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d)
	if noDoc(err) {
		return moved()
	}
	if err != nil {
		return store.SandboxRecord{}, wrap("move sandbox", err)
	}
	r, err := d.rec()
	if err != nil {
		return r, wrap("decode sandbox "+id, err)
	}
	return r, nil
}

func (s *Store) ListSandboxes(ctx context.Context, node string) ([]store.SandboxRecord, error) {
	docs, err := findAll(ctx, s.sandboxes, eq(bson.D{}, "node", node), sortBy("createdAt", "_id"),
		func(d sandboxDoc) sandboxDoc { return d }, "list sandboxes")
	if err != nil {
		return nil, err
	}
	out := make([]store.SandboxRecord, 0, len(docs))
	for _, d := range docs {
		r, err := d.rec()
		if err != nil {
			return nil, wrap("decode sandbox "+d.ID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// ---- commands ----

type commandDoc struct {
	SandboxID  string    `bson:"sandboxId"`
	ID         string    `bson:"cmdId"` // unique with sandboxId; _id is the driver's ObjectID
	TeamID     string    `bson:"teamId"`
	Cmd        string    `bson:"cmd"`
	Args       []string  `bson:"args,omitempty"`
	Cwd        string    `bson:"cwd"`
	Sudo       bool      `bson:"sudo"`
	Tag        string    `bson:"tag,omitempty"`
	PTYRows    uint16    `bson:"ptyRows,omitempty"`
	PTYCols    uint16    `bson:"ptyCols,omitempty"`
	StartedAt  time.Time `bson:"startedAt"`
	FinishedAt time.Time `bson:"finishedAt,omitempty"`
	ExitCode   *int      `bson:"exitCode,omitempty"`
}

func (d commandDoc) rec() store.Command {
	c := store.Command{ID: d.ID, SandboxID: d.SandboxID, TeamID: d.TeamID, Cmd: d.Cmd, Args: d.Args, Cwd: d.Cwd,
		Sudo: d.Sudo, Tag: d.Tag, PTYRows: d.PTYRows, PTYCols: d.PTYCols, StartedAt: d.StartedAt, FinishedAt: d.FinishedAt, ExitCode: d.ExitCode}
	if len(c.Args) == 0 {
		c.Args = nil
	}
	return c
}

func (s *Store) AddCommand(ctx context.Context, c store.Command) error {
	c, err := storeutil.Command(c)
	if err != nil {
		return err
	}
	_, err = s.commands.InsertOne(ctx, commandDoc{SandboxID: c.SandboxID, ID: c.ID, TeamID: c.TeamID, Cmd: c.Cmd,
		Args: c.Args, Cwd: c.Cwd, Sudo: c.Sudo, Tag: c.Tag, PTYRows: c.PTYRows, PTYCols: c.PTYCols, StartedAt: c.StartedAt, FinishedAt: c.FinishedAt, ExitCode: c.ExitCode})
	if isDup(err) {
		return store.Exists("command", c.ID)
	}
	if err != nil {
		return wrap("add command", err)
	}
	return nil
}

func (s *Store) FinishCommand(ctx context.Context, sandboxID, id string, exitCode int, finishedAt time.Time) error {
	res, err := s.commands.UpdateOne(ctx, bson.D{{Key: "sandboxId", Value: sandboxID}, {Key: "cmdId", Value: id}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "exitCode", Value: exitCode}, {Key: "finishedAt", Value: storeutil.Finished(finishedAt)}}}})
	if err != nil {
		return wrap("finish command", err)
	}
	if res.MatchedCount == 0 {
		return store.NotFound("command", id)
	}
	return nil
}

func (s *Store) ListCommands(ctx context.Context, sandboxID string, page store.Page) ([]store.Command, string, error) {
	return findPage(ctx, s.commands, bson.D{{Key: "sandboxId", Value: sandboxID}}, "startedAt", "cmdId", page, commandDoc.rec,
		func(c store.Command) storeutil.Key { return storeutil.Key{Time: c.StartedAt, ID: c.ID} }, "list commands")
}

func (s *Store) TrimCommands(ctx context.Context, sandboxID string, keep int) (int, error) {
	if keep < 0 {
		return 0, store.Invalid("trim commands: keep %d is negative", keep)
	}
	// The oldest command kept; everything at or before it in page order,
	// other than it, goes.
	var last commandDoc
	err := s.commands.FindOne(ctx, bson.D{{Key: "sandboxId", Value: sandboxID}},
		options.FindOne().SetSort(bson.D{{Key: "startedAt", Value: -1}, {Key: "cmdId", Value: -1}}).SetSkip(int64(keep))).Decode(&last)
	if errors.Is(err, mgo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("trim commands", err)
	}
	res, err := s.commands.DeleteMany(ctx, bson.D{{Key: "sandboxId", Value: sandboxID}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "startedAt", Value: bson.D{{Key: "$lt", Value: last.StartedAt}}}},
		bson.D{{Key: "startedAt", Value: last.StartedAt}, {Key: "cmdId", Value: bson.D{{Key: "$lte", Value: last.ID}}}},
	}}})
	if err != nil {
		return 0, wrap("trim commands", err)
	}
	return int(res.DeletedCount), nil
}

func (s *Store) PruneCommands(ctx context.Context, before time.Time) (int, error) {
	res, err := s.commands.DeleteMany(ctx, bson.D{{Key: "startedAt", Value: bson.D{{Key: "$lt", Value: store.Time(before)}}}})
	if err != nil {
		return 0, wrap("prune commands", err)
	}
	return int(res.DeletedCount), nil
}

// ---- usage ----

type usageDoc struct {
	ID              string    `bson:"_id"`
	TeamID          string    `bson:"teamId"`
	ProjectID       string    `bson:"projectId"`
	SandboxID       string    `bson:"sandboxId"`
	Start           time.Time `bson:"start"`
	End             time.Time `bson:"end"`
	CPUSeconds      float64   `bson:"cpuSeconds"`
	MemoryMBHours   float64   `bson:"memoryMBHours"`
	NetRxBytes      int64     `bson:"netRxBytes"`
	NetTxBytes      int64     `bson:"netTxBytes"`
	MemoryPeakBytes int64     `bson:"memoryPeakBytes"`
	Creations       int64     `bson:"creations"`
	StorageGBHours  float64   `bson:"storageGBHours"`
	EndCPUSeconds   float64   `bson:"endCpuSeconds"`
	EndNetRxBytes   int64     `bson:"endNetRxBytes"`
	EndNetTxBytes   int64     `bson:"endNetTxBytes"`
}

func (d usageDoc) rec() store.Usage {
	return store.Usage{ID: d.ID, TeamID: d.TeamID, ProjectID: d.ProjectID, SandboxID: d.SandboxID, Start: d.Start, End: d.End,
		CPUSeconds: d.CPUSeconds, MemoryMBHours: d.MemoryMBHours, NetRxBytes: uint64(d.NetRxBytes), NetTxBytes: uint64(d.NetTxBytes),
		MemoryPeakBytes: uint64(d.MemoryPeakBytes), Creations: d.Creations, StorageGBHours: d.StorageGBHours,
		EndCPUSeconds: d.EndCPUSeconds, EndNetRxBytes: uint64(d.EndNetRxBytes), EndNetTxBytes: uint64(d.EndNetTxBytes)}
}

func usageDocOf(u store.Usage) usageDoc {
	return usageDoc{ID: u.ID, TeamID: u.TeamID, ProjectID: u.ProjectID, SandboxID: u.SandboxID,
		Start: u.Start, End: u.End, CPUSeconds: u.CPUSeconds, MemoryMBHours: u.MemoryMBHours,
		NetRxBytes: int64(u.NetRxBytes), NetTxBytes: int64(u.NetTxBytes), MemoryPeakBytes: int64(u.MemoryPeakBytes),
		Creations: u.Creations, StorageGBHours: u.StorageGBHours, EndCPUSeconds: u.EndCPUSeconds,
		EndNetRxBytes: int64(u.EndNetRxBytes), EndNetTxBytes: int64(u.EndNetTxBytes)}
}

func (s *Store) AddUsage(ctx context.Context, u store.Usage) error {
	u, err := storeutil.Usage(u)
	if err != nil {
		return err
	}
	_, err = s.usage.InsertOne(ctx, usageDocOf(u))
	if isDup(err) {
		return store.Exists("usage", u.ID)
	}
	if err != nil {
		return wrap("add usage", err)
	}
	return nil
}

func (s *Store) ListUsage(ctx context.Context, f store.UsageFilter) ([]store.Usage, error) {
	return listUsage(ctx, s.usage, f, "list usage")
}

func listUsage(ctx context.Context, c *mgo.Collection, f store.UsageFilter, op string) ([]store.Usage, error) {
	filter := eq(eq(eq(bson.D{}, "teamId", f.TeamID), "projectId", f.ProjectID), "sandboxId", f.SandboxID)
	if !f.Until.IsZero() {
		filter = append(filter, bson.E{Key: "start", Value: bson.D{{Key: "$lt", Value: store.Time(f.Until)}}})
	}
	if !f.Since.IsZero() {
		filter = append(filter, bson.E{Key: "end", Value: bson.D{{Key: "$gt", Value: store.Time(f.Since)}}})
	}
	return findAll(ctx, c, filter, sortBy("start", "_id"), usageDoc.rec, op)
}

func (s *Store) PruneUsage(ctx context.Context, before time.Time) (int, error) {
	res, err := s.usage.DeleteMany(ctx, bson.D{{Key: "start", Value: bson.D{{Key: "$lt", Value: store.Time(before)}}}})
	if err != nil {
		return 0, wrap("prune usage", err)
	}
	return int(res.DeletedCount), nil
}

func (s *Store) PutUsageRollup(ctx context.Context, u store.Usage) error {
	u, err := storeutil.Usage(u)
	if err != nil {
		return err
	}
	_, err = s.usageRollups.ReplaceOne(ctx, bson.D{{Key: "_id", Value: u.ID}}, usageDocOf(u), options.Replace().SetUpsert(true))
	if err != nil {
		return wrap("put usage rollup", err)
	}
	return nil
}

func (s *Store) ListUsageRollups(ctx context.Context, f store.UsageFilter) ([]store.Usage, error) {
	return listUsage(ctx, s.usageRollups, f, "list usage rollups")
}

// ---- budgets ----

type budgetDoc struct {
	TeamID       string    `bson:"_id"`
	MonthlyLimit float64   `bson:"monthlyLimit"`
	Thresholds   []int     `bson:"thresholds,omitempty"`
	HardCap      bool      `bson:"hardCap"`
	Month        string    `bson:"month"`
	Notified     int       `bson:"notified"`
	Version      int64     `bson:"version"`
	UpdatedAt    time.Time `bson:"updatedAt"`
}

func (d budgetDoc) rec() store.Budget {
	return store.Budget{TeamID: d.TeamID, MonthlyLimit: d.MonthlyLimit, Thresholds: d.Thresholds, HardCap: d.HardCap,
		Month: d.Month, Notified: d.Notified, Version: d.Version, UpdatedAt: store.Time(d.UpdatedAt)}
}

func (s *Store) PutBudget(ctx context.Context, b store.Budget) (store.Budget, error) {
	b, err := storeutil.Budget(b)
	if err != nil {
		return b, err
	}
	now := storeutil.Now()
	if b.Version == 0 {
		d := budgetDoc{TeamID: b.TeamID, MonthlyLimit: b.MonthlyLimit, Thresholds: b.Thresholds, HardCap: b.HardCap,
			Month: b.Month, Notified: b.Notified, Version: 1, UpdatedAt: now}
		_, err := s.budgets.InsertOne(ctx, d)
		if isDup(err) {
			return b, store.Exists("budget", b.TeamID)
		}
		if err != nil {
			return b, wrap("put budget", err)
		}
		return d.rec(), nil
	}
	set := bson.D{{Key: "monthlyLimit", Value: b.MonthlyLimit}, {Key: "thresholds", Value: b.Thresholds},
		{Key: "hardCap", Value: b.HardCap}, {Key: "month", Value: b.Month}, {Key: "notified", Value: b.Notified},
		{Key: "updatedAt", Value: now}}
	var d budgetDoc
	if err := s.update(ctx, s.budgets, "budget", b.TeamID, b.Version, nil, set, nil, &d); err != nil {
		return b, err
	}
	return d.rec(), nil
}

func (s *Store) GetBudget(ctx context.Context, teamID string) (store.Budget, error) {
	var d budgetDoc
	err := findOne(ctx, s.budgets, bson.D{{Key: "_id", Value: teamID}}, &d, "budget", teamID)
	return d.rec(), err
}

func (s *Store) ListBudgets(ctx context.Context) ([]store.Budget, error) {
	return findAll(ctx, s.budgets, bson.D{}, sortBy("_id"), budgetDoc.rec, "list budgets")
}

func (s *Store) DeleteBudget(ctx context.Context, teamID string) error {
	return deleteOne(ctx, s.budgets, bson.D{{Key: "_id", Value: teamID}}, "budget", teamID)
}

// ---- events ----

type eventDoc struct {
	Seq          int64     `bson:"_id"`
	Time         time.Time `bson:"time"`
	TeamID       string    `bson:"teamId"`
	ProjectID    string    `bson:"projectId"`
	ActivationID string    `bson:"activationId"`
	SandboxID    string    `bson:"sandboxId"`
	Type         string    `bson:"type"`
	Message      string    `bson:"message"`
	Data         string    `bson:"data,omitempty"` // JSON object
}

func (d eventDoc) rec() store.Event {
	e := store.Event{Seq: d.Seq, Time: d.Time, TeamID: d.TeamID, ProjectID: d.ProjectID, ActivationID: d.ActivationID,
		SandboxID: d.SandboxID, Type: d.Type, Message: d.Message}
	if d.Data != "" {
		_ = json.Unmarshal([]byte(d.Data), &e.Data) // written by AppendEvent from a map
	}
	return e
}

// maxAppendTries bounds the retries of one append under contention; each
// round some writer succeeds, so this is only reached by starvation.
const maxAppendTries = 1000

// raiseSeq records that seq is taken.
func (s *Store) raiseSeq(seq int64) {
	for {
		cur := s.seq.Load()
		if seq <= cur || s.seq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// lastSeq reads the largest Seq in the database.
func (s *Store) lastSeq(ctx context.Context) (int64, error) {
	var last eventDoc
	err := s.events.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}}).
		SetProjection(bson.D{{Key: "_id", Value: 1}})).Decode(&last)
	if err != nil && !noDoc(err) {
		return 0, err
	}
	return last.Seq, nil
}

// AppendEvent inserts the event at the next free Seq. Seqs are dense: an
// insert only succeeds at the largest taken Seq + 1, because s.seq only
// ever holds a Seq known to be taken and every candidate is s.seq + 1.
// A duplicate means that Seq was taken meanwhile: try the next, and after
// a few misses in a row (other replicas are busy) read the largest again.
func (s *Store) AppendEvent(ctx context.Context, e store.Event) (store.Event, error) {
	e, err := storeutil.Event(e)
	if err != nil {
		return e, err
	}
	d := eventDoc{Time: e.Time, TeamID: e.TeamID, ProjectID: e.ProjectID, ActivationID: e.ActivationID,
		SandboxID: e.SandboxID, Type: e.Type, Message: e.Message}
	if len(e.Data) > 0 {
		b, err := json.Marshal(e.Data)
		if err != nil {
			return e, wrap("append event", err)
		}
		d.Data = string(b)
	}
	for try := range maxAppendTries {
		if try > 0 && try%4 == 0 {
			last, err := s.lastSeq(ctx)
			if err != nil {
				return e, wrap("append event", err)
			}
			s.raiseSeq(last)
		}
		d.Seq = s.seq.Load() + 1
		_, err = s.events.InsertOne(ctx, d)
		if err == nil {
			s.raiseSeq(d.Seq)
			e.Seq = d.Seq
			return e, nil
		}
		if !isDup(err) {
			return e, wrap("append event", err)
		}
		s.raiseSeq(d.Seq)
		if try >= 8 {
			// Contended: back off a little, at random, so writers spread out.
			select {
			case <-ctx.Done():
				return e, wrap("append event", ctx.Err())
			case <-time.After(time.Duration(rand.IntN(200*min(try, 20))) * time.Microsecond):
			}
		}
	}
	return e, wrap("append event", errors.New("too much contention for a sequence number"))
}

func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: f.AfterSeq}}}}
	filter = eq(eq(eq(filter, "teamId", f.TeamID), "projectId", f.ProjectID), "activationId", f.ActivationID)
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(storeutil.EventLimit(f)))
	return findAll(ctx, s.events, filter, opts, eventDoc.rec, "list events")
}
