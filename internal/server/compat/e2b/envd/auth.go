package envd

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// MinSecretLen is the shortest secret Tokens accepts.
const MinSecretLen = 32

// Tokens makes the two per-sandbox credentials of E2B's data plane: the
// envd access token (X-Access-Token, envdAccessToken in the control
// plane's answers) and the traffic token (e2b-traffic-access-token,
// trafficAccessToken) that opens the sandbox's private ports.
//
// Each is an HMAC-SHA256 of the sandbox id under a key derived from
// paddock's signing secret (the port proxy's key), one key per purpose.
// Stateless, so every replica that shares the secret checks a token without
// a store read or a record to keep, and a token is checked before the
// sandbox is looked up: a caller without one learns nothing about which
// sandboxes exist. Sandbox ids are random and never reused, so a token
// dies with its sandbox. Only the owning team receives a sandbox's tokens
// (from create or connect, which check the team).
type Tokens struct {
	access, traffic []byte
}

// NewTokens derives the token keys from secret.
func NewTokens(secret []byte) (*Tokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("envd tokens: the secret has %d bytes, want at least %d", len(secret), MinSecretLen)
	}
	derive := func(purpose string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(purpose))
		return m.Sum(nil)
	}
	return &Tokens{access: derive("paddock e2b envd access token v1"), traffic: derive("paddock e2b traffic token v1")}, nil
}

func mac(key []byte, sandboxID string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sandboxID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Access is sandboxID's envd access token.
func (t *Tokens) Access(sandboxID string) string { return mac(t.access, sandboxID) }

// Traffic is sandboxID's traffic token.
func (t *Tokens) Traffic(sandboxID string) string { return mac(t.traffic, sandboxID) }

// equalToken compares in constant time.
func equalToken(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

var (
	errNoToken = sandbox.Errorf(sandbox.ErrUnauthorized, "missing_access_token",
		"missing %s: the sandbox's envdAccessToken from create or connect", HeaderAccessToken)
	errBadToken = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_access_token",
		"invalid access token for this sandbox")
	errBadSignature = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_signature",
		"invalid or expired signature for this file URL")
)

// authorize checks an envd request's credential for sandbox id and
// resolves its target. The token is checked before the sandbox is looked
// up; a running sandbox of that id is then the target (not found
// otherwise, unavailable while paused). A /files request may carry a URL
// signature (made with the access token) instead of the token.
func (h *Handler) authorize(r *http.Request, id string) (*target, error) {
	token := h.cfg.Tokens.Access(id)
	q := r.URL.Query()
	switch got := r.Header.Get(HeaderAccessToken); {
	case got != "":
		if !equalToken(got, token) {
			return nil, errBadToken
		}
	case r.URL.Path == "/files" && q.Get("signature") != "":
		op := "read"
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			op = "write"
		}
		if err := checkSignature(q.Get("path"), op, q.Get("username"), token,
			q.Get("signature"), q.Get("signature_expiration"), h.cfg.Now().Unix()); err != nil {
			return nil, err
		}
	default:
		return nil, errNoToken
	}
	ctx := r.Context()
	sb, err := h.cfg.Sandboxes.Get(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, err
	}
	switch sb.State {
	case sandbox.Running:
	case sandbox.Paused, sandbox.Pending:
		return nil, sandbox.Errorf(sandbox.ErrUnavailable, "sandbox_not_running", "sandbox %s is %s: connect resumes a paused sandbox", id, sb.State)
	default:
		return nil, notFound(id)
	}
	name, _, _ := r.BasicAuth()
	if r.URL.Path == "/files" && q.Has("username") {
		name = q.Get("username")
	}
	user, sudo, err := userOf(name)
	if err != nil {
		return nil, err
	}
	ag, err := h.cfg.Sandboxes.Agent(ctx, id)
	if err != nil {
		return nil, err
	}
	return &target{TeamID: sb.TeamID, SandboxID: id, Sandbox: sb, Agent: ag, User: user, Sudo: sudo, AccessToken: token}, nil
}

func notFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
}

// Users the SDKs name in Authorization: Basic base64("<user>:"). E2B's
// templates run commands as "user" unless "root" is asked for; paddock's
// sandboxes have an ordinary user (the image's, by default "user") and
// sudo, so "user" (or no name) is the sandbox's ordinary user and "root"
// is sudo. Other names are refused: paddock does not switch to arbitrary
// accounts.
const (
	UserDefault = "user"
	UserRoot    = "root"
)

// userOf maps the user a request names to the agent's sudo.
func userOf(name string) (user string, sudo bool, err error) {
	switch name {
	case "", UserDefault:
		return UserDefault, false, nil
	case UserRoot:
		return UserRoot, true, nil
	}
	return "", false, sandbox.Errorf(sandbox.ErrInvalid, "invalid_user",
		"user %q is not served: paddock runs as %q (the sandbox's ordinary user) or %q (sudo)", name, UserDefault, UserRoot)
}

// checkSignature checks a signed file URL as the SDKs make it: "v1_" and
// the unpadded base64 of sha256("path:operation:user:token[:expiration]"),
// expiration in Unix seconds (none: the URL does not expire).
func checkSignature(path, operation, user, token, signature, expiration string, now int64) error {
	raw := path + ":" + operation + ":" + user + ":" + token
	if expiration != "" {
		exp, err := strconv.ParseInt(expiration, 10, 64)
		if err != nil || now > exp {
			return errBadSignature
		}
		raw += ":" + expiration
	}
	sum := sha256.Sum256([]byte(raw))
	if !equalToken(signature, "v1_"+base64.RawStdEncoding.EncodeToString(sum[:])) {
		return errBadSignature
	}
	return nil
}
