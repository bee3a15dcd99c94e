// Package store is paddock's database: teams, users, API tokens, projects,
// activations, sandbox records, command history, usage and events. Store is
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
// so that they map to HTTP statuses in the one place that does it.
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Store is everything the control plane keeps. Every method is safe for
// concurrent use. Lists return oldest first unless they say otherwise; a
// page's NextCursor is "" on the last page.
type Store interface {
	// Close releases the database; the store is unusable after.
	Close() error

	CreateTeam(ctx context.Context, t Team) error // ErrConflict if the ID or Name exists
	GetTeam(ctx context.Context, id string) (Team, error)
	ListTeams(ctx context.Context) ([]Team, error)

	CreateUser(ctx context.Context, u User) error // ErrConflict if the ID or (Issuer, Subject) exists
	GetUser(ctx context.Context, id string) (User, error)
	// GetUserBySubject finds the user an OIDC token names.
	GetUserBySubject(ctx context.Context, issuer, subject string) (User, error)
	ListUsers(ctx context.Context, teamID string) ([]User, error)

	CreateToken(ctx context.Context, t Token) error // ErrConflict if the ID or Hash exists
	// GetTokenByHash finds a token by the SHA-256 of its secret.
	GetTokenByHash(ctx context.Context, hash []byte) (Token, error)
	ListTokens(ctx context.Context, teamID string) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error

	CreateProject(ctx context.Context, p Project) error // ErrConflict if the ID or (TeamID, Name) exists
	// GetProject returns a project; teamID "" skips the ownership check
	// (internal callers), else another team's project is ErrNotFound.
	GetProject(ctx context.Context, teamID, id string) (Project, error)
	ListProjects(ctx context.Context, teamID string, page Page) ([]Project, string, error)
	// UpdateProject replaces the project whose ID and Version match p's and
	// returns it with Version+1 and UpdatedAt set; ErrConflict if the
	// version moved, ErrNotFound if it is gone.
	UpdateProject(ctx context.Context, p Project) (Project, error)
	DeleteProject(ctx context.Context, teamID, id string) error

	CreateActivation(ctx context.Context, a Activation) error
	GetActivation(ctx context.Context, id string) (Activation, error)
	// UpdateActivation is optimistic like UpdateProject.
	UpdateActivation(ctx context.Context, a Activation) (Activation, error)
	ListActivations(ctx context.Context, f ActivationFilter, page Page) ([]Activation, string, error)

	// PutSandbox inserts or replaces a sandbox record (the node's state).
	PutSandbox(ctx context.Context, r SandboxRecord) error
	GetSandbox(ctx context.Context, id string) (SandboxRecord, error)
	DeleteSandbox(ctx context.Context, id string) error // unknown id is not an error
	// ListSandboxes returns the sandboxes of one node ("" = every node).
	ListSandboxes(ctx context.Context, node string) ([]SandboxRecord, error)

	// AddCommand records a started command; FinishCommand sets its exit.
	AddCommand(ctx context.Context, c Command) error
	FinishCommand(ctx context.Context, sandboxID, id string, exitCode int, finishedAt time.Time) error
	ListCommands(ctx context.Context, sandboxID string, page Page) ([]Command, string, error)

	AddUsage(ctx context.Context, u Usage) error
	ListUsage(ctx context.Context, f UsageFilter) ([]Usage, error)

	// AppendEvent stores e and returns it with its Seq: strictly increasing
	// across the whole store, so a feed resumes after the last Seq it saw.
	AppendEvent(ctx context.Context, e Event) (Event, error)
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)
}

// Page selects a page of a list.
type Page struct {
	Cursor string // opaque, from a previous page; "" starts at the oldest
	Limit  int    // default 50, max 500
}

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
	Version        int64     `json:"version"`
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
	ID         string    `json:"id"`
	SandboxID  string    `json:"sandboxId"`
	TeamID     string    `json:"teamId,omitempty"`
	Cmd        string    `json:"cmd"`
	Args       []string  `json:"args,omitempty"`
	Cwd        string    `json:"cwd,omitempty"`
	Sudo       bool      `json:"sudo,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   *int      `json:"exitCode,omitempty"`
}

// Usage is one metering sample of a sandbox over [Start, End).
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
}

// UsageFilter selects usage samples overlapping [Since, Until).
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

// NotFound is the error every implementation returns for a missing record;
// what is "team", "user", "token", "project", "activation" or "sandbox".
func NotFound(what, id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, what+"_not_found", "%s %s not found", what, id)
}

// Conflict is the error for a duplicate or a lost optimistic update.
func Conflict(code, format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrConflict, code, format, args...)
}
