package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
)

// Config wires an Authenticator.
type Config struct {
	Store store.Store // required: teams, users and token hashes
	// OIDC accepts JWTs from one issuer besides API tokens; nil accepts
	// API tokens only.
	OIDC   *OIDCConfig
	Logger *slog.Logger
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
}

// Validate reports a missing dependency or a bad OIDC setting.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("auth config: Store is required")
	}
	if c.OIDC != nil {
		if err := c.OIDC.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Authenticator turns a request's bearer credential into a Principal, and
// manages the API tokens it accepts. It is safe for concurrent use.
type Authenticator struct {
	store store.Store
	oidc  *oidcVerifier // nil without OIDC
	log   *slog.Logger
	now   func() time.Time
}

// New builds an Authenticator. With OIDC it fetches the issuer's discovery
// document (unless a JWKS URL is given), so ctx bounds that request.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{store: cfg.Store, log: cfg.Logger, now: cfg.Now}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if cfg.OIDC != nil {
		v, err := newOIDCVerifier(ctx, *cfg.OIDC, a.now)
		if err != nil {
			return nil, err
		}
		a.oidc = v
	}
	return a, nil
}

// Authenticate reads the request's Authorization: Bearer header.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	token, ok := BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return Principal{}, ErrMissingToken
	}
	return a.AuthenticateBearer(r.Context(), token)
}

// BearerToken returns the credential of an "Authorization: Bearer <token>"
// header value; the scheme is case-insensitive.
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// AuthenticateBearer checks one bearer credential: an API token (pdk_...,
// or e2b_... made for E2B's SDKs) or, with OIDC configured, a JWT. Errors wrap sandbox.ErrUnauthorized
// with the codes of errors.go, or are internal (the store failed).
func (a *Authenticator) AuthenticateBearer(ctx context.Context, token string) (Principal, error) {
	switch {
	case token == "":
		return Principal{}, ErrMissingToken
	case strings.HasPrefix(token, TokenPrefix), strings.HasPrefix(token, E2BKeyPrefix):
		return a.authenticateToken(ctx, token)
	case a.oidc != nil && strings.Count(token, ".") == 2:
		return a.authenticateJWT(ctx, token, "")
	default:
		return Principal{}, ErrInvalidToken
	}
}

// AuthenticateIDToken checks an ID token the dashboard's sign-in received
// from the issuer, as AuthenticateBearer does, and that its nonce is the
// one that sign-in sent.
func (a *Authenticator) AuthenticateIDToken(ctx context.Context, raw, nonce string) (Principal, error) {
	if a.oidc == nil || nonce == "" {
		return Principal{}, ErrInvalidToken
	}
	return a.authenticateJWT(ctx, raw, nonce)
}

func (a *Authenticator) authenticateJWT(ctx context.Context, raw, nonce string) (Principal, error) {
	issuer, subject, err := a.oidc.verify(ctx, raw, nonce)
	if err != nil {
		return Principal{}, err
	}
	u, err := a.store.GetUserBySubject(ctx, issuer, subject)
	if isNotFound(err) {
		u, err = a.provision(ctx, issuer, subject)
	}
	if err != nil {
		return Principal{}, err
	}
	name := u.Email
	if name == "" {
		name = u.Name
	}
	if name == "" {
		name = u.Subject
	}
	return Principal{
		TeamID:    u.TeamID,
		UserID:    u.ID,
		Name:      name,
		Role:      u.Role,
		HostAdmin: isHostAdmin(u.TeamID, u.Role),
	}, nil
}

// provision adds an unknown OIDC user to the configured default team as a
// member, or refuses them when no default team is configured.
func (a *Authenticator) provision(ctx context.Context, issuer, subject string) (store.User, error) {
	team := a.oidc.cfg.DefaultTeam
	if team == "" {
		return store.User{}, ErrUnknownUser
	}
	id, err := newID("usr")
	if err != nil {
		return store.User{}, err
	}
	u := store.User{ID: id, TeamID: team, Issuer: issuer, Subject: subject, Role: store.RoleMember, CreatedAt: a.now().UTC()}
	if a.oidc.cfg.UserClaim == "email" {
		u.Email = subject
	}
	if err := a.store.CreateUser(ctx, u); err != nil {
		// A concurrent first sign-in of the same user won the race.
		if got, gerr := a.store.GetUserBySubject(ctx, issuer, subject); gerr == nil {
			return got, nil
		}
		return store.User{}, fmt.Errorf("provision user %s: %w", subject, err)
	}
	a.log.Info("provisioned oidc user", "user", u.ID, "team", team, "subject", subject)
	return u, nil
}

// Issuer is the configured OIDC issuer, "" without OIDC.
func (a *Authenticator) Issuer() string {
	if a.oidc == nil {
		return ""
	}
	return a.oidc.cfg.Issuer
}
