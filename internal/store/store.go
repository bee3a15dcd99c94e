// Package store is paddock's database: teams, users, API tokens, projects,
// activations, sandbox records, command history, usage, events and the
// records of the Vercel and E2B compatibility layers. Store is
// the one interface; sqlite/ (embedded, the default) and mongo/ (production,
// several control-plane replicas) implement it, and storetest/ is the
// conformance suite both pass.
//
// Concurrency is optimistic everywhere: records that change carry a Version,
// an update names the version it read and fails with ErrConflict if another
// writer got there first. MongoDB without transactions (and FerretDB, which
// the tests use) supports exactly that through findOneAndUpdate, so the same
// control-plane code is right on both.
//
// Errors wrap internal/sandbox's kinds (ErrNotFound, ErrConflict, ErrInvalid)
// so that they map to HTTP statuses in the one place that does it. Codes:
// "<what>_not_found" (NotFound), "<what>_exists" for a duplicate ID or
// unique key (Exists), "stale_version" for a lost optimistic update
// (Stale), "invalid_cursor" and "invalid_record" (ErrInvalid).
//
// Times are kept in UTC at millisecond precision (TimePrecision): what a
// store returns equals Time(t) of what it was given, exactly (comparable
// with ==, no monotonic reading, zero stays zero). Records are stored as
// given: the store checks no reference between them (a project's TeamID
// need not name a stored team); the control plane does.
//
// Create* methods store a zero CreatedAt (StartedAt, Time) as the current
// time, and a zero Version as 1: a record just created has Version 1
// unless the caller said otherwise.
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Store is everything the control plane keeps. Every method is safe for
// concurrent use. Lists return oldest first unless they say otherwise,
// and an empty (non-nil) slice when nothing matches; a page's NextCursor
// is "" on the last page.
type Store interface {
	// Close releases the database; the store is unusable after.
	Close() error

	CreateTeam(ctx context.Context, t Team) error // ErrConflict if the ID or Name exists
	GetTeam(ctx context.Context, id string) (Team, error)
	ListTeams(ctx context.Context) ([]Team, error)

	// CreateUser: ErrConflict if the ID exists, or if Subject is set and
	// (Issuer, Subject) exists. Users without a Subject have no OIDC identity.
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id string) (User, error)
	// GetUserBySubject finds the user an OIDC token names.
	GetUserBySubject(ctx context.Context, issuer, subject string) (User, error)
	ListUsers(ctx context.Context, teamID string) ([]User, error) // teamID "" = every team
	// DeleteUser removes a user (its OIDC identity is free again);
	// ErrNotFound if unknown. Its tokens are the caller's to delete.
	DeleteUser(ctx context.Context, id string) error

	CreateToken(ctx context.Context, t Token) error // ErrConflict if the ID or Hash exists
	// GetTokenByHash finds a token by the SHA-256 of its secret; the
	// caller checks ExpiresAt.
	GetTokenByHash(ctx context.Context, hash []byte) (Token, error)
	ListTokens(ctx context.Context, teamID string) ([]Token, error) // teamID "" = every team
	DeleteToken(ctx context.Context, id string) error               // ErrNotFound if unknown

	CreateProject(ctx context.Context, p Project) error // ErrConflict if the ID or (TeamID, Name) exists
	// GetProject returns a project; teamID "" skips the ownership check
	// (internal callers), else another team's project is ErrNotFound.
	GetProject(ctx context.Context, teamID, id string) (Project, error)
	ListProjects(ctx context.Context, teamID string, page Page) ([]Project, string, error)
	// UpdateProject replaces the project whose ID and Version match p's and
	// returns it as stored: Version+1 and UpdatedAt now. TeamID and
	// CreatedAt are kept from the stored record; a non-empty p.TeamID must
	// match it (else ErrNotFound). ErrConflict "stale_version" if the
	// version moved, "project_exists" if the new Name is taken,
	// ErrNotFound if the project is gone.
	UpdateProject(ctx context.Context, p Project) (Project, error)
	DeleteProject(ctx context.Context, teamID, id string) error // ErrNotFound if unknown or another team's

	CreateActivation(ctx context.Context, a Activation) error // ErrConflict if the ID exists
	GetActivation(ctx context.Context, id string) (Activation, error)
	// UpdateActivation is optimistic like UpdateProject; ProjectID, TeamID
	// and CreatedAt are kept from the stored record.
	UpdateActivation(ctx context.Context, a Activation) (Activation, error)
	ListActivations(ctx context.Context, f ActivationFilter, page Page) ([]Activation, string, error)

	// PutSandbox inserts or replaces a sandbox record (the node's state).
	// Its times are kept like every other (see NormalizeSandbox).
	PutSandbox(ctx context.Context, r SandboxRecord) error
	GetSandbox(ctx context.Context, id string) (SandboxRecord, error)
	DeleteSandbox(ctx context.Context, id string) error // unknown id is not an error
	// MoveSandbox gives id's record to node to, only if node from still
	// has it, and returns it as moved: ErrConflict "sandbox_moved" if
	// another node has it, ErrNotFound if it is gone. It is one
	// conditional write, so of several moves of one record at once exactly
	// one wins, and a write of the record by from meanwhile is never
	// overwritten by a move that read it before.
	MoveSandbox(ctx context.Context, id, from, to string) (SandboxRecord, error)
	// ListSandboxes returns the sandboxes of one node ("" = every node).
	ListSandboxes(ctx context.Context, node string) ([]SandboxRecord, error)

	// AddCommand records a started command (ErrConflict if its
	// (SandboxID, ID) exists); FinishCommand sets its exit (ErrNotFound
	// "command_not_found" if unknown). Pages are ordered by StartedAt.
	AddCommand(ctx context.Context, c Command) error
	FinishCommand(ctx context.Context, sandboxID, id string, exitCode int, finishedAt time.Time) error
	ListCommands(ctx context.Context, sandboxID string, page Page) ([]Command, string, error)
	// TrimCommands deletes a sandbox's commands older than its newest
	// keep (by StartedAt, then ID); PruneCommands deletes every command
	// started before t. Both return how many they deleted: history is
	// bounded per sandbox and in time, so no tenant grows the store
	// without end.
	TrimCommands(ctx context.Context, sandboxID string, keep int) (int, error)
	PruneCommands(ctx context.Context, before time.Time) (int, error)

	// AddUsage stores a sample (ErrConflict if the ID exists, so a retried
	// write is harmless). Byte counts above math.MaxInt64 are ErrInvalid.
	AddUsage(ctx context.Context, u Usage) error
	// ListUsage returns the matching samples ordered by Start, then ID.
	ListUsage(ctx context.Context, f UsageFilter) ([]Usage, error)
	// PruneUsage deletes the samples that started before t and returns how
	// many it deleted (internal/metering rolls them up first).
	PruneUsage(ctx context.Context, before time.Time) (int, error)
	// PutUsageRollup inserts or replaces a roll-up (a Usage summing the
	// samples of one team, project and hour) by its ID; ListUsageRollups
	// selects roll-ups as ListUsage selects samples. Roll-ups live apart
	// from samples: PruneUsage never touches them.
	PutUsageRollup(ctx context.Context, u Usage) error
	ListUsageRollups(ctx context.Context, f UsageFilter) ([]Usage, error)

	// PutBudget stores a team's budget: b.Version 0 creates it
	// (ErrConflict "budget_exists" if the team has one), else it replaces
	// the budget whose Version is b.Version (ErrConflict "stale_version" if
	// it moved, ErrNotFound if it is gone). It returns the budget as
	// stored (Version+1, UpdatedAt now).
	PutBudget(ctx context.Context, b Budget) (Budget, error)
	GetBudget(ctx context.Context, teamID string) (Budget, error) // ErrNotFound "budget_not_found"
	ListBudgets(ctx context.Context) ([]Budget, error)            // ordered by TeamID
	DeleteBudget(ctx context.Context, teamID string) error        // ErrNotFound if unknown

	// AppendEvent stores e and returns it with its Seq (and Time, if it was
	// zero): strictly increasing across the whole store, so a feed resumes
	// after the last Seq it saw. In both stores an event becomes visible at
	// the moment its Seq is taken, so no event can appear later with a
	// smaller Seq than one a reader has already seen.
	AppendEvent(ctx context.Context, e Event) (Event, error)
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)

	// The Vercel compatibility layer's sandboxes (see VercelSandbox). A
	// sandbox is named by (teamID, project, name); every read takes the
	// team, and another team's record is ErrNotFound
	// "vercel_sandbox_not_found".
	//
	// CreateVercelSandbox: ErrConflict "vercel_sandbox_exists" if the name
	// is taken in its team and project.
	CreateVercelSandbox(ctx context.Context, v VercelSandbox) error
	GetVercelSandbox(ctx context.Context, teamID, project, name string) (VercelSandbox, error)
	// GetVercelSandboxBySession finds the team's sandbox one of whose
	// SessionIDs is sessionID.
	GetVercelSandboxBySession(ctx context.Context, teamID, sessionID string) (VercelSandbox, error)
	// UpdateVercelSandbox is optimistic like UpdateProject: it replaces
	// SessionIDs and Data of the sandbox named by v's (TeamID, Project,
	// Name) whose Version is v's, and returns it as stored (Version+1,
	// UpdatedAt now; API and CreatedAt kept).
	UpdateVercelSandbox(ctx context.Context, v VercelSandbox) (VercelSandbox, error)
	// DeleteVercelSandbox deletes the sandbox if its Version is version:
	// ErrConflict "stale_version" if it moved, ErrNotFound if it is gone.
	DeleteVercelSandbox(ctx context.Context, teamID, project, name string, version int64) error
	// ListVercelSandboxes pages through one team's sandboxes by
	// (CreatedAt, name key).
	ListVercelSandboxes(ctx context.Context, f VercelSandboxFilter, page Page) ([]VercelSandbox, string, error)

	// The snapshots taken through the Vercel layer (see VercelSnapshot),
	// scoped by team like its sandboxes. CreateVercelSnapshot: ErrConflict
	// "vercel_snapshot_exists" if the ID exists; DeleteVercelSnapshot:
	// ErrNotFound if unknown or another team's.
	CreateVercelSnapshot(ctx context.Context, v VercelSnapshot) error
	GetVercelSnapshot(ctx context.Context, teamID, id string) (VercelSnapshot, error)
	DeleteVercelSnapshot(ctx context.Context, teamID, id string) error
	// ListVercelSnapshots pages through one team's snapshots by (CreatedAt, ID).
	ListVercelSnapshots(ctx context.Context, f VercelSnapshotFilter, page Page) ([]VercelSnapshot, string, error)

	// A team's admission record (see Admission): one per team, changed
	// only by optimistic updates, so replicas sharing the store agree on a
	// team's limits, what it holds and who waits. CreateAdmission:
	// ErrConflict "admission_exists"; GetAdmission: ErrNotFound
	// "admission_not_found"; UpdateAdmission is optimistic like
	// UpdateProject (Data replaced, Version+1, UpdatedAt now).
	CreateAdmission(ctx context.Context, a Admission) error
	GetAdmission(ctx context.Context, teamID string) (Admission, error)
	UpdateAdmission(ctx context.Context, a Admission) (Admission, error)
	// ListAdmissions returns every team's record, by TeamID.
	ListAdmissions(ctx context.Context) ([]Admission, error)
	// The slots of sandboxes that run (see AdmissionHold): one record per
	// sandbox beside its team's record, so that a create or a sandbox's
	// end changes a fixed number of records whatever the team holds.
	// CreateAdmissionHold: ErrConflict "admission_hold_exists";
	// DeleteAdmissionHold returns the record it deleted, or ErrNotFound
	// "admission_hold_not_found": of two deletes of one record, one wins.
	CreateAdmissionHold(ctx context.Context, h AdmissionHold) error
	DeleteAdmissionHold(ctx context.Context, sandboxID string) (AdmissionHold, error)
	// ListAdmissionHolds returns a team's hold records, by SandboxID.
	ListAdmissionHolds(ctx context.Context, teamID string) ([]AdmissionHold, error)
	// The E2B compatibility layer's sandboxes (see E2BSandbox), scoped by
	// team: another team's record is ErrNotFound "e2b_sandbox_not_found".
	// CreateE2BSandbox: ErrConflict "e2b_sandbox_exists" if the ID exists.
	CreateE2BSandbox(ctx context.Context, v E2BSandbox) error
	GetE2BSandbox(ctx context.Context, teamID, id string) (E2BSandbox, error)
	DeleteE2BSandbox(ctx context.Context, teamID, id string) error
	// ListE2BSandboxes pages through one team's records by (CreatedAt, ID).
	ListE2BSandboxes(ctx context.Context, f E2BSandboxFilter, page Page) ([]E2BSandbox, string, error)
	// Webhooks and their deliveries (webhook.go).
	Webhooks
	// Leases for work that runs once among replicas (lease.go).
	Leases
	// The replica directory: where each replica is reached (replica.go).
	Replicas
	// The image directory: every scope's image refs (imageref.go).
	ImageRefs
	// The snapshot directory: every team's snapshots (snapshotref.go).
	SnapshotRefs
}

// TimePrecision is the resolution at which every store keeps times.
const TimePrecision = time.Millisecond

// Time returns t as a store gives it back: in UTC, truncated to
// TimePrecision, without a monotonic reading. The zero time stays zero.
func Time(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// NormalizeSandbox returns sb with its times as a store gives them back.
func NormalizeSandbox(sb sandbox.Sandbox) sandbox.Sandbox {
	sb.CreatedAt = Time(sb.CreatedAt)
	sb.StartedAt = Time(sb.StartedAt)
	sb.StoppedAt = Time(sb.StoppedAt)
	sb.ExpiresAt = Time(sb.ExpiresAt)
	sb.LastActivityAt = Time(sb.LastActivityAt)
	return sb
}

// Page selects a page of a list. Pages are keyed on (creation time, ID),
// so inserts between two pages never duplicate or skip a record that
// existed before the first.
type Page struct {
	Cursor string // opaque, from a previous page; "" starts at the oldest. A malformed one is ErrInvalid "invalid_cursor"
	Limit  int    // default 50, max 500 (larger values are clamped)
}

// Page sizes.
const (
	DefaultPageLimit  = 50
	MaxPageLimit      = 500
	DefaultEventLimit = 100
	MaxEventLimit     = 1000
)

// Roles of a user or token within its team.
const (
	RoleAdmin  = "admin"  // everything in the team, and the host's admin API
	RoleMember = "member" // the team's projects and sandboxes
)

// Team owns projects, sandboxes and tokens.
type Team struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// User is a person in one team; OIDC sign-ins find it by (Issuer, Subject).
type User struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	Issuer    string    `json:"issuer,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Email     string    `json:"email,omitempty"`
	Name      string    `json:"name,omitempty"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
}

// Token is an API token at rest: its hash, never its secret.
type Token struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	UserID    string    `json:"userId,omitempty"`
	Name      string    `json:"name"`
	Hash      []byte    `json:"hash"` // SHA-256 of the secret
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// Project says where an app's code comes from and how to run it. Spec is
// the control plane's own document (internal/control defines it); the
// store keeps it opaque so that a new field needs no migration.
type Project struct {
	ID     string          `json:"id"`
	TeamID string          `json:"teamId"`
	Name   string          `json:"name"`
	Spec   json.RawMessage `json:"spec"`
	// ActiveActivation is the live activation, if any. Setting it with an
	// optimistic update is what makes concurrent activations of one
	// project share one sandbox, across replicas.
	ActiveActivation string `json:"activeActivation,omitempty"`
	// StateRef names the project's saved state (persistent paths), "" if none.
	StateRef  string    `json:"stateRef,omitempty"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Activation is one run of a project's app in a sandbox.
type Activation struct {
	ID        string `json:"id"`
	ProjectID string `json:"projectId"`
	TeamID    string `json:"teamId"`
	SandboxID string `json:"sandboxId,omitempty"`
	// ImageDigest is the manifest digest of the image the activation's
	// sandbox runs (empty for the host image): what ran, even after the
	// project's ref moved.
	ImageDigest string `json:"imageDigest,omitempty"`
	// State is the control plane's (queued, provisioning, restoring,
	// installing, starting, ready, deactivating, stopped, failed).
	State string `json:"state"`
	// Error and LogTail say why a failed activation failed.
	Error     string    `json:"error,omitempty"`
	LogTail   string    `json:"logTail,omitempty"`
	EndReason string    `json:"endReason,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	ReadyAt   time.Time `json:"readyAt,omitzero"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	// LastActivityAt is the last proxied request or heartbeat; idle
	// timeouts count from it. Written at most every few seconds.
	LastActivityAt time.Time `json:"lastActivityAt,omitzero"`
	// Replica names the paddock replica that drives the activation (its
	// node name): when that replica's liveness lease lapses, the replica
	// that holds the orphan sweep ends what it left (internal/control).
	Replica string `json:"-"` // the deployment's, not the tenant's: kept out of the API
	Version int64  `json:"version"`
}

// ActivationFilter selects activations; zero fields match everything.
type ActivationFilter struct {
	TeamID    string
	ProjectID string
	States    []string
}

// SandboxRecord is a sandbox as one node keeps it.
type SandboxRecord struct {
	Node    string          `json:"node"`
	Sandbox sandbox.Sandbox `json:"sandbox"`
}

// Command is one command's history entry, kept after its sandbox is gone.
type Command struct {
	ID        string   `json:"id"`
	SandboxID string   `json:"sandboxId"`
	TeamID    string   `json:"teamId,omitempty"`
	Cmd       string   `json:"cmd"`
	Args      []string `json:"args,omitempty"`
	Cwd       string   `json:"cwd,omitempty"`
	Sudo      bool     `json:"sudo,omitempty"`
	// Tag is the name the command was started with, if any.
	Tag string `json:"tag,omitempty"`
	// PTYRows and PTYCols are the terminal's size when the command was
	// recorded, both zero for a command not started on a terminal.
	PTYRows    uint16    `json:"ptyRows,omitempty"`
	PTYCols    uint16    `json:"ptyCols,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   *int      `json:"exitCode,omitempty"`
}

// Usage is one metering sample of a sandbox over [Start, End), a team's
// storage over [Start, End) (SandboxID ""), or a roll-up of samples (see
// PutUsageRollup). internal/metering defines what each field counts.
type Usage struct {
	ID            string    `json:"id"`
	TeamID        string    `json:"teamId"`
	ProjectID     string    `json:"projectId,omitempty"`
	SandboxID     string    `json:"sandboxId"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	CPUSeconds    float64   `json:"cpuSeconds"`
	MemoryMBHours float64   `json:"memoryMBHours"` // provisioned
	NetRxBytes    uint64    `json:"netRxBytes"`
	NetTxBytes    uint64    `json:"netTxBytes"`
	// MemoryPeakBytes is the highest memory use seen (a maximum, not a sum).
	MemoryPeakBytes uint64 `json:"memoryPeakBytes,omitempty"`
	// Creations counts sandboxes that started in the sample.
	Creations int64 `json:"creations,omitempty"`
	// StorageGBHours is snapshots' and volumes' bytes × hours held.
	StorageGBHours float64 `json:"storageGBHours,omitempty"`
	// The sandbox's cumulative counters at End, so that metering continues
	// from the last recorded point after a restart; zero in roll-ups.
	EndCPUSeconds float64 `json:"endCpuSeconds,omitempty"`
	EndNetRxBytes uint64  `json:"endNetRxBytes,omitempty"`
	EndNetTxBytes uint64  `json:"endNetTxBytes,omitempty"`
}

// Budget is a team's monthly spending cap (internal/metering).
type Budget struct {
	TeamID string `json:"teamId"`
	// MonthlyLimit is in the price table's currency per UTC calendar month.
	MonthlyLimit float64 `json:"monthlyLimit"`
	// Thresholds are percentages of the limit that emit a warning event
	// once a month each (100 = the hard cap).
	Thresholds []int `json:"thresholds,omitempty"`
	// HardCap refuses new work and stops the team's running sandboxes once
	// the month's cost reaches the limit.
	HardCap bool `json:"hardCap"`
	// Month ("2026-12") and Notified (the highest threshold warned of in
	// it) keep each warning to once a month, across replicas.
	Month     string    `json:"month,omitempty"`
	Notified  int       `json:"notified,omitempty"`
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// UsageFilter selects usage samples overlapping [Since, Until): Start <
// Until and End > Since. Zero fields match everything; a zero Since or
// Until leaves that side open.
type UsageFilter struct {
	TeamID    string
	ProjectID string
	SandboxID string
	Since     time.Time
	Until     time.Time
}

// Event is one lifecycle event (activation progress, sandbox state
// changes, deactivations) for feeds and the dashboard.
type Event struct {
	Seq          int64             `json:"seq"`
	Time         time.Time         `json:"time"`
	TeamID       string            `json:"teamId,omitempty"`
	ProjectID    string            `json:"projectId,omitempty"`
	ActivationID string            `json:"activationId,omitempty"`
	SandboxID    string            `json:"sandboxId,omitempty"`
	Type         string            `json:"type"`
	Message      string            `json:"message,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
}

// EventFilter selects events with Seq > AfterSeq, oldest first.
type EventFilter struct {
	TeamID       string
	ProjectID    string
	ActivationID string
	AfterSeq     int64
	Limit        int // default 100, max 1000
}

// MaxVercelData bounds a VercelSandbox's Data: the layer bounds what it
// keeps far below this; the store refuses a larger document (ErrInvalid)
// rather than grow without limit.
const MaxVercelData = 1 << 20

// VercelSandbox is a sandbox of the Vercel compatibility layer
// (internal/server/compat/vercel): a name, unique within a team and a
// Vercel project id, with the layer's own document. Its sessions (one
// paddock sandbox each) live in that document; SessionIDs lists them, so
// that a request naming a session finds its sandbox.
type VercelSandbox struct {
	TeamID string `json:"teamId"`
	// Project is a Vercel project id: a namespace within the team, not a
	// paddock project.
	Project    string   `json:"project"`
	Name       string   `json:"name"`
	API        int      `json:"api"` // the Vercel API generation it was made through
	SessionIDs []string `json:"sessionIds,omitempty"`
	// Data is the layer's document (config, sessions, current snapshot),
	// opaque to the store like a project's Spec: a new field needs no
	// migration. Valid JSON of at most MaxVercelData bytes.
	Data      json.RawMessage `json:"data"`
	Version   int64           `json:"version"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// VercelSandboxFilter selects one team's Vercel sandboxes.
type VercelSandboxFilter struct {
	TeamID  string // required: "" matches nothing
	Project string // "" = every project of the team
	API     int    // 0 = every generation
}

// VercelSnapshot is a snapshot taken through the Vercel layer: what
// Vercel's API says of it beyond what paddock's snapshot store keeps.
type VercelSnapshot struct {
	ID             string    `json:"id"` // the paddock snapshot's id
	TeamID         string    `json:"teamId"`
	Project        string    `json:"project"`
	SandboxName    string    `json:"sandboxName"`
	SourceSession  string    `json:"sourceSession"`
	ParentID       string    `json:"parentId,omitempty"`
	CreationMethod string    `json:"creationMethod"` // automatic or manual
	CreatedAt      time.Time `json:"createdAt"`
}

// VercelSnapshotFilter selects one team's Vercel snapshots.
type VercelSnapshotFilter struct {
	TeamID      string // required: "" matches nothing
	Project     string // "" = every project of the team
	SandboxName string // "" = every sandbox
}

// MaxAdmissionData bounds an Admission's Data (internal/admission keeps
// it far below: its queue and the slots of creates under way).
const MaxAdmissionData = 4 << 20

// Admission is one team's admission state: its limits, the totals of its
// sandboxes' slots (their AdmissionHold records), the slots of creates
// under way and the requests that wait, as internal/admission's own
// document (Data), opaque to the store like a project's spec.
type Admission struct {
	TeamID    string          `json:"teamId"`
	Data      json.RawMessage `json:"data"`
	Version   int64           `json:"version"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// AdmissionHold is the slot a sandbox holds in its team's admission
// (internal/admission): what it counts against the team's limits until it
// ends. Its team's Admission record keeps the totals of these records.
type AdmissionHold struct {
	SandboxID string    `json:"sandboxId"`
	TeamID    string    `json:"teamId"`
	HoldID    string    `json:"holdId"`  // the admitted request's id
	Replica   string    `json:"replica"` // the replica that admitted it
	VCPUs     float64   `json:"vcpus"`
	MemoryMB  int64     `json:"memoryMb"`
	CreatedAt time.Time `json:"createdAt"` // when it was bound to the sandbox
}

// MaxE2BData bounds an E2BSandbox's Data (the layer's metadata is far
// smaller).
const MaxE2BData = 256 << 10

// E2BSandbox is what the E2B compatibility layer
// (internal/server/compat/e2b) keeps of a sandbox made through it, beside
// the paddock sandbox of the same ID: the template it was asked for and
// its metadata, which E2B's get and list show and filter on.
type E2BSandbox struct {
	ID     string `json:"id"` // the paddock sandbox's id
	TeamID string `json:"teamId"`
	// Data is the layer's document, opaque to the store: valid JSON of at
	// most MaxE2BData bytes.
	Data      json.RawMessage `json:"data"`
	CreatedAt time.Time       `json:"createdAt"`
}

// E2BSandboxFilter selects one team's E2B sandboxes.
type E2BSandboxFilter struct {
	TeamID string // required: "" matches nothing
}

// NotFound is the error every implementation returns for a missing record;
// what is "team", "user", "token", "project", "activation", "sandbox",
// "command", "budget", "vercel_sandbox", "vercel_snapshot", "admission",
// "admission_hold", "e2b_sandbox", "lease", "replica", "image_ref" or
// "snapshot_ref".
func NotFound(what, id string) error {
	if id == "" {
		return sandbox.Errorf(sandbox.ErrNotFound, what+"_not_found", "%s not found", what)
	}
	return sandbox.Errorf(sandbox.ErrNotFound, what+"_not_found", "%s %s not found", what, id)
}

// Conflict is the error for a duplicate or a lost optimistic update.
func Conflict(code, format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrConflict, code, format, args...)
}

// Exists is the conflict of a create whose ID or unique key is taken.
func Exists(what, id string) error {
	return Conflict(what+"_exists", "%s %s already exists", what, id)
}

// Moved is MoveSandbox's conflict: the record is not from's any more.
func Moved(id, node, from string) error {
	return Conflict("sandbox_moved", "sandbox %s is node %s's, not %s's", id, node, from)
}

// Stale is the conflict of an optimistic update that lost: the record's
// version moved since the caller read it.
func Stale(what, id string) error {
	return Conflict("stale_version", "%s %s was changed by someone else; read it again", what, id)
}

// Invalid is the error for a record a store refuses to keep.
func Invalid(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_record", format, args...)
}
