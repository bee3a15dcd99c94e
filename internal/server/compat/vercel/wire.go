package vercel

// Wire shapes of Vercel's sandbox API, as the SDKs' zod schemas read them
// (@vercel/sandbox 3.5.0 for v2, 1.10.2 for v1). Every time is epoch
// milliseconds. A field the schema requires is never omitempty; optional
// ones are left out when unknown rather than sent as null, because zod's
// .optional() refuses null.

// wireSandbox is v2's named sandbox.
type wireSandbox struct {
	Name              string            `json:"name"`
	Persistent        bool              `json:"persistent"`
	Region            string            `json:"region,omitempty"`
	FailoverRegions   []string          `json:"failoverRegions,omitempty"`
	VCPUs             float64           `json:"vcpus,omitempty"`
	Memory            int64             `json:"memory,omitempty"`
	Runtime           string            `json:"runtime,omitempty"`
	Image             string            `json:"image,omitempty"`
	Timeout           int64             `json:"timeout,omitempty"`
	NetworkPolicy     *wirePolicy       `json:"networkPolicy,omitempty"`
	CreatedAt         int64             `json:"createdAt"`
	UpdatedAt         int64             `json:"updatedAt"`
	ExpiresAt         int64             `json:"expiresAt,omitempty"`
	CurrentSessionID  string            `json:"currentSessionId"`
	CurrentSnapshotID string            `json:"currentSnapshotId,omitempty"`
	Status            string            `json:"status"`
	StatusUpdatedAt   int64             `json:"statusUpdatedAt,omitempty"`
	Cwd               string            `json:"cwd,omitempty"`
	Tags              map[string]string `json:"tags,omitempty"`
	TotalDurationMs   int64             `json:"totalDurationMs,omitempty"`
	// Usage totals over the sessions whose usage is known (see usage.go).
	TotalActiveCPUDurationMs *int64  `json:"totalActiveCpuDurationMs,omitempty"`
	TotalEgressBytes         *uint64 `json:"totalEgressBytes,omitempty"`
	TotalIngressBytes        *uint64 `json:"totalIngressBytes,omitempty"`
	SnapshotExpiration       *int64  `json:"snapshotExpiration,omitempty"`
}

// wireSession is v2's session; v1's sandbox is the same object with an
// id, a required runtime and no sandbox around it.
type wireSession struct {
	ID               string      `json:"id"`
	Memory           int64       `json:"memory"`
	VCPUs            float64     `json:"vcpus"`
	Region           string      `json:"region"`
	Runtime          *string     `json:"runtime,omitempty"`
	Timeout          int64       `json:"timeout"`
	Status           string      `json:"status"`
	RequestedAt      int64       `json:"requestedAt"`
	StartedAt        int64       `json:"startedAt,omitempty"`
	RequestedStopAt  int64       `json:"requestedStopAt,omitempty"`
	StoppedAt        int64       `json:"stoppedAt,omitempty"`
	Duration         int64       `json:"duration,omitempty"`
	SourceSnapshotID string      `json:"sourceSnapshotId,omitempty"`
	SnapshottedAt    int64       `json:"snapshottedAt,omitempty"`
	CreatedAt        int64       `json:"createdAt"`
	Cwd              string      `json:"cwd"`
	UpdatedAt        int64       `json:"updatedAt"`
	NetworkPolicy    *wirePolicy `json:"networkPolicy,omitempty"`
	// Usage (see usage.go): SDK 3.x reads them as activeCpuUsageMs and
	// networkTransfer.
	ActiveCPUDurationMs *int64        `json:"activeCpuDurationMs,omitempty"`
	NetworkTransfer     *wireTransfer `json:"networkTransfer,omitempty"`
}

// wireRoute is a port's URL.
type wireRoute struct {
	URL       string `json:"url"`
	Subdomain string `json:"subdomain"`
	Port      int    `json:"port"`
}

// wirePolicy is the response form of a network policy (v1 and v2 alike).
type wirePolicy struct {
	Mode           string   `json:"mode"`
	AllowedDomains []string `json:"allowedDomains,omitempty"`
	AllowedCIDRs   []string `json:"allowedCIDRs,omitempty"`
	DeniedCIDRs    []string `json:"deniedCIDRs,omitempty"`
}

// wireCommand is a command; v2 names its session, v1 its sandbox.
type wireCommand struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Args       []string `json:"args"`
	Cwd        string   `json:"cwd"`
	SessionID  string   `json:"sessionId,omitempty"`
	SandboxID  string   `json:"sandboxId,omitempty"`
	ExitCode   *int     `json:"exitCode"` // present and null while running
	DurationMs *int64   `json:"durationMs,omitempty"`
	StartedAt  int64    `json:"startedAt"`
}

// wireSnapshot is a snapshot; v2 names its source session, v1 its sandbox.
type wireSnapshot struct {
	ID              string `json:"id"`
	SourceSessionID string `json:"sourceSessionId,omitempty"`
	SourceSandboxID string `json:"sourceSandboxId,omitempty"`
	Region          string `json:"region"`
	Status          string `json:"status"`
	SizeBytes       int64  `json:"sizeBytes"`
	ExpiresAt       int64  `json:"expiresAt,omitempty"`
	CreatedAt       int64  `json:"createdAt"`
	UpdatedAt       int64  `json:"updatedAt"`
	LastUsedAt      int64  `json:"lastUsedAt,omitempty"`
	CreationMethod  string `json:"creationMethod,omitempty"`
	ParentID        string `json:"parentId,omitempty"`
}

// cursorPage is v2's pagination.
type cursorPage struct {
	Count int     `json:"count"`
	Next  *string `json:"next"`
}

// timePage is v1's pagination: timestamps to pass as until/since.
type timePage struct {
	Count int    `json:"count"`
	Next  *int64 `json:"next"`
	Prev  *int64 `json:"prev"`
}

// sandboxAndSession answers create, get, fork (v2).
type sandboxAndSession struct {
	Sandbox wireSandbox `json:"sandbox"`
	Session wireSession `json:"session"`
	Routes  []wireRoute `json:"routes"`
	Resumed bool        `json:"resumed,omitempty"`
}

// logLine is one NDJSON output line.
type logLine struct {
	Stream string `json:"stream"`
	Data   any    `json:"data"` // a string, or errorDetail for stream "error"
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// createV1Request is POST /v1/sandboxes. It is a type of its own, not
// createRequest, because decodeJSON refuses the fields its target lacks:
// v1 refuses v2's.
type createV1Request struct {
	ProjectID     string            `json:"projectId"`
	Ports         []int             `json:"ports"`
	Source        *sourceRequest    `json:"source"`
	Timeout       *int64            `json:"timeout"`
	Resources     *resourcesRequest `json:"resources"`
	Runtime       string            `json:"runtime"`
	NetworkPolicy *policyRequest    `json:"networkPolicy"`
	Env           map[string]string `json:"env"`
}

// createRequest is POST /v2/sandboxes and /v3/sandboxes: v1's and more.
type createRequest struct {
	createV1Request
	Image              string            `json:"image"`
	Name               string            `json:"name"`
	Persistent         *bool             `json:"persistent"`
	Tags               map[string]string `json:"tags"`
	Region             string            `json:"region"`
	FailoverRegions    []string          `json:"failoverRegions"`
	NetworkID          *string           `json:"networkId"`
	SnapshotExpiration *int64            `json:"snapshotExpiration"`
	KeepLastSnapshots  any               `json:"keepLastSnapshots"`
	Mounts             map[string]any    `json:"mounts"`
}

type sourceRequest struct {
	Type       string `json:"type"`
	URL        string `json:"url"`
	Depth      int    `json:"depth"`
	Revision   string `json:"revision"`
	Username   string `json:"username"`
	Password   string `json:"password"`
	SnapshotID string `json:"snapshotId"`
}

type resourcesRequest struct {
	VCPUs  float64 `json:"vcpus"`
	Memory int64   `json:"memory"`
}

// policyRequest is a network policy in any request form: {mode} for
// allow-all/deny-all, v2's {allow, subnets}, or v1's legacy custom form.
type policyRequest struct {
	Mode           string          `json:"mode"`
	Allow          any             `json:"allow"` // []string or map[domain][]rule
	Subnets        *subnetsRequest `json:"subnets"`
	AllowedDomains []string        `json:"allowedDomains"`
	AllowedCIDRs   []string        `json:"allowedCIDRs"`
	DeniedCIDRs    []string        `json:"deniedCIDRs"`
	InjectionRules []any           `json:"injectionRules"`
	ForwardRules   []any           `json:"forwardRules"`
}

type subnetsRequest struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// commandRequest is POST .../cmd.
type commandRequest struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Cwd     string            `json:"cwd"`
	Env     map[string]string `json:"env"`
	Sudo    bool              `json:"sudo"`
	Wait    bool              `json:"wait"`
	Logs    bool              `json:"logs"`
	Timeout int64             `json:"timeout"`
}

// pathRequest is fs/read and fs/mkdir.
type pathRequest struct {
	Path      string `json:"path"`
	Cwd       string `json:"cwd"`
	Recursive bool   `json:"recursive"`
}

// updateRequest is PATCH /v2/sandboxes/{name}. Pointers tell "absent"
// from "set"; fields the SDK may send as null to remove are json.RawMessage.
type updateRequest struct {
	Persistent         *bool             `json:"persistent"`
	Resources          *resourcesRequest `json:"resources"`
	Timeout            *int64            `json:"timeout"`
	NetworkPolicy      *policyRequest    `json:"networkPolicy"`
	NetworkID          any               `json:"networkId"`
	Tags               map[string]string `json:"tags"`
	Ports              *[]int            `json:"ports"`
	SnapshotExpiration *int64            `json:"snapshotExpiration"`
	KeepLastSnapshots  any               `json:"keepLastSnapshots"`
	CurrentSnapshotID  *string           `json:"currentSnapshotId"`
	Region             *string           `json:"region"`
	FailoverRegions    *[]string         `json:"failoverRegions"`
	Mounts             map[string]any    `json:"mounts"`
}
