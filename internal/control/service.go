// Package control is paddock's project control plane: projects (an app's
// source, how to install and start it, its secrets and persistent paths),
// activations that run a project's app in a sandbox on demand, and the
// deactivations that stop it again — explicitly, when idle, at its maximum
// lifetime, or when its sandbox goes away — saving the persistent paths so
// the next activation finds them again.
//
// The Service owns every goroutine that drives an activation: a request
// only starts one and returns; Close stops them. Concurrent activations of
// one project share one sandbox through an optimistic update of
// store.Project.ActiveActivation, which holds across replicas sharing the
// store; a singleflight in process spares the store the conflicts.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Config configures a Service.
type Config struct {
	Store     store.Store
	Sandboxes Sandboxes
	// DataDir holds saved state under DataDir/state/<project>/.
	DataDir string
	Logger  *slog.Logger     // default slog.Default()
	Now     func() time.Time // injectable clock; default time.Now
	// Key is the 32-byte AES-GCM key that encrypts project secrets at rest;
	// serve keeps it in <data>/secrets.key (0600).
	Key []byte
	// CheckRuntime refuses a project's runtime the host does not offer
	// (node.Manager.CheckRuntime); nil accepts any, and the activation's
	// create refuses it instead.
	CheckRuntime func(name string) error
	// HealthTimeout bounds the wait for an app's health check (default 2m).
	HealthTimeout time.Duration
	// IdleCheckInterval is how often idle and lifetime limits are checked
	// (default 5s).
	IdleCheckInterval time.Duration
	// StopGrace is how long an app gets between SIGTERM and SIGKILL
	// (default 10s).
	StopGrace time.Duration
	// Admission queues each activation's sandbox within its team's limits
	// and the host's capacity; nil admits every one at once.
	Admission Admission
	// Budget, when set, may refuse a new activation of a team (a budget's
	// hard cap); a live activation is still returned to its callers.
	Budget func(ctx context.Context, teamID string) error
	// Events publishes activation steps to the lifecycle feed and webhooks
	// (internal/events' Bus); nil appends them to Store only.
	Events Publisher

	// Replica names this process among the replicas sharing Store (the
	// daemon's node name); the activations it drives record it, and Start
	// re-adopts only its own (and those of no replica, made before
	// replicas were recorded). "" on one host.
	Replica string
	// Sweep, when set, says whether this replica ends what replicas gone
	// from the store left (it holds that work's lease), and gives the
	// context to do it under, which ends when the lease is lost. A
	// replica is gone when its liveness lease (lease.ReplicaLease) has
	// lapsed. Nil: no sweep (one host).
	Sweep func() (context.Context, bool)
	// OrphanGrace is how long a gone replica's ready activations wait for
	// it to come back (a restart re-adopts them) before the sweep ends
	// them (default 2m). Activations it left coming up fail at once.
	OrphanGrace time.Duration
}

// Publisher appends an event and tells whoever watches (events.Bus).
type Publisher interface {
	Publish(ctx context.Context, e store.Event) (store.Event, error)
}

// Admission is what activations need of admission;
// *admission.Controller satisfies it.
type Admission interface {
	// Enqueue admits a request or queues it (see admission.Controller).
	Enqueue(ctx context.Context, req admission.Request) (*admission.Waiter, error)
}

var _ Admission = (*admission.Controller)(nil)

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 2 * time.Minute
	}
	if c.IdleCheckInterval <= 0 {
		c.IdleCheckInterval = 5 * time.Second
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = 2 * time.Minute
	}
}

// Validate reports a config the Service cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("control: Config.Store is required")
	case c.Sandboxes == nil:
		return errors.New("control: Config.Sandboxes is required")
	case c.DataDir == "":
		return errors.New("control: Config.DataDir is required")
	case len(c.Key) != 32:
		return fmt.Errorf("control: Config.Key must be 32 bytes, got %d", len(c.Key))
	}
	return nil
}

// Service is the project control plane.
type Service struct {
	cfg  Config
	log  *slog.Logger
	seal *sealer

	ctx    context.Context // ends at Close; parent of every background goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Service owns

	mu sync.Mutex // guards the fields below
	// inflight coalesces concurrent Activate calls of one project in this
	// process (singleflight): project ID → the call in progress.
	inflight map[string]*activateCall
	// runs are the activations this process drives or watches, by ID.
	runs map[string]*run
	// active is the run of each project this process drives, by project ID.
	active map[string]*run
	// touched holds activity not yet flushed to the store: activation → time.
	touched map[string]time.Time
	// watchers are live Watch streams waiting for new events, by activation.
	watchers map[string]map[chan struct{}]struct{}
	started  bool
	closed   bool
}

// now is the clock at the store's precision, so times compare equal after a round trip.
func (s *Service) now() time.Time { return store.Time(s.cfg.Now()) }

// New returns a Service; Start begins its background work.
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seal, err := newSealer(cfg.Key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "control"),
		seal:     seal,
		active:   map[string]*run{},
		ctx:      ctx,
		cancel:   cancel,
		inflight: map[string]*activateCall{},
		runs:     map[string]*run{},
		touched:  map[string]time.Time{},
		watchers: map[string]map[chan struct{}]struct{}{},
	}, nil
}

// ProjectRequest creates or updates a project. An update replaces the whole
// spec (no field is "unchanged"), except Secrets: a nil map keeps the
// project's secrets as they are, a non-nil map (even empty) replaces them.
type ProjectRequest struct {
	Name    string `json:"name"`
	Source  Source `json:"source"`
	Install string `json:"install,omitempty"` // sh -c, run once per activation before Start
	Start   string `json:"start,omitempty"`   // sh -c, detached; "" runs the image's Entrypoint+Cmd
	AppPort int    `json:"appPort,omitempty"` // default 3001
	// HealthPath is fetched until it answers 2xx; default "/status".
	HealthPath string            `json:"healthPath,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	// Secrets are env vars too, encrypted at rest and never returned.
	Secrets     map[string]string `json:"secrets,omitempty"`
	Resources   sandbox.Resources `json:"resources,omitzero"`
	IdleTimeout time.Duration     `json:"-"` // default 15m; JSON idleTimeoutMs
	MaxLifetime time.Duration     `json:"-"` // default 4h; JSON maxLifetimeMs
	// HealthTimeout bounds the wait for the app's first 2xx after it starts;
	// 0 takes the host's default (Config.HealthTimeout). JSON healthTimeoutMs.
	HealthTimeout   time.Duration `json:"-"`
	PersistentPaths []string      `json:"persistentPaths,omitempty"`
	// AppSecretHeader and AppSecretEnv carry the project's generated app
	// secret: the proxy sets the header, the app reads the env var.
	AppSecretHeader string `json:"appSecretHeader,omitempty"` // default X-Secret-Key
	AppSecretEnv    string `json:"appSecretEnv,omitempty"`    // default GOOSE_SERVER__SECRET_KEY
	// Labels are the owner's metadata (sandbox.ValidateLabels); an
	// activation's sandbox carries them too.
	Labels map[string]string `json:"labels,omitempty"`
	// Runtime runs the project's activations (sandbox.CreateRequest.Runtime);
	// "" is the host's default.
	Runtime string `json:"runtime,omitempty"`
}

// Source is where a project's app comes from: exactly one of an image in
// the host's image store or a git repository (checked out on top of the
// host image).
type Source struct {
	Image string          `json:"image,omitempty"`
	Git   *sandbox.Source `json:"git,omitempty"`
}

// ProjectSpec is a project's spec as the API shows it: the request with
// defaults applied, and the names of its secrets instead of their values.
type ProjectSpec struct {
	Source          Source            `json:"source"`
	Install         string            `json:"install,omitempty"`
	Start           string            `json:"start,omitempty"`
	AppPort         int               `json:"appPort"`
	HealthPath      string            `json:"healthPath"`
	Env             map[string]string `json:"env,omitempty"`
	SecretNames     []string          `json:"secretNames,omitempty"`
	Resources       sandbox.Resources `json:"resources,omitzero"`
	IdleTimeout     time.Duration     `json:"-"` // JSON idleTimeoutMs
	MaxLifetime     time.Duration     `json:"-"` // JSON maxLifetimeMs
	HealthTimeout   time.Duration     `json:"-"` // JSON healthTimeoutMs; 0: the host's default
	PersistentPaths []string          `json:"persistentPaths,omitempty"`
	AppSecretHeader string            `json:"appSecretHeader"`
	AppSecretEnv    string            `json:"appSecretEnv"`
	Labels          map[string]string `json:"labels,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
}

// ProjectView is a project as the API returns it.
type ProjectView struct {
	ID        string            `json:"id"`
	TeamID    string            `json:"teamId"`
	Name      string            `json:"name"`
	Spec      ProjectSpec       `json:"spec"`
	Active    *store.Activation `json:"active,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
	Version   int64             `json:"version"`
}

// AppTarget is where the app proxy sends a project's requests.
type AppTarget struct {
	URL          *url.URL // http://<sandbox addr>:<app port>
	SecretHeader string
	Secret       string
	ActivationID string
}

// End reasons of a deactivation.
const (
	ReasonExplicit    = "explicit"
	ReasonIdle        = "idle_timeout"
	ReasonLifetime    = "max_lifetime"
	ReasonSandboxGone = "sandbox_stopped"
	ReasonDeleted     = "project_deleted"
	ReasonShutdown    = "shutdown"
	ReasonBudget      = "budget"
	// ReasonReplicaLost ends an activation whose replica went away: its
	// liveness lease lapsed while the activation was coming up, or for
	// longer than OrphanGrace while it was ready.
	ReasonReplicaLost = "replica_lost"
)
