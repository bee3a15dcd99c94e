package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// TokenPrefix marks paddock API tokens so they are recognisable in leaks
// and logs, and tells them apart from JWTs without parsing.
const TokenPrefix = "pdk_"

// E2BKeyPrefix starts the API keys the E2B SDKs accept: they check a key
// against ^e2b_[0-9a-f]+$ before sending it. Such a key is a paddock token
// like any other (hashed at rest, a team and a role), in E2B's spelling.
const E2BKeyPrefix = "e2b_"

// TokenFormat is how a token's secret is spelled.
type TokenFormat string

const (
	// FormatPaddock: "pdk_" and 43 base64url characters.
	FormatPaddock TokenFormat = ""
	// FormatE2B: "e2b_" and 40 lowercase hex digits (160 random bits), the
	// shape E2B's SDKs validate.
	FormatE2B TokenFormat = "e2b"
)

// The bootstrap team and its first admin token. Admins of this team are
// host admins (see the package comment).
const (
	BootstrapTeamID   = "default"
	BootstrapTeamName = "default"
	AdminTokenName    = "admin"
)

// MaxTokenTTL bounds an API token's life; 0 at creation means no expiry.
const MaxTokenTTL = 10 * 365 * 24 * time.Hour

// HashToken is the SHA-256 kept at rest for a token's secret.
func HashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func (a *Authenticator) authenticateToken(ctx context.Context, secret string) (Principal, error) {
	h := HashToken(secret)
	// The lookup is by hash, not by secret: timing of the index search
	// tells an attacker about the hash of their guess, which they know
	// already. The compare below is belt and braces for a store whose
	// lookup is not exact (a prefix index, a case-folding collation).
	t, err := a.store.GetTokenByHash(ctx, h)
	if isNotFound(err) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up token: %w", err)
	}
	if subtle.ConstantTimeCompare(t.Hash, h) != 1 {
		return Principal{}, ErrInvalidToken
	}
	if !t.ExpiresAt.IsZero() && !a.now().Before(t.ExpiresAt) {
		return Principal{}, ErrExpiredToken
	}
	return Principal{
		TeamID:    t.TeamID,
		UserID:    t.UserID,
		TokenID:   t.ID,
		Name:      t.Name,
		Role:      t.Role,
		HostAdmin: isHostAdmin(t.TeamID, t.Role),
	}, nil
}

// CreateToken makes an API token for teamID (and optionally one of its
// users) and returns its secret, which exists only in this answer: the
// store keeps its hash. ttl 0 means the token does not expire. Callers
// check that the principal may do this (Principal.CanAdminTeam).
func (a *Authenticator) CreateToken(ctx context.Context, teamID, userID, name, role string, ttl time.Duration) (string, store.Token, error) {
	return a.CreateTokenFormat(ctx, FormatPaddock, teamID, userID, name, role, ttl)
}

// CreateTokenFormat is CreateToken with the secret spelled in format.
func (a *Authenticator) CreateTokenFormat(ctx context.Context, format TokenFormat, teamID, userID, name, role string, ttl time.Duration) (string, store.Token, error) {
	return a.createToken(ctx, "", format, teamID, userID, name, role, ttl)
}

// createToken is CreateTokenFormat under a given id ("" for a fresh one).
func (a *Authenticator) createToken(ctx context.Context, id string, format TokenFormat, teamID, userID, name, role string, ttl time.Duration) (string, store.Token, error) {
	if format != FormatPaddock && format != FormatE2B {
		return "", store.Token{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_token_format", "unknown token format %q (want \"\" or \"e2b\")", format)
	}
	if err := validName("token", name); err != nil {
		return "", store.Token{}, err
	}
	if err := validRole(role); err != nil {
		return "", store.Token{}, err
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return "", store.Token{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_ttl", "a token's ttl must be between 0 (no expiry) and %s", MaxTokenTTL)
	}
	if _, err := a.store.GetTeam(ctx, teamID); err != nil {
		return "", store.Token{}, fmt.Errorf("create token: %w", err)
	}
	if userID != "" {
		u, err := a.store.GetUser(ctx, userID)
		if err != nil {
			return "", store.Token{}, fmt.Errorf("create token: %w", err)
		}
		if u.TeamID != teamID {
			return "", store.Token{}, store.NotFound("user", userID)
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", store.Token{}, fmt.Errorf("generate token: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	if format == FormatE2B {
		secret = E2BKeyPrefix + hex.EncodeToString(raw[:20])
	}
	if id == "" {
		var err error
		if id, err = newID("tok"); err != nil {
			return "", store.Token{}, err
		}
	}
	now := a.now().UTC()
	t := store.Token{ID: id, TeamID: teamID, UserID: userID, Name: name, Hash: HashToken(secret), Role: role, CreatedAt: now}
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl)
	}
	if err := a.store.CreateToken(ctx, t); err != nil {
		return "", store.Token{}, fmt.Errorf("create token: %w", err)
	}
	a.log.Info("token created", "team", teamID, "token", id, "name", name, "role", role)
	return secret, t, nil
}

// ListTokens lists a team's tokens (hashes only; callers drop them).
func (a *Authenticator) ListTokens(ctx context.Context, teamID string) ([]store.Token, error) {
	ts, err := a.store.ListTokens(ctx, teamID)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// GetToken finds a token by id within teamID, or within any team when
// teamID is "" (a host admin's view). Another team's token is not found.
func (a *Authenticator) GetToken(ctx context.Context, teamID, id string) (store.Token, error) {
	ts, err := a.store.ListTokens(ctx, teamID)
	if err != nil {
		return store.Token{}, fmt.Errorf("list tokens: %w", err)
	}
	for _, t := range ts {
		if t.ID == id {
			return t, nil
		}
	}
	return store.Token{}, store.NotFound("token", id)
}

// DeleteToken revokes a token of teamID ("" = any team). The next request
// with its secret is refused: nothing caches tokens.
func (a *Authenticator) DeleteToken(ctx context.Context, teamID, id string) error {
	t, err := a.GetToken(ctx, teamID, id)
	if err != nil {
		return err
	}
	if err := a.store.DeleteToken(ctx, t.ID); err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	a.log.Info("token deleted", "team", t.TeamID, "token", t.ID, "name", t.Name)
	return nil
}

// bootstrapTokenID is the id of the admin token Bootstrap makes.
const bootstrapTokenID = "tok-bootstrap-admin"

// Bootstrap prepares a fresh store: the bootstrap team and its admin token.
// It returns the token's secret and created=true only the first time; the
// secret cannot be recovered later, only replaced (ResetAdminToken).
func (a *Authenticator) Bootstrap(ctx context.Context) (secret string, created bool, err error) {
	if err := a.ensureBootstrapTeam(ctx); err != nil {
		return "", false, err
	}
	ts, err := a.store.ListTokens(ctx, BootstrapTeamID)
	if err != nil {
		return "", false, fmt.Errorf("bootstrap: %w", err)
	}
	for _, t := range ts {
		if t.Name == AdminTokenName {
			return "", false, nil
		}
	}
	// Under a fixed id, so that of replicas starting together on an empty
	// store exactly one makes the token (and prints its secret); the
	// others meet the store's conflict.
	secret, _, err = a.createToken(ctx, bootstrapTokenID, FormatPaddock, BootstrapTeamID, "", AdminTokenName, store.RoleAdmin, 0)
	if errors.Is(err, sandbox.ErrConflict) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("bootstrap: %w", err)
	}
	return secret, true, nil
}

// ResetAdminToken revokes every token named AdminTokenName in the
// bootstrap team and returns the secret of a new one: the way back in for
// an operator who lost the admin token.
func (a *Authenticator) ResetAdminToken(ctx context.Context) (string, error) {
	if err := a.ensureBootstrapTeam(ctx); err != nil {
		return "", err
	}
	ts, err := a.store.ListTokens(ctx, BootstrapTeamID)
	if err != nil {
		return "", fmt.Errorf("reset admin token: %w", err)
	}
	for _, t := range ts {
		if t.Name != AdminTokenName {
			continue
		}
		if err := a.store.DeleteToken(ctx, t.ID); err != nil && !isNotFound(err) {
			return "", fmt.Errorf("reset admin token: %w", err)
		}
	}
	secret, _, err := a.CreateToken(ctx, BootstrapTeamID, "", AdminTokenName, store.RoleAdmin, 0)
	if err != nil {
		return "", fmt.Errorf("reset admin token: %w", err)
	}
	return secret, nil
}

func (a *Authenticator) ensureBootstrapTeam(ctx context.Context) error {
	_, err := a.store.GetTeam(ctx, BootstrapTeamID)
	if !isNotFound(err) {
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		return nil
	}
	err = a.store.CreateTeam(ctx, store.Team{ID: BootstrapTeamID, Name: BootstrapTeamName, CreatedAt: a.now().UTC()})
	if err != nil && !errors.Is(err, sandbox.ErrConflict) { // another replica made it first
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// CreateTeam makes a team with a fresh id. Host admins only: callers check.
func (a *Authenticator) CreateTeam(ctx context.Context, name string) (store.Team, error) {
	if err := validName("team", name); err != nil {
		return store.Team{}, err
	}
	id, err := newID("team")
	if err != nil {
		return store.Team{}, err
	}
	t := store.Team{ID: id, Name: name, CreatedAt: a.now().UTC()}
	if err := a.store.CreateTeam(ctx, t); err != nil {
		return store.Team{}, fmt.Errorf("create team: %w", err)
	}
	a.log.Info("team created", "team", id, "name", name)
	return t, nil
}

// ListTeams lists every team.
func (a *Authenticator) ListTeams(ctx context.Context) ([]store.Team, error) {
	ts, err := a.store.ListTeams(ctx)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	return ts, nil
}

// GetTeam returns one team.
func (a *Authenticator) GetTeam(ctx context.Context, id string) (store.Team, error) {
	return a.store.GetTeam(ctx, id)
}

// CreateUser adds a user to u.TeamID; its ID and CreatedAt are set here.
// An OIDC user needs Issuer and Subject (the value of the configured claim).
func (a *Authenticator) CreateUser(ctx context.Context, u store.User) (store.User, error) {
	if err := validRole(u.Role); err != nil {
		return store.User{}, err
	}
	if (u.Issuer == "") != (u.Subject == "") {
		return store.User{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_user", "give both issuer and subject, or neither")
	}
	if u.Subject == "" && u.Email == "" && u.Name == "" {
		return store.User{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_user", "a user needs a subject, an email or a name")
	}
	for field, v := range map[string]string{"issuer": u.Issuer, "subject": u.Subject, "email": u.Email, "name": u.Name} {
		if len(v) > 512 || strings.ContainsFunc(v, unicode.IsControl) {
			return store.User{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_user", "%s is longer than 512 bytes or has control characters", field)
		}
	}
	if _, err := a.store.GetTeam(ctx, u.TeamID); err != nil {
		return store.User{}, fmt.Errorf("create user: %w", err)
	}
	id, err := newID("usr")
	if err != nil {
		return store.User{}, err
	}
	u.ID, u.CreatedAt = id, a.now().UTC()
	if err := a.store.CreateUser(ctx, u); err != nil {
		return store.User{}, fmt.Errorf("create user: %w", err)
	}
	a.log.Info("user created", "team", u.TeamID, "user", u.ID, "role", u.Role)
	return u, nil
}

// ListUsers lists a team's users.
func (a *Authenticator) ListUsers(ctx context.Context, teamID string) ([]store.User, error) {
	us, err := a.store.ListUsers(ctx, teamID)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// DeleteUser removes a user of teamID ("" = any team; another team's user
// is not found) and revokes its tokens first, so a token never outlives
// the person it belonged to. Its OIDC identity is free to be bound again.
func (a *Authenticator) DeleteUser(ctx context.Context, teamID, id string) error {
	u, err := a.store.GetUser(ctx, id)
	if err != nil || (teamID != "" && u.TeamID != teamID) {
		if err == nil || isNotFound(err) {
			return sandbox.Errorf(sandbox.ErrNotFound, "user_not_found", "user %q not found", id)
		}
		return fmt.Errorf("delete user: %w", err)
	}
	toks, err := a.store.ListTokens(ctx, u.TeamID)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	for _, t := range toks {
		if t.UserID != u.ID {
			continue
		}
		if err := a.store.DeleteToken(ctx, t.ID); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete user: revoke token %s: %w", t.ID, err)
		}
	}
	if err := a.store.DeleteUser(ctx, u.ID); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	a.log.Info("user deleted", "team", u.TeamID, "user", u.ID)
	return nil
}

func validRole(role string) error {
	if role != store.RoleAdmin && role != store.RoleMember {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_role", "role must be %q or %q, got %q", store.RoleAdmin, store.RoleMember, role)
	}
	return nil
}

func validName(what, name string) error {
	if name == "" || len(name) > 128 || strings.ContainsFunc(name, unicode.IsControl) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_name", "a %s name must be 1 to 128 bytes without control characters", what)
	}
	return nil
}

// idEncoding is lowercase base32 without padding, the alphabet of
// sandbox ids, so ids are safe in paths and URLs.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newID(prefix string) (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate %s id: %w", prefix, err)
	}
	return prefix + "-" + idEncoding.EncodeToString(b[:]), nil
}

func isNotFound(err error) bool { return errors.Is(err, sandbox.ErrNotFound) }

// ImportHostAdminToken adds a token known only by its SHA-256 (a token of
// the file store paddock kept before teams) as a host admin token, so the
// secrets already handed out keep working. An already imported hash is
// not an error.
func (a *Authenticator) ImportHostAdminToken(ctx context.Context, name string, hash []byte, createdAt time.Time) error {
	if len(hash) != sha256.Size {
		return fmt.Errorf("import token %q: hash is %d bytes, want %d", name, len(hash), sha256.Size)
	}
	if err := a.ensureBootstrapTeam(ctx); err != nil {
		return err
	}
	if _, err := a.store.GetTokenByHash(ctx, hash); err == nil {
		return nil
	}
	id, err := newID("tok")
	if err != nil {
		return err
	}
	if createdAt.IsZero() {
		createdAt = a.now()
	}
	t := store.Token{ID: id, TeamID: BootstrapTeamID, Name: name, Hash: hash, Role: store.RoleAdmin, CreatedAt: createdAt.UTC()}
	if err := a.store.CreateToken(ctx, t); err != nil && !errors.Is(err, sandbox.ErrConflict) {
		return fmt.Errorf("import token %q: %w", name, err)
	}
	return nil
}
