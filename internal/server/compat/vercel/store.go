package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Store keeps what Vercel's model has and paddock's sandboxes do not: named
// sandboxes with their config, their sessions (one paddock sandbox each)
// and the snapshots taken through this API. It is small on purpose: the
// projects work moves it into paddock's store, keyed the same way.
//
// Records are values: a caller changes its copy and puts it back. Callers
// serialise changes to one sandbox themselves (the handler's per-name lock).
type Store interface {
	// GetSandbox returns the sandbox named name in scope, or an error
	// wrapping sandbox.ErrNotFound.
	GetSandbox(ctx context.Context, scope Scope, name string) (Record, error)
	// PutSandbox creates or replaces a sandbox record.
	PutSandbox(ctx context.Context, rec Record) error
	// DeleteSandbox forgets a sandbox record; absent is not an error.
	DeleteSandbox(ctx context.Context, scope Scope, name string) error
	// ListSandboxes returns every record of scope's project (all projects
	// of the team when scope.Project is empty), in no particular order.
	ListSandboxes(ctx context.Context, scope Scope) ([]Record, error)
	// SessionOwner returns the record one of whose sessions has id.
	SessionOwner(ctx context.Context, sessionID string) (Record, error)

	PutSnapshot(ctx context.Context, snap SnapshotRecord) error
	GetSnapshot(ctx context.Context, id string) (SnapshotRecord, error)
	DeleteSnapshot(ctx context.Context, id string) error
	ListSnapshots(ctx context.Context, scope Scope) ([]SnapshotRecord, error)
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

// Record is one sandbox as Vercel's API sees it.
type Record struct {
	Scope
	Name       string        `json:"name"`
	API        int           `json:"api"`
	Persistent bool          `json:"persistent"`
	Config     SandboxConfig `json:"config"`
	CreatedAt  int64         `json:"createdAt"` // epoch ms, as every time here
	UpdatedAt  int64         `json:"updatedAt"`
	// CurrentSnapshotID is what the next session of a persistent sandbox
	// starts from.
	CurrentSnapshotID string `json:"currentSnapshotId,omitempty"`
	// Sessions, oldest first; the last one is the current one.
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

func (r Record) clone() Record {
	data, _ := json.Marshal(r)
	var out Record
	_ = json.Unmarshal(data, &out)
	return out
}

var (
	errSandboxNotFound  = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox not found")
	errSnapshotNotFound = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "snapshot not found")
	errSessionNotFound  = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "session not found")
)

// FileStore keeps the records in one JSON file, DataDir/compat-vercel/state.json,
// rewritten whole and atomically on every change. It suits one host and
// the modest number of named sandboxes one host runs.
type FileStore struct {
	path string

	mu    sync.Mutex // guards state and the file
	state fileState
}

var _ Store = (*FileStore)(nil)

type fileState struct {
	Sandboxes []Record         `json:"sandboxes"`
	Snapshots []SnapshotRecord `json:"snapshots"`
}

// OpenFileStore loads dataDir/compat-vercel/state.json, or starts empty.
func OpenFileStore(dataDir string) (*FileStore, error) {
	s := &FileStore{path: filepath.Join(dataDir, "compat-vercel", "state.json")}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read vercel compat state: %w", err)
	}
	if err := json.Unmarshal(data, &s.state); err != nil {
		return nil, fmt.Errorf("parse vercel compat state %s: %w", s.path, err)
	}
	return s, nil
}

func (s *FileStore) find(scope Scope, name string) int {
	return slices.IndexFunc(s.state.Sandboxes, func(r Record) bool { return r.Scope == scope && r.Name == name })
}

// GetSandbox implements Store.
func (s *FileStore) GetSandbox(_ context.Context, scope Scope, name string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(scope, name)
	if i < 0 {
		return Record{}, errSandboxNotFound
	}
	return s.state.Sandboxes[i].clone(), nil
}

// PutSandbox implements Store.
func (s *FileStore) PutSandbox(_ context.Context, rec Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := fileState{Sandboxes: slices.Clone(s.state.Sandboxes), Snapshots: s.state.Snapshots}
	if i := s.find(rec.Scope, rec.Name); i >= 0 {
		next.Sandboxes[i] = rec.clone()
	} else {
		next.Sandboxes = append(next.Sandboxes, rec.clone())
	}
	return s.commit(next)
}

// DeleteSandbox implements Store.
func (s *FileStore) DeleteSandbox(_ context.Context, scope Scope, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(scope, name)
	if i < 0 {
		return nil
	}
	next := fileState{Sandboxes: slices.Delete(slices.Clone(s.state.Sandboxes), i, i+1), Snapshots: s.state.Snapshots}
	return s.commit(next)
}

// ListSandboxes implements Store.
func (s *FileStore) ListSandboxes(_ context.Context, scope Scope) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, r := range s.state.Sandboxes {
		if scope.holds(r.Scope) {
			out = append(out, r.clone())
		}
	}
	return out, nil
}

// SessionOwner implements Store.
func (s *FileStore) SessionOwner(_ context.Context, sessionID string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.state.Sandboxes {
		if r.session(sessionID) != nil {
			return r.clone(), nil
		}
	}
	return Record{}, errSessionNotFound
}

// PutSnapshot implements Store.
func (s *FileStore) PutSnapshot(_ context.Context, snap SnapshotRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := fileState{Sandboxes: s.state.Sandboxes, Snapshots: slices.Clone(s.state.Snapshots)}
	if i := slices.IndexFunc(next.Snapshots, func(x SnapshotRecord) bool { return x.ID == snap.ID }); i >= 0 {
		next.Snapshots[i] = snap
	} else {
		next.Snapshots = append(next.Snapshots, snap)
	}
	return s.commit(next)
}

// GetSnapshot implements Store.
func (s *FileStore) GetSnapshot(_ context.Context, id string) (SnapshotRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.state.Snapshots {
		if x.ID == id {
			return x, nil
		}
	}
	return SnapshotRecord{}, errSnapshotNotFound
}

// DeleteSnapshot implements Store.
func (s *FileStore) DeleteSnapshot(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.state.Snapshots, func(x SnapshotRecord) bool { return x.ID == id })
	if i < 0 {
		return nil
	}
	next := fileState{Sandboxes: s.state.Sandboxes, Snapshots: slices.Delete(slices.Clone(s.state.Snapshots), i, i+1)}
	return s.commit(next)
}

// ListSnapshots implements Store.
func (s *FileStore) ListSnapshots(_ context.Context, scope Scope) ([]SnapshotRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SnapshotRecord
	for _, x := range s.state.Snapshots {
		if scope.holds(x.Scope) {
			out = append(out, x)
		}
	}
	return out, nil
}

// commit writes next and, once it is on disk, makes it the state. Called
// with mu held.
func (s *FileStore) commit(next fileState) error {
	if err := writeAtomic(s.path, next); err != nil {
		return err
	}
	s.state = next
	return nil
}

// writeAtomic writes v as JSON through a fsynced temp file renamed over
// path, then fsyncs the directory, so a crash leaves the old or the new
// file, never half of one.
func writeAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode vercel compat state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create vercel compat state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("write vercel compat state: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write vercel compat state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write vercel compat state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write vercel compat state: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write vercel compat state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself durable; not every filesystem supports it
		d.Close()
	}
	return nil
}
