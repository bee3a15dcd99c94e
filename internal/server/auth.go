package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Authenticator says who presents a bearer credential: an API token or an
// OIDC JWT. *auth.Authenticator implements it over the store;
// TokenStoreAuthenticator adapts the older file-backed TokenStore.
type Authenticator interface {
	// AuthenticateBearer returns the caller, or an error wrapping
	// sandbox.ErrUnauthorized (missing_token, invalid_token,
	// expired_token, unknown_user); other errors are internal.
	AuthenticateBearer(ctx context.Context, token string) (auth.Principal, error)
}

var _ Authenticator = (*auth.Authenticator)(nil)

// TokenStore authenticates API tokens kept in a file: the single-host
// store from before teams. Every one of its tokens is a host admin's.
type TokenStore interface {
	// Authenticate returns the token whose secret is given, or an error
	// wrapping sandbox.ErrUnauthorized.
	Authenticate(ctx context.Context, secret string) (Token, error)
}

// Token is what is known of a token at rest: never its secret.
type Token struct {
	Name      string    `json:"name"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	CreatedAt time.Time `json:"createdAt"`
}

// AdminTokenName is the name of the token EnsureAdminToken creates.
const AdminTokenName = "admin"

// tokenPrefix marks paddock tokens so they are recognisable in leaks and logs.
const tokenPrefix = "pdk_"

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// FileTokenStore keeps token hashes in DataDir/tokens.json (mode 0600,
// written atomically). It suits one host; secrets are never stored.
type FileTokenStore struct {
	path string
	now  func() time.Time

	mu     sync.Mutex // guards tokens and the file
	tokens []Token
}

var _ TokenStore = (*FileTokenStore)(nil)

type tokenFile struct {
	Tokens []Token `json:"tokens"`
}

// OpenFileTokenStore loads dataDir/tokens.json, or starts empty if it does not exist yet.
func OpenFileTokenStore(dataDir string) (*FileTokenStore, error) {
	s := &FileTokenStore{path: filepath.Join(dataDir, "tokens.json"), now: time.Now}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read token store: %w", err)
	}
	var f tokenFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse token store %s: %w", s.path, err)
	}
	s.tokens = f.Tokens
	return s, nil
}

// Authenticate compares the secret's hash with every stored hash in
// constant time, and does not stop at a match, so timing reveals nothing.
func (s *FileTokenStore) Authenticate(_ context.Context, secret string) (Token, error) {
	h := hashSecret(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	found, match := -1, 0
	for i, t := range s.tokens {
		stored, err := hex.DecodeString(t.Hash)
		if err != nil || len(stored) != len(h) {
			continue
		}
		if subtle.ConstantTimeCompare(stored, h) == 1 && match == 0 {
			found, match = i, 1
		}
	}
	if found < 0 {
		return Token{}, errInvalidToken
	}
	return s.tokens[found], nil
}

// Create makes a new token and returns its secret, which exists only in
// the answer: the store keeps its hash.
func (s *FileTokenStore) Create(name string) (string, Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createLocked(name)
}

func (s *FileTokenStore) createLocked(name string) (string, Token, error) {
	if name == "" {
		return "", Token{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_name", "token name is empty")
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Token{}, fmt.Errorf("generate token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	t := Token{Name: name, Hash: hex.EncodeToString(hashSecret(secret)), CreatedAt: s.now().UTC()}
	next := append(append([]Token(nil), s.tokens...), t)
	if err := s.save(next); err != nil {
		return "", Token{}, err
	}
	s.tokens = next
	return secret, t, nil
}

// List returns the stored tokens (hashes only).
func (s *FileTokenStore) List() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Token(nil), s.tokens...)
}

// EnsureAdminToken creates the admin token if the store has none and
// returns its secret; on later calls it returns "" and created false, since
// the secret cannot be recovered from its hash.
func (s *FileTokenStore) EnsureAdminToken() (secret string, created bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		if t.Name == AdminTokenName {
			return "", false, nil
		}
	}
	secret, _, err = s.createLocked(AdminTokenName)
	if err != nil {
		return "", false, err
	}
	return secret, true, nil
}

// save writes the file atomically: a temp file in the same directory,
// fsynced, renamed over the old one, so a crash leaves the old or the new
// file, never half of one.
func (s *FileTokenStore) save(tokens []Token) error {
	data, err := json.MarshalIndent(tokenFile{Tokens: tokens}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode token store: %w", err)
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create token store dir: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write token store: %w", err)
	}
	return nil
}

// TokenStoreAuthenticator adapts a TokenStore: its tokens predate teams and
// were all-powerful, so each authenticates as a host admin of the
// bootstrap team. It keeps callers of the file store working.
func TokenStoreAuthenticator(ts TokenStore) Authenticator { return tokenStoreAuth{ts} }

type tokenStoreAuth struct{ ts TokenStore }

func (a tokenStoreAuth) AuthenticateBearer(ctx context.Context, token string) (auth.Principal, error) {
	if token == "" {
		return auth.Principal{}, auth.ErrMissingToken
	}
	t, err := a.ts.Authenticate(ctx, token)
	if err != nil {
		if errors.Is(err, sandbox.ErrUnauthorized) {
			return auth.Principal{}, auth.ErrInvalidToken
		}
		return auth.Principal{}, err
	}
	return auth.Principal{TeamID: auth.BootstrapTeamID, Name: t.Name, Role: store.RoleAdmin, HostAdmin: true}, nil
}

// authenticate is the one auth check: every /api/v1 request carries a
// valid bearer credential, and the caller it names goes into the request's
// context (auth.FromContext). It runs before routing so that nothing about
// the API's shape leaks to anonymous callers.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.Prefix && !strings.HasPrefix(r.URL.Path, api.Prefix+"/") {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := auth.BearerToken(r.Header.Get("Authorization"))
		if !ok {
			s.writeError(w, r, auth.ErrMissingToken)
			return
		}
		p, err := s.auth.AuthenticateBearer(r.Context(), token)
		if err != nil {
			// Why a credential failed (bad signature, wrong audience) is
			// for the operator, never the caller.
			s.log.Debug("authentication refused", "path", r.URL.Path, "err", err)
			s.writeError(w, r, authErr(err))
			return
		}
		inner := r.WithContext(auth.WithPrincipal(r.Context(), p))
		next.ServeHTTP(w, inner)
		// The mux set the path values on the copy; the request log,
		// outside this middleware, reads them from the original.
		for _, k := range []string{"id", "cmd"} {
			if v := inner.PathValue(k); v != "" {
				r.SetPathValue(k, v)
			}
		}
	})
}

// authErr keeps a refusal's code and drops its detail (why a JWT failed
// is for the log, not the caller); other errors are internal.
func authErr(err error) error {
	if !errors.Is(err, sandbox.ErrUnauthorized) {
		return fmt.Errorf("authenticate: %w", err)
	}
	switch sandbox.CodeOf(err) {
	case "missing_token":
		return auth.ErrMissingToken
	case "expired_token":
		return auth.ErrExpiredToken
	case "unknown_user":
		return auth.ErrUnknownUser
	default:
		return auth.ErrInvalidToken
	}
}

// callerOf returns the request's principal. Every /api/v1 request has one
// (authenticate put it there); a handler reached some other way gets none
// and so may touch nothing.
func callerOf(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context())
	return p
}

// errSandboxNotFound is what another team's sandbox looks like: exactly
// what a sandbox that does not exist looks like.
func errSandboxNotFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
}

// checkSandboxOwner is the one ownership check of the sandbox API: routes
// under /sandboxes/{id} pass through it (see routes), so a handler never
// touches another team's sandbox. Host admins skip the lookup.
func (s *Server) checkSandboxOwner(ctx context.Context, p auth.Principal, id string) error {
	if p.HostAdmin {
		// The host's admin reaches every sandbox, but one that another
		// replica runs is served there (see writeError).
		if _, err := s.sb.Get(ctx, id); errors.As(err, new(*sandbox.ElsewhereError)) {
			return sandboxErr(id, err)
		}
		return nil
	}
	if !sandbox.ValidID(id) {
		return errSandboxNotFound(id)
	}
	sb, err := s.sb.Get(ctx, id)
	if ee := new(sandbox.ElsewhereError); errors.As(err, &ee) && !p.CanAccessTeam(ee.TeamID) {
		return errSandboxNotFound(id) // not worth a hop, and not to be told apart from none
	}
	if err != nil {
		return sandboxErr(id, err)
	}
	if !p.CanAccessTeam(sb.TeamID) {
		return errSandboxNotFound(id)
	}
	return nil
}

// ownedSandbox wraps the handler of a route under /sandboxes/{id}.
func (s *Server) ownedSandbox(h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.checkSandboxOwner(r.Context(), callerOf(r), r.PathValue("id")); err != nil {
			return err
		}
		return h(w, r)
	}
}

// isSandboxRoute reports whether a routeTable path names one sandbox.
func isSandboxRoute(path string) bool { return strings.HasPrefix(path, "/sandboxes/{id}") }

// The proxy asks the server whether an API token may open a sandbox's ports.
var _ proxy.Authorizer = (*Server)(nil)

// Authorize implements proxy.Authorizer with the API's own check: the
// bearer must authenticate and its team must own the sandbox. Another
// team's sandbox is not found, as in the API.
func (s *Server) Authorize(ctx context.Context, bearerToken, sandboxID string) error {
	p, err := s.auth.AuthenticateBearer(ctx, bearerToken)
	if err != nil {
		return authErr(err)
	}
	return s.checkSandboxOwner(ctx, p, sandboxID)
}

// ownCreate stamps a new sandbox with the caller's team and checks that
// the snapshot it starts from, if any, is the team's.
func (s *Server) ownCreate(r *http.Request, params *sandbox.CreateRequest) error {
	p := callerOf(r)
	params.TeamID = p.TeamID
	if params.Snapshot != "" && s.snaps != nil {
		if _, err := s.ownedSnapshot(r.Context(), p, params.Snapshot); err != nil {
			return err
		}
	}
	return nil
}

// listOwned lists the caller's team's sandboxes (a host admin's: all).
// The sandbox layer filters by team before paging, so a page holds only
// the team's sandboxes and its cursor names one of them, never another
// team's.
func (s *Server) listOwned(ctx context.Context, p auth.Principal, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	team, ok := p.ListTeam()
	if !ok {
		return []sandbox.Sandbox{}, "", nil
	}
	opts.TeamID = team
	opts.AllReplicas = true // any replica lists every replica's
	return s.sb.List(ctx, opts)
}

// ownedSnapshots lists the snapshots of the caller's team (a host
// admin's: every team's), whichever replica took them.
func (s *Server) ownedSnapshots(ctx context.Context, p auth.Principal) ([]*image.Snapshot, error) {
	team, ok := p.ListTeam()
	if !ok {
		return nil, nil
	}
	snaps, err := s.snaps.ListSnapshots(ctx, team)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return slices.DeleteFunc(snaps, func(snap *image.Snapshot) bool { return !p.CanAccessTeam(snap.TeamID) }), nil
}

// ownedSnapshot returns a snapshot of the caller's team; another team's
// is not found. Snapshots belong to their source sandbox's team.
func (s *Server) ownedSnapshot(ctx context.Context, p auth.Principal, id string) (*image.Snapshot, error) {
	snap, err := s.snaps.GetSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	if !p.CanAccessTeam(snap.TeamID) {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "snapshot_not_found", "snapshot %q not found", id)
	}
	return snap, nil
}
