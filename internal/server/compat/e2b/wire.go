package e2b

import "time"

// The REST control plane's messages, as E2B's SDKs send and read them:
// paddock's own definitions of the protocol's field names.

// newSandbox is the body of POST /sandboxes.
type newSandbox struct {
	TemplateID string `json:"templateID"`
	// Timeout is in seconds.
	Timeout             *int64            `json:"timeout"`
	AutoPause           bool              `json:"autoPause"`
	Secure              bool              `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Network             *networkConfig    `json:"network"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	// Known but not served yet: refused when they ask for something.
	AutoPauseMemory *bool `json:"autoPauseMemory"`
	AutoResume      *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
	MCP          map[string]any `json:"mcp"`
	VolumeMounts []any          `json:"volumeMounts"`
}

// networkConfig is a create's or an update's egress rules.
type networkConfig struct {
	AllowPublicTraffic *bool    `json:"allowPublicTraffic,omitempty"`
	AllowOut           []string `json:"allowOut,omitempty"`
	DenyOut            []string `json:"denyOut,omitempty"`
	MaskRequestHost    string   `json:"maskRequestHost,omitempty"`
	// Rules inject headers into egress requests: not served.
	Rules map[string]any `json:"rules,omitempty"`
}

// sandboxWire answers create and connect.
type sandboxWire struct {
	TemplateID  string `json:"templateID"`
	SandboxID   string `json:"sandboxID"`
	Alias       string `json:"alias,omitempty"`
	ClientID    string `json:"clientID"`
	EnvdVersion string `json:"envdVersion"`
	Domain      string `json:"domain,omitempty"`
	// EnvdAccessToken is the sandbox's envd credential (X-Access-Token),
	// TrafficAccessToken the one of its private ports
	// (e2b-traffic-access-token): see envd.Tokens.
	EnvdAccessToken    string `json:"envdAccessToken,omitempty"`
	TrafficAccessToken string `json:"trafficAccessToken,omitempty"`
}

// sandboxDetail answers GET /sandboxes/{id} and the lists.
type sandboxDetail struct {
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	SandboxID   string            `json:"sandboxID"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	EnvdVersion string            `json:"envdVersion"`
	Domain      string            `json:"domain,omitempty"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int64             `json:"memoryMB"`
	DiskSizeMB  int64             `json:"diskSizeMB"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	State       string            `json:"state"`
}

// timeoutBody is the body of POST .../timeout, .../connect and .../resume.
type timeoutBody struct {
	Timeout   *int64 `json:"timeout"`
	AutoPause *bool  `json:"autoPause,omitempty"`
	// Memory false asks a resume to boot from the filesystem (paddock's
	// only way); true asks for memory kept, which paddock cannot.
	Memory *bool `json:"memory,omitempty"`
}

// metric is one point of GET .../metrics.
type metric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

// snapshotInfo answers POST .../snapshots and lists GET /snapshots.
type snapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// errorBody is E2B's error shape: the HTTP status again, and a message.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// record is the layer's document in store.E2BSandbox.Data.
type record struct {
	TemplateID string            `json:"templateID"`
	Alias      string            `json:"alias,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	AutoPause  bool              `json:"autoPause,omitempty"`
}
