package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Records is what this layer keeps in paddock's store: what Vercel's model
// has and paddock's sandboxes do not (named sandboxes with their config,
// their sessions, the snapshots taken through this API). store.Store has
// it, so the records live where every other record does, on SQLite or on
// MongoDB shared by several paddock replicas.
type Records interface {
	CreateVercelSandbox(ctx context.Context, v store.VercelSandbox) error
	GetVercelSandbox(ctx context.Context, teamID, project, name string) (store.VercelSandbox, error)
	GetVercelSandboxBySession(ctx context.Context, teamID, sessionID string) (store.VercelSandbox, error)
	UpdateVercelSandbox(ctx context.Context, v store.VercelSandbox) (store.VercelSandbox, error)
	DeleteVercelSandbox(ctx context.Context, teamID, project, name string, version int64) error
	ListVercelSandboxes(ctx context.Context, f store.VercelSandboxFilter, page store.Page) ([]store.VercelSandbox, string, error)
	CreateVercelSnapshot(ctx context.Context, v store.VercelSnapshot) error
	GetVercelSnapshot(ctx context.Context, teamID, id string) (store.VercelSnapshot, error)
	DeleteVercelSnapshot(ctx context.Context, teamID, id string) error
	ListVercelSnapshots(ctx context.Context, f store.VercelSnapshotFilter, page store.Page) ([]store.VercelSnapshot, string, error)
}

var _ Records = store.Store(nil)

// Store is the thin adapter between Records and this package's Record and
// SnapshotRecord values. Records are values: a caller changes its copy and
// saves it; the save names the Version it was read at and fails with
// ErrConflict "stale_version" if another writer (another request, another
// paddock replica) saved first. Handler.change reads again and retries.
type Store struct {
	db Records
}

// NewStore wraps db.
func NewStore(db Records) *Store { return &Store{db: db} }

// OpenStore wraps db after importing, once, the records an older paddock
// kept in dataDir/compat-vercel/state.json (see importFileState).
func OpenStore(ctx context.Context, db Records, dataDir string, log *slog.Logger) (*Store, error) {
	s := NewStore(db)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := importFileState(ctx, dataDir, s, log); err != nil {
		return nil, err
	}
	return s, nil
}

// Scope is where a name is unique: a paddock team (its id, resolved from
// the request's teamId) and a Vercel project id, which is only a namespace
// within the team, not a paddock project.
type Scope struct {
	Team    string `json:"team"`
	Project string `json:"project"`
}

// holds reports whether what lives in x is listed in s: s's team and, when
// s names one, its project.
func (s Scope) holds(x Scope) bool {
	return x.Team == s.Team && (s.Project == "" || x.Project == s.Project)
}

// API generations a record was created through.
const (
	apiV1 = 1 // ephemeral: the sandbox is its one session, named by its id
	apiV2 = 2 // named, with sessions
)

// Record is one sandbox as Vercel's API sees it. Its JSON is what
// state.json held (see importFileState).
type Record struct {
	Scope
	// Version is the store's optimistic version the record was read at.
	Version    int64         `json:"-"`
	Name       string        `json:"name"`
	API        int           `json:"api"`
	Persistent bool          `json:"persistent"`
	Config     SandboxConfig `json:"config"`
	CreatedAt  int64         `json:"createdAt"` // epoch ms, as every time here
	UpdatedAt  int64         `json:"updatedAt"` // set by the store on every save
	// CurrentSnapshotID is what the next session of a persistent sandbox
	// starts from.
	CurrentSnapshotID string `json:"currentSnapshotId,omitempty"`
	// Sessions, oldest first; the last one is the current one. At most
	// maxSessions: the oldest go first.
	Sessions []SessionRecord `json:"sessions"`
}

// SandboxConfig is a sandbox's settings, applied to each new session.
type SandboxConfig struct {
	Ports         []int             `json:"ports,omitempty"`
	TimeoutMs     int64             `json:"timeoutMs,omitempty"`
	VCPUs         float64           `json:"vcpus,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	NetworkPolicy *PolicyConfig     `json:"networkPolicy,omitempty"`
	Runtime       string            `json:"runtime,omitempty"`
	Image         string            `json:"image,omitempty"`
	Region        string            `json:"region,omitempty"`
	Failover      []string          `json:"failoverRegions,omitempty"`
	// Source is what the first session started from; a non-persistent
	// sandbox starts every session from it. Credentials are never kept.
	Source *SourceConfig `json:"source,omitempty"`
	// Cwd is every session's working directory (DefaultCwd), made for the
	// sandbox's user as a session starts. Records from before it was kept
	// have none: their sessions use the image's WorkingDir or the user's
	// home, as they did when made.
	Cwd string `json:"cwd,omitempty"`
}

// PolicyConfig is an egress policy in paddock's terms.
type PolicyConfig struct {
	Mode         string   `json:"mode"`
	AllowDomains []string `json:"allowDomains,omitempty"`
	AllowCIDRs   []string `json:"allowCIDRs,omitempty"`
	DenyCIDRs    []string `json:"denyCIDRs,omitempty"`
}

// SourceConfig is a create request's source without credentials.
type SourceConfig struct {
	Type       string `json:"type"` // git, tarball, snapshot
	URL        string `json:"url,omitempty"`
	Depth      int    `json:"depth,omitempty"`
	Revision   string `json:"revision,omitempty"`
	SnapshotID string `json:"snapshotId,omitempty"`
	// Private marks a git source that needed credentials: it cannot be
	// fetched again without them.
	Private bool `json:"private,omitempty"`
}

// SessionRecord is one session: a paddock sandbox whose id is the
// session id.
type SessionRecord struct {
	ID               string `json:"id"`
	CreatedAt        int64  `json:"createdAt"`
	SourceSnapshotID string `json:"sourceSnapshotId,omitempty"`
	// StopRequestedAt is set when this API stopped it.
	StopRequestedAt int64 `json:"stopRequestedAt,omitempty"`
	// SnapshotID is the snapshot taken of this session, if any.
	SnapshotID    string `json:"snapshotId,omitempty"`
	SnapshottedAt int64  `json:"snapshottedAt,omitempty"`
	// Last is the session as last seen, so that it can still be described
	// once its paddock sandbox is deleted.
	Last *SessionState `json:"last,omitempty"`
}

// SessionState is what is kept of a paddock sandbox that may disappear.
type SessionState struct {
	Status    string  `json:"status"`
	StartedAt int64   `json:"startedAt,omitempty"`
	StoppedAt int64   `json:"stoppedAt,omitempty"`
	ExpiresAt int64   `json:"expiresAt,omitempty"`
	VCPUs     float64 `json:"vcpus"`
	MemoryMB  int64   `json:"memoryMB"`
	Cwd       string  `json:"cwd"`
	// Usage is what the session used, recorded when this API stopped it.
	Usage *SessionUsage `json:"usage,omitempty"`
}

// SessionUsage is a session's usage as the SDK reports it: CPU time the
// sandbox's processes used (cgroup) and bytes through its network
// interface, from paddock's metering.
type SessionUsage struct {
	ActiveCPUMs  int64  `json:"activeCpuMs"`
	IngressBytes uint64 `json:"ingressBytes"` // into the sandbox
	EgressBytes  uint64 `json:"egressBytes"`  // out of it
}

// SnapshotRecord is a snapshot taken through this API; its size and
// expiry come from paddock's snapshot store.
type SnapshotRecord struct {
	Scope
	ID             string `json:"id"`
	SandboxName    string `json:"sandboxName"`
	SourceSession  string `json:"sourceSession"`
	ParentID       string `json:"parentId,omitempty"`
	CreationMethod string `json:"creationMethod"` // automatic or manual
	CreatedAt      int64  `json:"createdAt"`
}

// current returns the current session, if the record has one.
func (r *Record) current() *SessionRecord {
	if len(r.Sessions) == 0 {
		return nil
	}
	return &r.Sessions[len(r.Sessions)-1]
}

func (r *Record) session(id string) *SessionRecord {
	for i := range r.Sessions {
		if r.Sessions[i].ID == id {
			return &r.Sessions[i]
		}
	}
	return nil
}

// maxSessions bounds the sessions a record keeps, so that a sandbox
// resumed for years stays one bounded record: the oldest go first (their
// paddock sandboxes went when they ended; their snapshots are records of
// their own).
const maxSessions = 100

// addSession appends s as the current session.
func (r *Record) addSession(s SessionRecord) {
	r.Sessions = append(r.Sessions, s)
	if n := len(r.Sessions) - maxSessions; n > 0 {
		r.Sessions = slices.Clone(r.Sessions[n:])
	}
}

func (r *Record) sessionIDs() []string {
	out := make([]string, 0, len(r.Sessions))
	for _, s := range r.Sessions {
		out = append(out, s.ID)
	}
	return out
}

var (
	errSandboxNotFound  = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox not found")
	errSnapshotNotFound = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "snapshot not found")
	errSessionNotFound  = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "session not found")
)

func errSandboxExists(name string) error {
	return sandbox.Errorf(sandbox.ErrConflict, "sandbox_exists", "a sandbox named %q already exists in this project", name)
}

// isStale reports a save that lost to another writer.
func isStale(err error) bool {
	return errors.Is(err, sandbox.ErrConflict) && sandbox.CodeOf(err) == "stale_version"
}

// recordDoc is a Record's part that the store keeps opaque (its Data):
// the rest are the store record's own fields.
type recordDoc struct {
	Persistent        bool            `json:"persistent,omitempty"`
	Config            SandboxConfig   `json:"config"`
	CurrentSnapshotID string          `json:"currentSnapshotId,omitempty"`
	Sessions          []SessionRecord `json:"sessions"`
}

func msTime(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func (r *Record) stored() (store.VercelSandbox, error) {
	data, err := json.Marshal(recordDoc{Persistent: r.Persistent, Config: r.Config, CurrentSnapshotID: r.CurrentSnapshotID, Sessions: r.Sessions})
	if err != nil {
		return store.VercelSandbox{}, fmt.Errorf("encode sandbox %s: %w", r.Name, err)
	}
	return store.VercelSandbox{TeamID: r.Team, Project: r.Project, Name: r.Name, API: r.API, SessionIDs: r.sessionIDs(),
		Data: data, Version: r.Version, CreatedAt: msTime(r.CreatedAt), UpdatedAt: msTime(r.UpdatedAt)}, nil
}

func recordOf(v store.VercelSandbox) (Record, error) {
	var doc recordDoc
	if err := json.Unmarshal(v.Data, &doc); err != nil {
		return Record{}, fmt.Errorf("decode sandbox %s: %w", v.Name, err)
	}
	return Record{Scope: Scope{Team: v.TeamID, Project: v.Project}, Version: v.Version, Name: v.Name, API: v.API,
		Persistent: doc.Persistent, Config: doc.Config, CreatedAt: ms(v.CreatedAt), UpdatedAt: ms(v.UpdatedAt),
		CurrentSnapshotID: doc.CurrentSnapshotID, Sessions: doc.Sessions}, nil
}

func (sr SnapshotRecord) stored() store.VercelSnapshot {
	return store.VercelSnapshot{ID: sr.ID, TeamID: sr.Team, Project: sr.Project, SandboxName: sr.SandboxName,
		SourceSession: sr.SourceSession, ParentID: sr.ParentID, CreationMethod: sr.CreationMethod, CreatedAt: msTime(sr.CreatedAt)}
}

func snapshotRecordOf(v store.VercelSnapshot) SnapshotRecord {
	return SnapshotRecord{Scope: Scope{Team: v.TeamID, Project: v.Project}, ID: v.ID, SandboxName: v.SandboxName,
		SourceSession: v.SourceSession, ParentID: v.ParentID, CreationMethod: v.CreationMethod, CreatedAt: ms(v.CreatedAt)}
}

// notFound turns the store's not-found into this API's err.
func notFound(err, as error) error {
	if errors.Is(err, sandbox.ErrNotFound) {
		return as
	}
	return err
}

// get returns the sandbox named name in scope.
func (s *Store) get(ctx context.Context, scope Scope, name string) (Record, error) {
	v, err := s.db.GetVercelSandbox(ctx, scope.Team, scope.Project, name)
	if err != nil {
		return Record{}, notFound(err, errSandboxNotFound)
	}
	return recordOf(v)
}

// bySession returns the team's record one of whose sessions has id sid.
func (s *Store) bySession(ctx context.Context, team, sid string) (Record, error) {
	v, err := s.db.GetVercelSandboxBySession(ctx, team, sid)
	if err != nil {
		return Record{}, notFound(err, errSessionNotFound)
	}
	return recordOf(v)
}

// create saves a new record; a name taken meanwhile is errSandboxExists.
func (s *Store) create(ctx context.Context, rec *Record) error {
	rec.Version = 1
	rec.UpdatedAt = rec.CreatedAt
	v, err := rec.stored()
	if err != nil {
		return err
	}
	if err := s.db.CreateVercelSandbox(ctx, v); err != nil {
		if errors.Is(err, sandbox.ErrConflict) {
			return errSandboxExists(rec.Name)
		}
		return err
	}
	return nil
}

// update saves rec from its Version and moves it to the new one.
func (s *Store) update(ctx context.Context, rec *Record) error {
	v, err := rec.stored()
	if err != nil {
		return err
	}
	got, err := s.db.UpdateVercelSandbox(ctx, v)
	if err != nil {
		return notFound(err, errSandboxNotFound)
	}
	rec.Version, rec.UpdatedAt = got.Version, ms(got.UpdatedAt)
	return nil
}

// remove deletes rec unless it moved past its Version.
func (s *Store) remove(ctx context.Context, rec Record) error {
	return notFound(s.db.DeleteVercelSandbox(ctx, rec.Team, rec.Project, rec.Name, rec.Version), errSandboxNotFound)
}

// eachSandbox calls fn with every record of scope (every project of the
// team when scope.Project is empty) made through api, oldest first, a
// page at a time.
func (s *Store) eachSandbox(ctx context.Context, scope Scope, api int, fn func(Record) error) error {
	f := store.VercelSandboxFilter{TeamID: scope.Team, Project: scope.Project, API: api}
	for cursor := ""; ; {
		page, next, err := s.db.ListVercelSandboxes(ctx, f, store.Page{Cursor: cursor, Limit: store.MaxPageLimit})
		if err != nil {
			return err
		}
		for _, v := range page {
			rec, err := recordOf(v)
			if err != nil {
				return err
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

func (s *Store) putSnapshot(ctx context.Context, sr SnapshotRecord) error {
	return s.db.CreateVercelSnapshot(ctx, sr.stored())
}

// getSnapshot returns the team's record of snapshot id.
func (s *Store) getSnapshot(ctx context.Context, team, id string) (SnapshotRecord, error) {
	v, err := s.db.GetVercelSnapshot(ctx, team, id)
	if err != nil {
		return SnapshotRecord{}, notFound(err, errSnapshotNotFound)
	}
	return snapshotRecordOf(v), nil
}

// deleteSnapshot forgets the team's record of snapshot id; absent is not
// an error (a snapshot paddock took outside this API has none).
func (s *Store) deleteSnapshot(ctx context.Context, team, id string) error {
	if err := s.db.DeleteVercelSnapshot(ctx, team, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return err
	}
	return nil
}

// eachSnapshot calls fn with every snapshot record of scope (and of the
// sandbox named sandboxName, when set), oldest first.
func (s *Store) eachSnapshot(ctx context.Context, scope Scope, sandboxName string, fn func(SnapshotRecord) error) error {
	f := store.VercelSnapshotFilter{TeamID: scope.Team, Project: scope.Project, SandboxName: sandboxName}
	for cursor := ""; ; {
		page, next, err := s.db.ListVercelSnapshots(ctx, f, store.Page{Cursor: cursor, Limit: store.MaxPageLimit})
		if err != nil {
			return err
		}
		for _, v := range page {
			if err := fn(snapshotRecordOf(v)); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

// ---- the import of state.json ----

// stateFile is where an older paddock kept this layer's records, below
// its data directory.
const stateFile = "compat-vercel/state.json"

// importedSuffix names state.json once it is imported.
const importedSuffix = ".imported"

// fileState is state.json's content.
type fileState struct {
	Sandboxes []Record         `json:"sandboxes"`
	Snapshots []SnapshotRecord `json:"snapshots"`
}

// importFileState moves the records an older paddock kept in
// dataDir/compat-vercel/state.json into the store, then renames the file
// state.json.imported so that they are not imported again (a sandbox
// deleted later would come back). A crash between the saves and the
// rename imports the file again on the next start: records already in the
// store are kept as they are. A record the store refuses (one without a
// team, from before teams) is logged and left in the renamed file.
func importFileState(ctx context.Context, dataDir string, to *Store, log *slog.Logger) (int, error) {
	path := filepath.Join(dataDir, filepath.FromSlash(stateFile))
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("vercel compat: import %s: %w", path, err)
	}
	var st fileState
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("vercel compat: import %s: %w", path, err)
	}
	n := 0
	skip := func(what, name, team string, err error) {
		log.Warn("vercel compat: record not imported", "record", what, "name", name, "team", team, "err", err)
	}
	for _, rec := range st.Sandboxes {
		rec.Version = 0
		v, err := rec.stored()
		if err == nil {
			err = to.db.CreateVercelSandbox(ctx, v)
		}
		switch {
		case err == nil:
			n++
		case errors.Is(err, sandbox.ErrConflict):
			// Imported by a start that crashed before the rename.
		case errors.Is(err, sandbox.ErrInvalid):
			skip("sandbox", rec.Name, rec.Team, err)
		default:
			return n, fmt.Errorf("vercel compat: import sandbox %s: %w", rec.Name, err)
		}
	}
	for _, sr := range st.Snapshots {
		switch err := to.db.CreateVercelSnapshot(ctx, sr.stored()); {
		case err == nil:
			n++
		case errors.Is(err, sandbox.ErrConflict):
		case errors.Is(err, sandbox.ErrInvalid):
			skip("snapshot", sr.ID, sr.Team, err)
		default:
			return n, fmt.Errorf("vercel compat: import snapshot %s: %w", sr.ID, err)
		}
	}
	dst := path + importedSuffix
	if _, err := os.Stat(dst); err == nil {
		// An earlier import's leftovers: keep both.
		dst += "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(len(st.Sandboxes))
	}
	if err := os.Rename(path, dst); err != nil {
		return n, fmt.Errorf("vercel compat: import %s: %w", path, err)
	}
	_ = atomicfile.SyncDir(filepath.Dir(path)) // the rename durable; not every filesystem supports it
	log.Info("vercel compat: imported records from state.json", "count", n, "from", path, "to", dst)
	return n, nil
}
