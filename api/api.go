// Package api holds the wire types of paddock's native HTTP API (/api/v1):
// the JSON bodies the server answers and accepts, the NDJSON log lines of
// command output, and the error shape. openapi.yaml beside it describes every
// endpoint. It imports only the standard library so that any Go program can
// use it without pulling in the server.
package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Prefix is the path every endpoint of this API lives under.
const Prefix = "/api/v1"

// Content types and headers the API uses.
const (
	ContentTypeJSON   = "application/json"
	ContentTypeNDJSON = "application/x-ndjson"
	ContentTypeTar    = "application/x-tar"
	ContentTypeGzip   = "application/gzip"
	ContentTypeBinary = "application/octet-stream"
	// HeaderFileMode carries a read file's permission bits, in octal.
	HeaderFileMode = "X-Paddock-File-Mode"
)

// Sandbox states as reported in Sandbox.Status.
const (
	StatusPending  = "pending"
	StatusRunning  = "running"
	StatusStopping = "stopping"
	StatusStopped  = "stopped"
	StatusFailed   = "failed"
	// StatusPaused: nothing runs; Sandbox.Pause says what was kept, and
	// POST /sandboxes/{id}/resume runs it again under the same id.
	StatusPaused = "paused"
)

// Resources are a sandbox's limits. In a create request a zero field means
// the server's default.
type Resources struct {
	VCPUs    float64 `json:"vcpus,omitempty"`
	MemoryMB int64   `json:"memoryMB,omitempty"`
	PIDs     int64   `json:"pids,omitempty"`
	// DiskMB caps the sandbox's writable layer (what it writes outside
	// /tmp and volumes), in MiB: a write past it fails with ENOSPC inside
	// the sandbox. In a sandbox, 0 means uncapped (a host run with
	// --sandbox-disk 0).
	DiskMB int64 `json:"diskMB,omitempty"`
}

// Sandbox is one sandbox as the API shows it.
type Sandbox struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Image  string `json:"image"`
	// TeamID is the owning team; absent for sandboxes made before teams.
	TeamID string `json:"teamId,omitempty"`
	// ImageDigest is the manifest digest of an OCI image; empty for "host".
	ImageDigest string `json:"imageDigest,omitempty"`
	// SnapshotID is the snapshot the sandbox was created from, if any.
	SnapshotID string `json:"snapshotId,omitempty"`
	// Warm: the sandbox was claimed from a warm pool, not created cold.
	Warm bool `json:"warm,omitempty"`
	// ImageUser is the image config's User as the image gives it.
	ImageUser string `json:"imageUser,omitempty"`
	// Runtime runs the sandbox ("runc", "gvisor").
	Runtime string `json:"runtime,omitempty"`
	// User is who commands run as without sudo: ImageUser resolved inside
	// the sandbox, or uid 1000 (/home/user) when the image names no user
	// or root. Absent until the sandbox's agent has answered.
	User *SandboxUser `json:"user,omitempty"`
	// WorkingDir is the default cwd of commands (the image's WorkingDir);
	// empty means the user's home.
	WorkingDir string            `json:"workingDir,omitempty"`
	Resources  Resources         `json:"resources"`
	Env        map[string]string `json:"env,omitempty"`
	CreatedAt  time.Time         `json:"createdAt"`
	StartedAt  time.Time         `json:"startedAt,omitzero"`
	StoppedAt  time.Time         `json:"stoppedAt,omitzero"`
	// ExpiresAt is when the sandbox's timeout stops it; see ExtendTimeoutRequest.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// LastActivityAt is the last request proxied to one of its ports or
	// command/file call; zero if none since it started.
	LastActivityAt time.Time `json:"lastActivityAt,omitzero"`
	// Error says why a sandbox failed.
	Error string `json:"error,omitempty"`
	// LayerRemovedAt is when a stopped sandbox's writable layer was
	// removed after the server's retention (--stopped-retention); it can
	// no longer be snapshotted.
	LayerRemovedAt time.Time `json:"layerRemovedAt,omitzero"`
	// Address is the sandbox's own address on this host, when it has a network.
	Address string `json:"address,omitempty"`
	// Routes are the URLs of the declared ports, through the proxy.
	Routes []Route `json:"routes,omitempty"`
	// NetworkPolicy is the egress policy in force, when it has a network.
	NetworkPolicy *NetworkPolicy `json:"networkPolicy,omitempty"`
	// Volumes are the named volumes mounted into the sandbox.
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// Source is what populated the working dir at create time, if anything.
	Source *SourceInfo `json:"source,omitempty"`
	// Paused is what a paused sandbox kept; absent unless it is paused.
	Paused *PauseInfo `json:"paused,omitempty"`
	// Labels are the owner's key/value metadata: at most 32, keys of
	// letters, digits and ._-/ (at most 63, starting with a letter or
	// digit), values of printable ASCII (at most 255).
	Labels map[string]string `json:"labels,omitempty"`
}

// LabelsRequest is the body of PUT /sandboxes/{id}/labels: it replaces
// every label ({} removes them all).
type LabelsRequest struct {
	Labels map[string]string `json:"labels"`
}

// PauseInfo is what a pause kept of a sandbox.
type PauseInfo struct {
	// SnapshotID holds the sandbox's filesystem; resume boots from it.
	SnapshotID string `json:"snapshotId"`
	// Memory reports that processes and memory were kept too. Always false
	// for now: a resume starts the sandbox afresh from its filesystem.
	Memory   bool      `json:"memory"`
	PausedAt time.Time `json:"pausedAt"`
	// TimeoutMs is the timeout a resume gives the sandbox unless it asks
	// for another: the paused run's (a paused sandbox's clock does not run).
	TimeoutMs int64 `json:"timeoutMs"`
}

// SandboxUser is a sandbox's unprivileged user: its ids and home.
type SandboxUser struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Home string `json:"home"`
}

// PortSpec declares a sandbox port served through the proxy.
type PortSpec struct {
	Port int `json:"port"`
	// Public ports open without credentials; private ones need a signed URL
	// or the owner's bearer token.
	Public bool `json:"public,omitempty"`
}

// Route is how one declared port is reached. The URL carries no
// credentials: a private port needs a signed URL (see SignedURLRequest).
type Route struct {
	Port      int    `json:"port"`
	Subdomain string `json:"subdomain"`
	URL       string `json:"url"`
	Public    bool   `json:"public"`
}

// NetworkPolicy is a sandbox's egress policy. Mode is "allow-all" (the
// default), "deny-all" or "custom" (only AllowDomains and AllowCIDRs).
// DenyCIDRs win over every allow. CIDRs are like "10.0.0.0/8".
type NetworkPolicy struct {
	Mode         string   `json:"mode"`
	AllowDomains []string `json:"allowDomains,omitempty"`
	AllowCIDRs   []string `json:"allowCIDRs,omitempty"`
	DenyCIDRs    []string `json:"denyCIDRs,omitempty"`
}

// AddPortsRequest is the body of POST /sandboxes/{id}/ports.
type AddPortsRequest struct {
	Ports []PortSpec `json:"ports"`
}

// SignedURLRequest is the body of POST /sandboxes/{id}/ports/{port}/signed-url.
type SignedURLRequest struct {
	// TTLSeconds is how long the URL opens the port: default 3600, max 7 days.
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
}

// SignedURL opens a private port until ExpiresAt.
type SignedURL struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// CreateSandboxRequest is the body of POST /sandboxes.
type CreateSandboxRequest struct {
	// Image defaults to "host": the host's /usr read-only with a synthesized /etc.
	Image     string    `json:"image,omitempty"`
	Resources Resources `json:"resources,omitzero"`
	// TimeoutMs stops the sandbox this long after creation; 0 = server default.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	// Env is the default environment of every command run in the sandbox.
	Env map[string]string `json:"env,omitempty"`
	// Ports are served through the proxy (more can be added later).
	Ports []PortSpec `json:"ports,omitempty"`
	// NetworkPolicy defaults to allow-all.
	NetworkPolicy *NetworkPolicy `json:"networkPolicy,omitempty"`
	// Snapshot starts the sandbox from a snapshot ("snap-...") instead of
	// an image; giving both is a 400.
	Snapshot string `json:"snapshot,omitempty"`
	// Volumes are named volumes to mount (see Volume), at most 8.
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// Source populates the working dir from a git repository or a tarball
	// before the sandbox is reported running.
	Source *Source `json:"source,omitempty"`
	// Labels are key/value metadata (see Sandbox.Labels); GET /sandboxes
	// filters on them with ?label=key=value (repeatable, all must match).
	Labels map[string]string `json:"labels,omitempty"`
	// Runtime runs the sandbox: "runc" or "gvisor" (GET /runtimes lists
	// this server's); default the snapshot's, else the server's
	// (`serve --runtime`). One the server cannot run is a 400.
	Runtime string `json:"runtime,omitempty"`
}

// Runtime is one isolation runtime a server knows (GET /runtimes).
type Runtime struct {
	Name string `json:"name"`
	// Default runs sandboxes whose create names no runtime.
	Default bool `json:"default"`
	// Available: sandboxes can run on it here; else Reason says why and
	// how to fix it.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Capabilities of an available runtime: Snapshot (snapshots, forks,
	// pause), DiskCap (diskMB is enforced; without it a create with a cap
	// is refused), UserNS (root in a sandbox maps to an unprivileged host
	// id), Seccomp, and the host's cgroup version.
	Capabilities RuntimeCapabilities `json:"capabilities"`
}

// RuntimeCapabilities are what a runtime can do on this server.
type RuntimeCapabilities struct {
	Snapshot bool `json:"snapshot"`
	DiskCap  bool `json:"diskCap"`
	// DiskCapStops: the disk cap holds by stopping a sandbox past it
	// (Kubernetes evicts its Pod), not by failing its writes.
	DiskCapStops  bool `json:"diskCapStops,omitempty"`
	UserNS        bool `json:"userNS"`
	Seccomp       bool `json:"seccomp"`
	CgroupVersion int  `json:"cgroupVersion,omitempty"`
}

// RuntimeList is the answer of GET /runtimes.
type RuntimeList struct {
	Runtimes []Runtime `json:"runtimes"`
}

// Source kinds in Source.Type.
const (
	SourceGit     = "git"
	SourceTarball = "tarball"
)

// Source is fetched by the server, not the sandbox: credentials never enter
// the sandbox, are never stored and never sent back (Sandbox.Source shows
// what was fetched, without them).
type Source struct {
	Type string `json:"type"` // SourceGit or SourceTarball
	URL  string `json:"url"`  // http(s)
	// Dir is where it lands; default the working dir, else /home/user.
	Dir string `json:"dir,omitempty"`
	// Git: Revision is a branch, tag or commit sha (default the remote's
	// HEAD); Depth 0 means 1, negative the whole history.
	Revision string `json:"revision,omitempty"`
	Depth    int    `json:"depth,omitempty"`
	// Credentials: Username and Password, or Token (git: HTTP basic auth
	// with the token as password; tarball: a bearer token).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
	// Tarball: leading path components dropped from every entry.
	StripComponents int `json:"stripComponents,omitempty"`
}

// SourceInfo is what a sandbox's source was, without credentials.
type SourceInfo struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Dir      string `json:"dir"`
	Revision string `json:"revision,omitempty"`
	Commit   string `json:"commit,omitempty"` // the git commit checked out
	Digest   string `json:"digest,omitempty"` // "sha256:..." of the tarball as downloaded
}

// Snapshot is a sandbox's filesystem kept as a read-only layer over the
// layers the sandbox stood on; sandboxes can be created from it.
type Snapshot struct {
	ID              string    `json:"id"`
	SourceSandboxID string    `json:"sourceSandboxId"`
	Image           string    `json:"image"` // the source sandbox's base image
	SizeBytes       int64     `json:"sizeBytes"`
	CreatedAt       time.Time `json:"createdAt"`
	// ExpiresAt is when GC removes the snapshot unless a sandbox is created
	// from it before; absent means never.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// RegistryImage is the snapshot as a registry image (repo@sha256:...)
	// when it was pushed to the server's snapshot registry (the kubernetes
	// runtime's snapshots are); absent otherwise.
	RegistryImage string `json:"registryImage,omitempty"`
}

// SnapshotList is the answer of GET /snapshots, oldest first.
type SnapshotList struct {
	Snapshots []Snapshot `json:"snapshots"`
}

// Roles of a user or token within its team. An admin of the bootstrap team
// ("default") is the host admin: every team's resources and admin API.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Team owns sandboxes, snapshots, projects, users and tokens.
type Team struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateTeamRequest is the body of POST /teams (host admins only).
type CreateTeamRequest struct {
	Name string `json:"name"`
}

// TeamList is the answer of GET /teams: every team for a host admin, the
// caller's own otherwise.
type TeamList struct {
	Teams []Team `json:"teams"`
}

// User is a person in a team. OIDC sign-ins find their user by (Issuer,
// Subject), Subject being the value of the server's configured claim.
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

// CreateUserRequest is the body of POST /teams/{id}/users. Issuer defaults
// to the server's OIDC issuer when Subject is given; Role to "member".
type CreateUserRequest struct {
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	Email   string `json:"email,omitempty"`
	Name    string `json:"name,omitempty"`
	Role    string `json:"role,omitempty"`
}

// UserList is the answer of GET /teams/{id}/users.
type UserList struct {
	Users []User `json:"users"`
}

// Token is an API token as listed: never its secret.
type Token struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	UserID    string    `json:"userId,omitempty"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"` // absent: never
}

// CreateTokenRequest is the body of POST /tokens. TeamID defaults to the
// caller's team, Role to "member", TTLSeconds 0 to no expiry.
type CreateTokenRequest struct {
	TeamID     string `json:"teamId,omitempty"`
	UserID     string `json:"userId,omitempty"`
	Name       string `json:"name"`
	Role       string `json:"role,omitempty"`
	TTLSeconds int64  `json:"ttlSeconds,omitempty"`
	// Format "e2b" spells the secret as an E2B API key (e2b_ and 40 hex
	// digits) for E2B's SDKs against /compat/e2b; "" is paddock's pdk_.
	// Either works as a bearer token and as X-API-Key.
	Format string `json:"format,omitempty"`
}

// CreatedToken answers POST /tokens: the only time the secret is shown.
type CreatedToken struct {
	Token
	Secret string `json:"secret"`
}

// TokenList is the answer of GET /tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// SandboxList is one page of GET /sandboxes. An empty NextCursor means the last page.
type SandboxList struct {
	Sandboxes  []Sandbox `json:"sandboxes"`
	NextCursor string    `json:"nextCursor,omitempty"`
}

// ExtendTimeoutRequest is the body of POST /sandboxes/{id}/extend-timeout.
type ExtendTimeoutRequest struct {
	DurationMs int64 `json:"durationMs"`
}

// ResumeRequest is the optional body of POST /sandboxes/{id}/resume.
type ResumeRequest struct {
	// TimeoutMs is the resumed sandbox's timeout from now; 0: the one it
	// had when paused (Sandbox.Paused.TimeoutMs).
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
}

// Port is a TCP port listening inside a sandbox.
type Port struct {
	Port    int    `json:"port"`
	Address string `json:"address"` // the address it is bound to inside: "0.0.0.0", "::", "127.0.0.1"
}

// PortList answers GET /sandboxes/{id}/ports.
type PortList struct {
	Ports []Port `json:"ports"`
}

// Stats are a sandbox's resource figures, read from its cgroups.
type Stats struct {
	CPUUsageMs       int64   `json:"cpuUsageMs"`
	MemoryBytes      uint64  `json:"memoryBytes"`
	MemoryPeakBytes  uint64  `json:"memoryPeakBytes"`
	MemoryLimitBytes uint64  `json:"memoryLimitBytes"`
	PIDs             uint64  `json:"pids"`
	OOMKills         uint64  `json:"oomKills"`
	VCPUs            float64 `json:"vcpus"`
	// Network bytes as seen from the sandbox (0 without a network).
	NetworkRxBytes uint64 `json:"networkRxBytes"`
	NetworkTxBytes uint64 `json:"networkTxBytes"`
	// The writable layer's disk (0 without a disk cap): bytes and inodes
	// used, ext4's own metadata included, and the cap.
	DiskBytes       uint64 `json:"diskBytes"`
	DiskLimitBytes  uint64 `json:"diskLimitBytes"`
	DiskInodes      uint64 `json:"diskInodes"`
	DiskInodesLimit uint64 `json:"diskInodesLimit"`
}

// CommandRequest is the body of POST /sandboxes/{id}/commands.
type CommandRequest struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
	// Cwd defaults to the user's home (/root with Sudo).
	Cwd string `json:"cwd,omitempty"`
	// Env is merged over the sandbox's Env.
	Env  map[string]string `json:"env,omitempty"`
	Sudo bool              `json:"sudo,omitempty"`
	// Detached makes the POST answer as soon as the command started;
	// otherwise it answers once the command finished, with its ExitCode.
	Detached bool `json:"detached,omitempty"`
	// TimeoutMs kills the command's process group after this long; 0 = none.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	// Stdin keeps the command's stdin open for POST .../stdin until closed;
	// without it stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
}

// PTYSize is a terminal's size in character cells, each 1..4096; the
// body of POST .../pty/{cmd}/resize.
type PTYSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// PTYRequest is the body of POST /sandboxes/{id}/pty: a command started on
// a new pseudo-terminal. It runs as commands do (Cwd, Env, Sudo, the
// history) with the terminal as its stdin, stdout and stderr.
type PTYRequest struct {
	// Cmd defaults to the user's login shell (bash -l, else sh -l).
	Cmd  string            `json:"cmd,omitempty"`
	Args []string          `json:"args,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
	Sudo bool              `json:"sudo,omitempty"`
	// Rows and Cols default to 24 and 80. TERM defaults to xterm-256color.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// TimeoutMs kills the session after this long; 0 = none.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	// Tag names the session (at most 256 bytes), shown on the Command.
	Tag string `json:"tag,omitempty"`
}

// PTYOutput is one line of the NDJSON answer of GET .../pty/{cmd}/output:
// exactly one of Data, Dropped, Exit or Error. Offset is where the output
// resumes after this line: pass it as ?offset= to reconnect.
type PTYOutput struct {
	// Data is what the terminal printed (base64 in JSON).
	Data   []byte `json:"data,omitempty"`
	Offset int64  `json:"offset"`
	// Dropped counts output the sandbox no longer keeps (the log is capped
	// like a command's), skipped to reach Offset.
	Dropped int64        `json:"dropped,omitempty"`
	Exit    *Command     `json:"exit,omitempty"`
	Error   *ErrorDetail `json:"error,omitempty"`
}

// Watch event types (WatchEvent.Type). Create also stands for an entry
// moved in, rename for one moved away (by its old name); overflow says
// events were lost and the client should look again.
const (
	WatchCreate   = "create"
	WatchWrite    = "write"
	WatchRemove   = "remove"
	WatchRename   = "rename"
	WatchChmod    = "chmod"
	WatchOverflow = "overflow"
)

// WatchEvent is one line of the NDJSON answer of GET /sandboxes/{id}/watch.
type WatchEvent struct {
	Type string `json:"type"`
	// Name is the entry's path relative to the watched directory ("" for
	// the directory itself); Path is the same, absolute.
	Name string `json:"name,omitempty"`
	Path string `json:"path,omitempty"`
	Dir  bool   `json:"dir,omitempty"`
	// Error ends a stream that could not go on.
	Error *ErrorDetail `json:"error,omitempty"`
}

// Command status values.
const (
	CommandRunning  = "running"
	CommandExited   = "exited"
	CommandKilled   = "killed"
	CommandTimedOut = "timedout"
	CommandFailed   = "failed"
	// CommandUnknown: from the history of a stopped sandbox, a command
	// whose exit was never reported (it still ran when the sandbox stopped).
	CommandUnknown = "unknown"
)

// Command is one command run in a sandbox.
type Command struct {
	ID        string   `json:"id"`
	SandboxID string   `json:"sandboxId"`
	Cmd       string   `json:"cmd"`
	Args      []string `json:"args,omitempty"`
	Cwd       string   `json:"cwd"`
	Sudo      bool     `json:"sudo,omitempty"`
	// Tag is the name the command was started with, if any.
	Tag string `json:"tag,omitempty"`
	// PTY is the terminal's current size, for a command started on one.
	PTY    *PTYSize `json:"pty,omitempty"`
	Status string   `json:"status"`
	// ExitCode is set once the command finished (128+signal when killed).
	ExitCode   *int      `json:"exitCode,omitempty"`
	Signal     string    `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Done reports whether the command has finished.
func (c Command) Done() bool { return c.Status != "" && c.Status != CommandRunning }

// Usage is one row of GET /usage: what a team's project (or, when the query
// names a sandbox, that sandbox) used in one bucket (an hour or a UTC day),
// and what it cost. Usage is sampled while sandboxes run; a sample belongs
// to the bucket its start is in.
type Usage struct {
	TeamID string `json:"teamId"`
	// ProjectID is "" for sandboxes of no project and for storage.
	ProjectID string    `json:"projectId,omitempty"`
	SandboxID string    `json:"sandboxId,omitempty"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	// CPUSeconds is active CPU time (all cores).
	CPUSeconds float64 `json:"cpuSeconds"`
	// MemoryGBHours is provisioned memory (the limit, not use) × hours run.
	MemoryGBHours float64 `json:"memoryGBHours"`
	// MemoryPeakBytes is the highest memory use seen in the bucket.
	MemoryPeakBytes uint64 `json:"memoryPeakBytes"`
	// Network bytes the sandboxes received and sent (sent is egress).
	NetRxBytes uint64 `json:"netRxBytes"`
	NetTxBytes uint64 `json:"netTxBytes"`
	// Creations counts sandboxes started.
	Creations int64 `json:"creations"`
	// StorageGBHours is snapshots' and volumes' size × hours kept.
	StorageGBHours float64   `json:"storageGBHours"`
	Cost           UsageCost `json:"cost"`
}

// UsageCost is usage priced by the server's price table.
type UsageCost struct {
	CPU       float64 `json:"cpu"`
	Memory    float64 `json:"memory"`
	Network   float64 `json:"network"`
	Storage   float64 `json:"storage"`
	Creations float64 `json:"creations"`
	Total     float64 `json:"total"`
}

// UsageList is the answer of GET /usage, ordered by (start, team, project).
type UsageList struct {
	Usage       []Usage `json:"usage"`
	Granularity string  `json:"granularity"` // minute (one sandbox), hour or day
	Currency    string  `json:"currency"`
	NextCursor  string  `json:"nextCursor,omitempty"`
}

// BudgetRequest sets a team's monthly budget (PUT /teams/{id}/budget, host
// admin only).
type BudgetRequest struct {
	// MonthlyLimit is in the price table's currency per UTC month.
	MonthlyLimit float64 `json:"monthlyLimit"`
	// Thresholds are percentages of the limit that each emit a
	// budget.threshold event once a month (default 50, 80, 100).
	Thresholds []int `json:"thresholds,omitempty"`
	// HardCap refuses new sandboxes and activations of the team (402
	// budget_exceeded) and stops its running ones, state saved, once the
	// month's cost reaches the limit.
	HardCap bool `json:"hardCap"`
}

// Budget is a team's budget with this month's spend.
type Budget struct {
	TeamID       string    `json:"teamId"`
	MonthlyLimit float64   `json:"monthlyLimit"`
	Thresholds   []int     `json:"thresholds,omitempty"`
	HardCap      bool      `json:"hardCap"`
	Currency     string    `json:"currency"`
	Spend        float64   `json:"spend"`   // this UTC month's cost so far
	Percent      float64   `json:"percent"` // of the limit
	Capped       bool      `json:"capped"`  // the hard cap refuses new work now
	UpdatedAt    time.Time `json:"updatedAt"`
}

// CommandList is the answer of GET /sandboxes/{id}/commands, oldest first.
type CommandList struct {
	Commands []Command `json:"commands"`
}

// Log streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// LogLine is one line of the NDJSON answer of GET .../commands/{cmd}/logs.
// A line carries exactly one of: output (Stream with Data or DataBase64),
// Dropped, the final Exit line, or an Error that ended the stream early.
type LogLine struct {
	Stream string `json:"stream,omitempty"`
	// Data is the chunk as text when it is valid UTF-8. The server never
	// splits a UTF-8 sequence across two lines.
	Data string `json:"data,omitempty"`
	// DataBase64 holds the chunk instead when it is not valid UTF-8.
	DataBase64 []byte `json:"dataBase64,omitempty"`
	// Dropped stands for output the sandbox no longer keeps: each
	// command's log is capped (the oldest output goes first), so a log read
	// from its start, or followed by a reader that fell behind, skips what
	// was dropped. It counts the bytes of the log skipped here: the output
	// plus 5 bytes of framing per chunk the command wrote.
	Dropped int64 `json:"dropped,omitempty"`
	// Exit is the finished command; it is the last line of a complete log.
	Exit *Command `json:"exit,omitempty"`
	// Error ends a stream that could not be completed.
	Error *ErrorDetail `json:"error,omitempty"`
}

// Bytes returns the chunk's bytes whichever field carries them.
func (l LogLine) Bytes() []byte {
	if l.DataBase64 != nil {
		return l.DataBase64
	}
	return []byte(l.Data)
}

// Signal names a signal by name ("SIGTERM", "TERM") or number. On the wire it
// is a JSON string or a JSON number.
type Signal string

// UnmarshalJSON accepts a string or an integer.
func (s *Signal) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*s = Signal(strconv.FormatInt(n, 10))
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("signal must be a name or a number: %w", err)
	}
	*s = Signal(str)
	return nil
}

// KillRequest is the body of POST .../commands/{cmd}/kill. Signal defaults to SIGKILL.
type KillRequest struct {
	Signal Signal `json:"signal,omitempty"`
}

// MkdirRequest is the body of POST /sandboxes/{id}/directories (mkdir -p).
type MkdirRequest struct {
	Path string `json:"path"`
	// Sudo makes root the owner instead of the sandbox user.
	Sudo bool `json:"sudo,omitempty"`
}

// WriteFilesResult is the answer of PUT /sandboxes/{id}/files.
type WriteFilesResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// File entry types: what FileEntry.Type says an entry is.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other" // a FIFO, socket or device node
)

// FileEntry is one entry of a directory listing (GET
// /sandboxes/{id}/directories). A symlink is described itself, never its
// target; all of it comes from inside the sandbox.
type FileEntry struct {
	Name string `json:"name"`
	// Path is the entry's absolute path in the sandbox.
	Path string `json:"path"`
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is the permission bits plus setuid, setgid and sticky;
	// Permissions is the whole mode as ls prints it ("drwxr-xr-x").
	Mode        uint32 `json:"mode"`
	Permissions string `json:"permissions"`
	// Owner and Group are names from the sandbox's etc/passwd and
	// etc/group, or the numeric ids when they name none.
	Owner   string    `json:"owner"`
	Group   string    `json:"group"`
	ModTime time.Time `json:"modTime"`
	// SymlinkTarget is a symlink's target made absolute against its
	// directory (lexically; links on the way are not resolved).
	SymlinkTarget string `json:"symlinkTarget,omitempty"`
}

// DirectoryListing is the answer of GET /sandboxes/{id}/directories: the
// entries below Path, sorted by path (depth first).
type DirectoryListing struct {
	Path    string      `json:"path"`
	Entries []FileEntry `json:"entries"`
}

// ErrorDetail is a machine-readable code and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is the body of every error answer: {"error":{"code","message"}}.
type Error struct {
	Error ErrorDetail `json:"error"`
}

// ImageConfig is the part of an image's config sandboxes use.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// Image is an OCI image ref in the host's image store. Refs belong to a
// team (layers are shared by digest): a team sees and uses its own refs and
// the published ones, which the host admin makes; its own ref shadows a
// published one of the same name.
type Image struct {
	// Ref is the normalised reference (index.docker.io/library/alpine:3.20),
	// or the digest of an imported image without a tag.
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	// TeamID owns the ref; empty for a published ref.
	TeamID string `json:"teamId,omitempty"`
	// Published refs are seen by every team.
	Published bool  `json:"published"`
	Layers    int   `json:"layers"`
	Size      int64 `json:"size"` // unpacked bytes
	// Config is the image's config. Lists leave out its Env, which images
	// often carry secrets in; GET /images/{ref} shows it.
	Config ImageConfig `json:"config"`
}

// ImageList is the answer of GET /images, sorted by ref.
type ImageList struct {
	Images []Image `json:"images"`
}

// PullImageRequest is the body of POST /images/pull. Without credentials
// the pull is anonymous, except for the host admin (and for every team when
// the server runs with --image-keychain), whose pulls use the server's own
// docker keychain.
type PullImageRequest struct {
	Ref      string `json:"ref"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
	// Insecure allows a plain-HTTP registry (loopback and private
	// addresses get HTTP anyway). Host admin only: others get 403.
	Insecure bool `json:"insecure,omitempty"`
	// Published records the ref for every team (host admin only); without
	// it the ref is the caller's team's.
	Published bool `json:"published,omitempty"`
}

// PullProgress is one NDJSON line of POST /images/pull's answer: layer
// progress lines, then one line with Image (success) or Error.
type PullProgress struct {
	Digest string `json:"digest,omitempty"` // the layer's diff ID
	Index  int    `json:"index"`            // 0-based, base layer first
	Count  int    `json:"count"`
	Bytes  int64  `json:"bytes,omitempty"` // unpacked size, once done
	Cached bool   `json:"cached,omitempty"`
	Done   bool   `json:"done,omitempty"`
	// Image is the pulled image, on the last line of a successful pull.
	Image *Image `json:"image,omitempty"`
	// Error ends a pull that failed after progress began.
	Error *ErrorDetail `json:"error,omitempty"`
}

// Volume modes in VolumeMount.Mode.
const (
	// VolumeReadWrite mounts the volume itself: writes persist. A volume
	// has at most one read-write mount, and none beside copy-on-write ones.
	VolumeReadWrite = "rw"
	// VolumeCopyOnWrite mounts a private overlay over the volume: the
	// sandbox sees its content and may change it; changes are dropped when
	// the sandbox stops. Any number of sandboxes may mount it so at once.
	VolumeCopyOnWrite = "cow"
)

// VolumeMount attaches a named volume at a path in a sandbox.
type VolumeMount struct {
	Volume string `json:"volume"`
	// Path is absolute and clean, not /, and not at, in or above a path
	// paddock mounts itself (/proc, /sys, /dev, /tmp, /usr, /etc/hosts...).
	Path string `json:"path"`
	Mode string `json:"mode,omitempty"` // VolumeReadWrite (default) or VolumeCopyOnWrite
}

// Volume is a named persistent volume: a filesystem of SizeBytes that
// outlives sandboxes, for caching dependencies between runs.
type Volume struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"sizeBytes"` // the cap: writes past it fail with ENOSPC
	// UsedBytes is what the volume takes on the host's disk now.
	UsedBytes int64 `json:"usedBytes"`
	// TeamID owns the volume; the name is unique within it.
	TeamID     string    `json:"teamId,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
	// InUseBy lists the sandboxes that mount it; deleting it is refused
	// while any does.
	InUseBy []string `json:"inUseBy,omitempty"`
}

// CreateVolumeRequest is the body of POST /volumes.
type CreateVolumeRequest struct {
	// Name: 1-63 of [a-z0-9_.-], starting with a letter or digit; unique
	// within the caller's team (another team's volume of the name is a
	// different one).
	Name string `json:"name"`
	// SizeBytes caps the volume (rounded up to a MiB); 0 = the server's
	// default (10 GiB).
	SizeBytes int64 `json:"sizeBytes,omitempty"`
}

// VolumeList is the answer of GET /volumes: the caller's team's volumes,
// sorted by name (a host admin's: every team's, by team then name).
type VolumeList struct {
	Volumes []Volume `json:"volumes"`
}

// TeamLimits are a team's admission limits (PUT /teams/{id}/limits, host
// admins only): a preset ("hobby", "pro") and custom values that override
// its fields; a zero field keeps the preset's, and no preset with zero
// fields is no limit at all.
type TeamLimits struct {
	Preset           string  `json:"preset,omitempty"`
	Concurrent       int     `json:"concurrent,omitempty"`       // pending and running sandboxes
	VCPUs            float64 `json:"vcpus,omitempty"`            // their vCPUs together
	MemoryMB         int64   `json:"memoryMb,omitempty"`         // their memory together
	CreatesPerMinute int     `json:"createsPerMinute,omitempty"` // creates in any 60 s
}

// TeamAdmission is a team's limits and what it uses now, across the
// replicas sharing the store (GET /teams/{id}/limits).
type TeamAdmission struct {
	TeamID string `json:"teamId"`
	// Limits are as a host admin set them; Default: none were, and the
	// server's default applies.
	Limits    TeamLimits `json:"limits"`
	Default   bool       `json:"default"`
	Effective TeamLimits `json:"effective"` // what admission enforces; zero fields: no limit
	Usage     TeamUsage  `json:"usage"`
}

// TeamUsage is what a team holds now and how many of its requests wait.
type TeamUsage struct {
	Concurrent        int     `json:"concurrent"`
	VCPUs             float64 `json:"vcpus"`
	MemoryMB          int64   `json:"memoryMb"`
	CreatesLastMinute int     `json:"createsLastMinute"` // counted up to the team's rate limit, none without one
	Queued            int     `json:"queued"`
}
