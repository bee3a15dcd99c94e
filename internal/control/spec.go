package control

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Defaults and limits of a project's spec.
const (
	DefaultAppPort         = 3001
	DefaultHealthPath      = "/status"
	DefaultIdleTimeout     = 15 * time.Minute
	DefaultMaxLifetime     = 4 * time.Hour
	DefaultAppSecretHeader = "X-Secret-Key"
	// DefaultAppSecretEnv is the variable goosed reads its shared secret from.
	DefaultAppSecretEnv = "GOOSE_SERVER__SECRET_KEY"

	minIdleTimeout     = time.Second
	minHealthTimeout   = 100 * time.Millisecond
	maxHealthTimeout   = time.Hour
	minMaxLifetime     = 10 * time.Second
	maxMaxLifetime     = 24 * time.Hour
	maxEnvVars         = 256
	maxEnvValue        = 32 << 10
	maxCommandLen      = 64 << 10
	maxPersistentPaths = 16
	maxNameLen         = 63
)

var (
	// Compiled on first use, not at init: every paddock process starts with
	// them, including each sandbox's runc init.
	namePattern   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`) })
	envPattern    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`) })
	headerPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$") })
)

// reservedHeaders may not carry the app secret: the proxy and HTTP itself
// own them.
var reservedHeaders = []string{"Authorization", "Cookie", "Host", "Connection", "Content-Length",
	"Content-Type", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Proxy-Authorization", "Last-Event-Id"}

// forbiddenRoots are trees a persistent path may not be in: the kernel's,
// or paddock's own inside the sandbox.
var forbiddenRoots = []string{"/proc", "/sys", "/dev", "/.paddock", "/run/paddock"}

// normalize validates req and fills its defaults. Secrets are left as they
// are (nil keeps an update's old secrets).
func (req ProjectRequest) normalize() (ProjectRequest, error) {
	bad := func(code, format string, args ...any) (ProjectRequest, error) {
		return ProjectRequest{}, sandbox.Errorf(sandbox.ErrInvalid, code, format, args...)
	}
	if !namePattern().MatchString(req.Name) {
		return bad("invalid_name", "name must be 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit", maxNameLen)
	}
	switch {
	case req.Source.Image != "" && req.Source.Git != nil:
		return bad("invalid_source", "source must be an image or a git repository, not both")
	case req.Source.Image == "" && req.Source.Git == nil:
		return bad("invalid_source", "source needs an image or a git repository")
	case req.Source.Git != nil:
		g := *req.Source.Git
		if g.Type == "" {
			g.Type = sandbox.SourceGit
		}
		if g.Type != sandbox.SourceGit {
			return bad("invalid_source", "source.git.type must be %q", sandbox.SourceGit)
		}
		u, err := url.Parse(g.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("invalid_source", "source.git.url must be an http(s) URL")
		}
		if u.User != nil {
			return bad("invalid_source", "source.git.url must not carry credentials")
		}
		if g.Dir != "" && !cleanAbs(g.Dir) {
			return bad("invalid_source", "source.git.dir must be an absolute, clean path")
		}
		req.Source.Git = &g
	case len(req.Source.Image) > 512 || strings.ContainsAny(req.Source.Image, " \t\r\n\x00"):
		return bad("invalid_source", "source.image is not an image reference")
	}
	for what, cmd := range map[string]string{"install": req.Install, "start": req.Start} {
		if len(cmd) > maxCommandLen || strings.ContainsRune(cmd, 0) {
			return bad("invalid_command", "%s must be at most %d bytes with no NUL", what, maxCommandLen)
		}
	}
	if req.AppPort == 0 {
		req.AppPort = DefaultAppPort
	}
	if req.AppPort < 1 || req.AppPort > 65535 {
		return bad("invalid_port", "appPort must be in 1..65535, got %d", req.AppPort)
	}
	if req.HealthPath == "" {
		req.HealthPath = DefaultHealthPath
	}
	if u, err := url.Parse(req.HealthPath); err != nil || !strings.HasPrefix(req.HealthPath, "/") ||
		strings.HasPrefix(req.HealthPath, "//") || u.Host != "" || u.Fragment != "" || len(req.HealthPath) > 1024 ||
		strings.ContainsAny(req.HealthPath, " \t\r\n\x00") {
		return bad("invalid_health_path", "healthPath must be a path starting with '/'")
	}
	if req.IdleTimeout == 0 {
		req.IdleTimeout = DefaultIdleTimeout
	}
	if req.MaxLifetime == 0 {
		req.MaxLifetime = DefaultMaxLifetime
	}
	if req.MaxLifetime < minMaxLifetime || req.MaxLifetime > maxMaxLifetime {
		return bad("invalid_timeout", "maxLifetime must be in [%s, %s]", minMaxLifetime, maxMaxLifetime)
	}
	if req.IdleTimeout < minIdleTimeout || req.IdleTimeout > req.MaxLifetime {
		return bad("invalid_timeout", "idleTimeout must be in [%s, maxLifetime]", minIdleTimeout)
	}
	if req.HealthTimeout != 0 && (req.HealthTimeout < minHealthTimeout || req.HealthTimeout > maxHealthTimeout) {
		return bad("invalid_timeout", "healthTimeout must be 0 (the host's default) or in [%s, %s]", minHealthTimeout, maxHealthTimeout)
	}
	if r := req.Resources; r.VCPUs < 0 || r.MemoryMB < 0 || r.PIDs < 0 || r.DiskMB < 0 {
		return bad("invalid_resources", "resources must not be negative")
	}
	if len(req.PersistentPaths) > maxPersistentPaths {
		return bad("invalid_path", "at most %d persistent paths", maxPersistentPaths)
	}
	paths := slices.Clone(req.PersistentPaths)
	for i, p := range paths {
		if !cleanAbs(p) || p == "/" || len(p) > 1024 {
			return bad("invalid_path", "persistent path %q must be absolute, clean and not /", p)
		}
		for _, root := range forbiddenRoots {
			if within(p, root) {
				return bad("invalid_path", "persistent path %q is under %s", p, root)
			}
		}
		for _, q := range paths[:i] {
			if within(p, q) || within(q, p) {
				return bad("invalid_path", "persistent paths %q and %q overlap", q, p)
			}
		}
	}
	req.PersistentPaths = paths
	if req.AppSecretHeader == "" {
		req.AppSecretHeader = DefaultAppSecretHeader
	}
	req.AppSecretHeader = http.CanonicalHeaderKey(req.AppSecretHeader)
	if !headerPattern().MatchString(req.AppSecretHeader) || slices.Contains(reservedHeaders, req.AppSecretHeader) {
		return bad("invalid_header", "appSecretHeader %q is not a header the proxy may set", req.AppSecretHeader)
	}
	if req.AppSecretEnv == "" {
		req.AppSecretEnv = DefaultAppSecretEnv
	}
	if !envPattern().MatchString(req.AppSecretEnv) {
		return bad("invalid_env", "appSecretEnv %q is not a variable name", req.AppSecretEnv)
	}
	if len(req.Env)+len(req.Secrets) > maxEnvVars {
		return bad("invalid_env", "at most %d env vars and secrets", maxEnvVars)
	}
	for what, m := range map[string]map[string]string{"env": req.Env, "secrets": req.Secrets} {
		for k, v := range m {
			if !envPattern().MatchString(k) {
				return bad("invalid_env", "%s name %q is not a variable name", what, k)
			}
			if len(v) > maxEnvValue || strings.ContainsRune(v, 0) {
				return bad("invalid_env", "%s %s must be at most %d bytes with no NUL", what, k, maxEnvValue)
			}
			if k == req.AppSecretEnv {
				return bad("invalid_env", "%s %s is the app secret's variable", what, k)
			}
		}
	}
	for k := range req.Secrets {
		if _, ok := req.Env[k]; ok {
			return bad("invalid_env", "%s is both an env var and a secret", k)
		}
	}
	if err := sandbox.ValidateLabels(req.Labels); err != nil {
		return ProjectRequest{}, err
	}
	return req, nil
}

func cleanAbs(p string) bool { return path.IsAbs(p) && path.Clean(p) == p }

// within reports whether p is root or below it.
func within(p, root string) bool {
	return p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/")
}

// specDoc is store.Project.Spec: the normalized request with its secrets
// and the app secret sealed with the Service's key.
type specDoc struct {
	Source      Source            `json:"source"`
	Install     string            `json:"install,omitempty"`
	Start       string            `json:"start,omitempty"`
	AppPort     int               `json:"appPort"`
	HealthPath  string            `json:"healthPath"`
	Env         map[string]string `json:"env,omitempty"`
	SecretNames []string          `json:"secretNames,omitempty"`
	Secrets     []byte            `json:"secrets,omitempty"` // sealed JSON map
	// GitCredentials are the git source's Username, Password and Token,
	// sealed like the secrets (sandbox.Source never serializes them).
	GitCredentials  []byte            `json:"gitCredentials,omitempty"`
	AppSecret       []byte            `json:"appSecret"` // sealed
	Resources       sandbox.Resources `json:"resources,omitzero"`
	IdleTimeoutMs   int64             `json:"idleTimeoutMs"`
	MaxLifetimeMs   int64             `json:"maxLifetimeMs"`
	HealthTimeoutMs int64             `json:"healthTimeoutMs,omitempty"`
	PersistentPaths []string          `json:"persistentPaths,omitempty"`
	AppSecretHeader string            `json:"appSecretHeader"`
	AppSecretEnv    string            `json:"appSecretEnv"`
	Labels          map[string]string `json:"labels,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
}

func (d *specDoc) view() ProjectSpec {
	src := d.Source
	if src.Git != nil {
		g := *src.Git
		g.Username, g.Password, g.Token = "", "", ""
		src.Git = &g
	}
	return ProjectSpec{
		Source: src, Install: d.Install, Start: d.Start, AppPort: d.AppPort, HealthPath: d.HealthPath,
		Env: d.Env, SecretNames: d.SecretNames, Resources: d.Resources,
		IdleTimeout: d.idleTimeout(), MaxLifetime: d.maxLifetime(), HealthTimeout: msDuration(d.HealthTimeoutMs),
		PersistentPaths: d.PersistentPaths, AppSecretHeader: d.AppSecretHeader, AppSecretEnv: d.AppSecretEnv,
		Labels: d.Labels, Runtime: d.Runtime,
	}
}

func (d *specDoc) idleTimeout() time.Duration { return msDuration(d.IdleTimeoutMs) }
func (d *specDoc) maxLifetime() time.Duration { return msDuration(d.MaxLifetimeMs) }

// healthTimeout is the project's own bound on the health check, else def.
func (d *specDoc) healthTimeout(def time.Duration) time.Duration {
	if d.HealthTimeoutMs > 0 {
		return msDuration(d.HealthTimeoutMs)
	}
	return def
}

// gitCredentials is what GitCredentials seals.
type gitCredentials struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
}

// sealGit seals the request's git credentials, if any, into d.
func (d *specDoc) sealGit(s *sealer, projectID string, src Source) {
	d.GitCredentials = nil
	if g := src.Git; g != nil && (g.Username != "" || g.Password != "" || g.Token != "") {
		plain, _ := json.Marshal(gitCredentials{g.Username, g.Password, g.Token})
		d.GitCredentials = s.seal(projectID, plain)
	}
}

// gitSource returns the project's git source with its credentials opened.
func (d *specDoc) gitSource(s *sealer, projectID string) (*sandbox.Source, error) {
	if d.Source.Git == nil {
		return nil, nil
	}
	g := *d.Source.Git
	if len(d.GitCredentials) > 0 {
		plain, err := s.open(projectID, d.GitCredentials)
		if err != nil {
			return nil, err
		}
		var c gitCredentials
		if err := json.Unmarshal(plain, &c); err != nil {
			return nil, fmt.Errorf("decode git credentials of project %s: %w", projectID, err)
		}
		g.Username, g.Password, g.Token = c.Username, c.Password, c.Token
	}
	return &g, nil
}

// fill sets d from a normalized request; secrets are sealed separately.
func (d *specDoc) fill(req ProjectRequest) {
	d.Source, d.Install, d.Start, d.AppPort, d.HealthPath = req.Source, req.Install, req.Start, req.AppPort, req.HealthPath
	d.Env, d.Resources, d.PersistentPaths = req.Env, req.Resources, req.PersistentPaths
	d.IdleTimeoutMs, d.MaxLifetimeMs = req.IdleTimeout.Milliseconds(), req.MaxLifetime.Milliseconds()
	d.HealthTimeoutMs = req.HealthTimeout.Milliseconds()
	d.AppSecretHeader, d.AppSecretEnv = req.AppSecretHeader, req.AppSecretEnv
	d.Labels, d.Runtime = req.Labels, req.Runtime
}

func decodeSpec(raw json.RawMessage) (*specDoc, error) {
	var d specDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("decode project spec: %w", err)
	}
	return &d, nil
}

// sealer encrypts secrets at rest with AES-GCM. The project's ID is the
// additional data, so a sealed value copied into another project's spec
// does not open.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return &sealer{aead}, nil
}

func (s *sealer) seal(projectID string, plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand panics rather)
	return s.aead.Seal(nonce, nonce, plain, []byte(projectID))
}

func (s *sealer) open(projectID string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("sealed value of project %s is truncated", projectID)
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(projectID))
	if err != nil {
		return nil, fmt.Errorf("open sealed value of project %s (wrong secrets key?): %w", projectID, err)
	}
	return plain, nil
}

func (s *sealer) sealSecrets(projectID string, secrets map[string]string) ([]byte, []string) {
	if len(secrets) == 0 {
		return nil, nil
	}
	plain, _ := json.Marshal(secrets) // a map of strings always encodes
	names := make([]string, 0, len(secrets))
	for k := range secrets {
		names = append(names, k)
	}
	sort.Strings(names)
	return s.seal(projectID, plain), names
}

func (s *sealer) openSecrets(projectID string, sealed []byte) (map[string]string, error) {
	if len(sealed) == 0 {
		return nil, nil
	}
	plain, err := s.open(projectID, sealed)
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, fmt.Errorf("decode secrets of project %s: %w", projectID, err)
	}
	return m, nil
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ProjectRequest and ProjectSpec write their durations as milliseconds, as
// the rest of the API does (durationMs). Each marshals through a copy of its
// own type without methods (so no recursion) with durationsMs beside it, so
// that a field added to either type is in its JSON with no second list to
// keep in step. A zero duration is left out: the request's "use the
// default"; a spec's idle timeout and lifetime are never zero.
type durationsMs struct {
	IdleTimeoutMs   int64 `json:"idleTimeoutMs,omitempty"`
	MaxLifetimeMs   int64 `json:"maxLifetimeMs,omitempty"`
	HealthTimeoutMs int64 `json:"healthTimeoutMs,omitempty"`
}

func toMs(idle, life, health time.Duration) durationsMs {
	return durationsMs{idle.Milliseconds(), life.Milliseconds(), health.Milliseconds()}
}

func (d durationsMs) durations() (idle, life, health time.Duration) {
	return msDuration(d.IdleTimeoutMs), msDuration(d.MaxLifetimeMs), msDuration(d.HealthTimeoutMs)
}

// MarshalJSON writes the durations in milliseconds.
func (req ProjectRequest) MarshalJSON() ([]byte, error) {
	type plain ProjectRequest
	return json.Marshal(struct {
		plain
		durationsMs
	}{plain(req), toMs(req.IdleTimeout, req.MaxLifetime, req.HealthTimeout)})
}

// UnmarshalJSON reads the durations from milliseconds.
func (req *ProjectRequest) UnmarshalJSON(b []byte) error {
	type plain ProjectRequest
	var j struct {
		plain
		durationsMs
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*req = ProjectRequest(j.plain)
	req.IdleTimeout, req.MaxLifetime, req.HealthTimeout = j.durations()
	return nil
}

// MarshalJSON writes the durations in milliseconds.
func (s ProjectSpec) MarshalJSON() ([]byte, error) {
	type plain ProjectSpec
	return json.Marshal(struct {
		plain
		durationsMs
	}{plain(s), toMs(s.IdleTimeout, s.MaxLifetime, s.HealthTimeout)})
}

// UnmarshalJSON reads the durations from milliseconds.
func (s *ProjectSpec) UnmarshalJSON(b []byte) error {
	type plain ProjectSpec
	var j struct {
		plain
		durationsMs
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = ProjectSpec(j.plain)
	s.IdleTimeout, s.MaxLifetime, s.HealthTimeout = j.durations()
	return nil
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
