package api

import "time"

// Activation states, as in Activation.State and ActivationEvent.Type. An
// activation moves queued → provisioning → restoring → installing →
// starting → ready, or to failed from any of them; a ready one later goes
// deactivating → stopped.
const (
	ActivationQueued       = "queued"
	ActivationProvisioning = "provisioning"
	ActivationRestoring    = "restoring"
	ActivationInstalling   = "installing"
	ActivationStarting     = "starting"
	ActivationReady        = "ready"
	ActivationFailed       = "failed"
	ActivationDeactivating = "deactivating"
	ActivationStopped      = "stopped"
)

// HeaderProxyError marks an error answered by the app proxy itself (its
// value is the error code), so a client tells it from the app's own errors.
const HeaderProxyError = "X-Paddock-Error"

// HeaderPortToken carries a signed port token (the header form of a signed
// URL's paddock_token), for programs that open a private port.
const HeaderPortToken = "X-Paddock-Token"

// ContentTypeEventStream is the content type of the activation progress
// streams (server-sent events).
const ContentTypeEventStream = "text/event-stream"

// ProjectRequest is the body of POST /projects and PUT /projects/{id}. A PUT
// replaces the whole spec: a field left out takes its default again. The one
// exception is Secrets: left out (null) keeps the project's secrets, an
// object (even {}) replaces them all.
type ProjectRequest struct {
	Name   string        `json:"name"`
	Source ProjectSource `json:"source"`
	// Install runs with sh -c once per activation, before Start.
	Install string `json:"install,omitempty"`
	// Start runs with sh -c, detached; "" runs the image's entrypoint.
	Start string `json:"start,omitempty"`
	// AppPort is where the app listens inside the sandbox (default 3001).
	AppPort int `json:"appPort,omitempty"`
	// HealthPath answers 2xx once the app is up (default /status).
	HealthPath string            `json:"healthPath,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	// Secrets are environment variables too, encrypted at rest and never
	// returned: a project shows only their names.
	Secrets   map[string]string `json:"secrets,omitempty"`
	Resources Resources         `json:"resources,omitzero"`
	// IdleTimeoutMs deactivates the app after this long without a proxied
	// request or heartbeat (default 15 minutes).
	IdleTimeoutMs int64 `json:"idleTimeoutMs,omitempty"`
	// MaxLifetimeMs deactivates the app this long after it started
	// (default 4 hours).
	MaxLifetimeMs int64 `json:"maxLifetimeMs,omitempty"`
	// HealthTimeoutMs fails an activation whose app has not answered its
	// health path with a 2xx this long after starting; 0 takes the server's
	// default (`serve --health-timeout`, 2 minutes).
	HealthTimeoutMs int64 `json:"healthTimeoutMs,omitempty"`
	// PersistentPaths are saved at deactivation and restored at the next
	// activation (the agent's data directory).
	PersistentPaths []string `json:"persistentPaths,omitempty"`
	// AppSecretHeader is the header through which the proxy hands the app
	// its generated secret (default X-Secret-Key); AppSecretEnv is the
	// variable the app reads it from (default GOOSE_SERVER__SECRET_KEY).
	AppSecretHeader string `json:"appSecretHeader,omitempty"`
	AppSecretEnv    string `json:"appSecretEnv,omitempty"`
	// Labels are key/value metadata (as Sandbox.Labels), replaced by a PUT;
	// GET /projects filters on them with ?label=key=value. The sandbox of
	// an activation carries its project's labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Runtime runs the project's activations ("runc", "gvisor"; default
	// the server's): one the server cannot run is a 400.
	Runtime string `json:"runtime,omitempty"`
}

// ProjectSource is exactly one of an image in the host's image store or a
// git repository checked out over the host image.
type ProjectSource struct {
	Image string     `json:"image,omitempty"`
	Git   *GitSource `json:"git,omitempty"`
}

// GitSource is a git repository fetched on the host. Credentials are used
// for the fetch only: never stored in the clear, never returned.
type GitSource struct {
	URL string `json:"url"`
	// Revision is a branch, tag or commit (default the remote HEAD).
	Revision string `json:"revision,omitempty"`
	// Depth 0 means a shallow clone, negative the full history.
	Depth int `json:"depth,omitempty"`
	// Dir is where the checkout lands inside the sandbox.
	Dir      string `json:"dir,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
}

// ProjectSpec is a project's spec as the API shows it: the request with
// defaults applied, and its secrets' names instead of their values.
type ProjectSpec struct {
	Source          ProjectSource     `json:"source"`
	Install         string            `json:"install,omitempty"`
	Start           string            `json:"start,omitempty"`
	AppPort         int               `json:"appPort"`
	HealthPath      string            `json:"healthPath"`
	Env             map[string]string `json:"env,omitempty"`
	SecretNames     []string          `json:"secretNames,omitempty"`
	Resources       Resources         `json:"resources,omitzero"`
	IdleTimeoutMs   int64             `json:"idleTimeoutMs"`
	MaxLifetimeMs   int64             `json:"maxLifetimeMs"`
	HealthTimeoutMs int64             `json:"healthTimeoutMs,omitempty"` // 0: the server's default
	PersistentPaths []string          `json:"persistentPaths,omitempty"`
	AppSecretHeader string            `json:"appSecretHeader"`
	AppSecretEnv    string            `json:"appSecretEnv"`
	Labels          map[string]string `json:"labels,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
}

// Project is one project as the API shows it.
type Project struct {
	ID     string      `json:"id"`
	TeamID string      `json:"teamId"`
	Name   string      `json:"name"`
	Spec   ProjectSpec `json:"spec"`
	// Active is the live activation, if any.
	Active *Activation `json:"active,omitempty"`
	// AppURL is where the app answers through paddock's authenticated
	// proxy once an activation is ready.
	AppURL    string    `json:"appUrl"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Version grows with every update.
	Version int64 `json:"version"`
}

// ProjectList is one page of GET /projects.
type ProjectList struct {
	Projects   []Project `json:"projects"`
	NextCursor string    `json:"nextCursor,omitempty"`
}

// Activation is one run of a project's app in a sandbox.
type Activation struct {
	ID        string `json:"id"`
	ProjectID string `json:"projectId"`
	SandboxID string `json:"sandboxId,omitempty"`
	// ImageDigest is the manifest digest of the image the activation runs
	// (empty for the host image).
	ImageDigest string `json:"imageDigest,omitempty"`
	// State is one of the Activation* constants.
	State string `json:"state"`
	// Error and LogTail say why a failed activation failed; LogTail is the
	// end of the install's or the app's output.
	Error     string `json:"error,omitempty"`
	LogTail   string `json:"logTail,omitempty"`
	EndReason string `json:"endReason,omitempty"`
	// AppURL is where the app answers through the proxy once ready.
	AppURL         string    `json:"appUrl"`
	CreatedAt      time.Time `json:"createdAt"`
	ReadyAt        time.Time `json:"readyAt,omitzero"`
	EndedAt        time.Time `json:"endedAt,omitzero"`
	LastActivityAt time.Time `json:"lastActivityAt,omitzero"`
}

// Done reports whether the activation will make no more progress: ready,
// or ended.
func (a Activation) Done() bool {
	switch a.State {
	case ActivationReady, ActivationFailed, ActivationStopped, ActivationDeactivating:
		return true
	}
	return false
}

// ActivationList is one page of GET /projects/{id}/activations, newest
// last.
type ActivationList struct {
	Activations []Activation `json:"activations"`
	NextCursor  string       `json:"nextCursor,omitempty"`
}

// ActivationEvent is one progress event of an activation: the data of one
// server-sent event, whose event name is Type and whose id is Seq.
type ActivationEvent struct {
	Seq          int64     `json:"seq"`
	Time         time.Time `json:"time"`
	ProjectID    string    `json:"projectId,omitempty"`
	ActivationID string    `json:"activationId,omitempty"`
	SandboxID    string    `json:"sandboxId,omitempty"`
	// Type is an Activation* state.
	Type string `json:"type"`
	// Message is the error of a failed event; Data["logTail"] its log's end.
	Message string            `json:"message,omitempty"`
	Data    map[string]string `json:"data,omitempty"`
}

// Terminal reports whether an activation's progress stream ends with e.
func (e ActivationEvent) Terminal() bool {
	switch e.Type {
	case ActivationReady, ActivationFailed, ActivationStopped:
		return true
	}
	return false
}

// DeactivateRequest is the optional body of POST /projects/{id}/deactivate.
type DeactivateRequest struct {
	// Reason is recorded as the activation's end reason (default "explicit").
	Reason string `json:"reason,omitempty"`
}

// AppURLRequest is the body of POST /projects/{id}/app-url.
type AppURLRequest struct {
	// TTLSeconds is how long the URL opens the app: default 3600, max 7 days.
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
}

// Event is one lifecycle event of GET /events (a server-sent event whose
// name is Type and whose id is Seq) and the body of a webhook delivery.
// Types: sandbox.created, sandbox.started, sandbox.failed, sandbox.stopped
// (Data: reason, and the run's usage: cpuSeconds, memoryMBHours,
// netRxBytes, netTxBytes, durationSeconds), sandbox.deleted,
// sandbox.snapshotted (Data: snapshotId), sandbox.labels_changed,
// sandbox.adopted (a replica took it over from one gone; Data: reason,
// state), and
// activation.<state> for each step of a project's activation
// (activation.provisioning ... activation.ready, activation.failed,
// activation.stopped).
type Event struct {
	Seq          int64             `json:"seq"`
	Time         time.Time         `json:"time"`
	Type         string            `json:"type"`
	TeamID       string            `json:"teamId,omitempty"`
	ProjectID    string            `json:"projectId,omitempty"`
	ActivationID string            `json:"activationId,omitempty"`
	SandboxID    string            `json:"sandboxId,omitempty"`
	Message      string            `json:"message,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
}

// WebhookRequest is the body of POST /webhooks.
type WebhookRequest struct {
	// URL receives each event as a POST (http or https; private and
	// loopback addresses only where the operator allows them).
	URL string `json:"url"`
	// Secret signs deliveries (16-256 bytes); empty generates one. It is
	// returned once, in the answer to this request.
	Secret string `json:"secret,omitempty"`
	// Types limits the events sent ("sandbox.stopped", "activation.*");
	// empty sends all.
	Types []string `json:"types,omitempty"`
}

// Webhook is a team's webhook. Secret is set only in the answer that
// created it.
type Webhook struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	URL       string    `json:"url"`
	Types     []string  `json:"types,omitempty"`
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// WebhookList is GET /webhooks.
type WebhookList struct {
	Webhooks []Webhook `json:"webhooks"`
}

// Delivery is one event on its way to a webhook: State pending (retried
// with exponential backoff), delivered (a 2xx answer), failed (the last
// attempt failed) or dropped (never sent: the webhook's backlog of
// pending deliveries was full when its event came).
type Delivery struct {
	ID            string    `json:"id"`
	WebhookID     string    `json:"webhookId"`
	EventSeq      int64     `json:"eventSeq"`
	EventType     string    `json:"eventType"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	LastAttemptAt time.Time `json:"lastAttemptAt,omitzero"`
	LastStatus    int       `json:"lastStatus,omitempty"`
	LastError     string    `json:"lastError,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
}

// DeliveryList is GET /webhooks/{id}/deliveries, by EventSeq; NextAfter
// is the ?after= of the next page (0 on the last).
type DeliveryList struct {
	Deliveries []Delivery `json:"deliveries"`
	NextAfter  int64      `json:"nextAfter,omitempty"`
}
