package server

import (
	"context"
	"net/http"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Accounts manages teams, users and API tokens: the admin API. The handlers
// decide who may call what (auth.Principal's CanAdminTeam); Accounts only
// validates and stores. *auth.Authenticator implements it.
type Accounts interface {
	CreateTeam(ctx context.Context, name string) (store.Team, error)
	GetTeam(ctx context.Context, id string) (store.Team, error)
	ListTeams(ctx context.Context) ([]store.Team, error)
	CreateUser(ctx context.Context, u store.User) (store.User, error)
	ListUsers(ctx context.Context, teamID string) ([]store.User, error)
	// DeleteUser removes a user of teamID and revokes its tokens.
	DeleteUser(ctx context.Context, teamID, id string) error
	// CreateTokenFormat returns the new token's secret, spelled in format
	// (paddock's, or an E2B API key), shown once.
	CreateTokenFormat(ctx context.Context, format auth.TokenFormat, teamID, userID, name, role string, ttl time.Duration) (string, store.Token, error)
	ListTokens(ctx context.Context, teamID string) ([]store.Token, error)
	// DeleteToken revokes a token of teamID ("" = any team).
	DeleteToken(ctx context.Context, teamID, id string) error
	// Issuer is the OIDC issuer users sign in with, "" without OIDC.
	Issuer() string
}

var _ Accounts = (*auth.Authenticator)(nil)

var (
	errNoAccounts = sandbox.Errorf(sandbox.ErrUnsupported, "accounts_disabled",
		"this server keeps no teams or users (it runs with a token file)")
	errHostAdminRequired = sandbox.Errorf(sandbox.ErrForbidden, "host_admin_required", "only the host admin may do this")
	errAdminRequired     = sandbox.Errorf(sandbox.ErrForbidden, "admin_required", "only an admin of the team may do this")
)

// memberOf checks that p may see teamID. Another team looks like no team
// at all (404), so that team ids cannot be probed.
func memberOf(p auth.Principal, teamID string) error {
	if !sandbox.ValidID(teamID) || !p.CanAccessTeam(teamID) {
		return store.NotFound("team", teamID)
	}
	return nil
}

// adminOf checks that p may administer teamID: as memberOf, and the
// caller's own team without the admin role is 403.
func adminOf(p auth.Principal, teamID string) error {
	if err := memberOf(p, teamID); err != nil {
		return err
	}
	if !p.CanAdminTeam(teamID) {
		return errAdminRequired
	}
	return nil
}

func toAPITeam(t store.Team) api.Team {
	return api.Team{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt.UTC()}
}

func toAPIUser(u store.User) api.User {
	return api.User{ID: u.ID, TeamID: u.TeamID, Issuer: u.Issuer, Subject: u.Subject, Email: u.Email,
		Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt.UTC()}
}

func toAPIToken(t store.Token) api.Token {
	return api.Token{ID: t.ID, TeamID: t.TeamID, UserID: t.UserID, Name: t.Name, Role: t.Role,
		CreatedAt: t.CreatedAt.UTC(), ExpiresAt: utcOrZero(t.ExpiresAt)}
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	if !callerOf(r).HostAdmin {
		return errHostAdminRequired
	}
	var req api.CreateTeamRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	t, err := s.accounts.CreateTeam(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toAPITeam(t))
	return nil
}

// listTeams shows a host admin every team and anyone else their own.
func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	p := callerOf(r)
	var teams []store.Team
	if p.HostAdmin {
		all, err := s.accounts.ListTeams(r.Context())
		if err != nil {
			return err
		}
		teams = all
	} else {
		t, err := s.accounts.GetTeam(r.Context(), p.TeamID)
		if err != nil {
			return err
		}
		teams = []store.Team{t}
	}
	writeJSON(w, http.StatusOK, api.TeamList{Teams: toAPIList(teams, toAPITeam)})
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	teamID := r.PathValue("id")
	if err := adminOf(callerOf(r), teamID); err != nil {
		return err
	}
	var req api.CreateUserRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	// An OIDC identity decides which team a person lands in when they first
	// sign in: a team admin binding one could squat on someone meant for
	// another team and read all they make there. Only the host admin binds.
	if req.Subject != "" && !callerOf(r).HostAdmin {
		return sandbox.Errorf(sandbox.ErrForbidden, "host_admin_required",
			"only the host admin binds an OIDC identity (issuer, subject) to a team; team admins add users without one")
	}
	u := store.User{TeamID: teamID, Issuer: req.Issuer, Subject: req.Subject, Email: req.Email, Name: req.Name, Role: req.Role}
	if u.Role == "" {
		u.Role = store.RoleMember
	}
	if u.Subject != "" && u.Issuer == "" {
		u.Issuer = s.accounts.Issuer()
		if u.Issuer == "" {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_user", "this server has no OIDC issuer: give the user's issuer")
		}
	}
	u, err := s.accounts.CreateUser(r.Context(), u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toAPIUser(u))
	return nil
}

// deleteUser removes a user of the team (its admins, or the host admin)
// with its tokens; its OIDC identity can be bound again.
func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	teamID := r.PathValue("id")
	if err := adminOf(callerOf(r), teamID); err != nil {
		return err
	}
	if err := s.accounts.DeleteUser(r.Context(), teamID, r.PathValue("user")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listUsers shows a team's users to its members (and host admins).
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	teamID := r.PathValue("id")
	if err := memberOf(callerOf(r), teamID); err != nil {
		return err
	}
	us, err := s.accounts.ListUsers(r.Context(), teamID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.UserList{Users: toAPIList(us, toAPIUser)})
	return nil
}

// createToken makes a token in the caller's team (or, for a host admin,
// any team) and answers its secret, which is never shown again.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	var req api.CreateTokenRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	p := callerOf(r)
	teamID := req.TeamID
	if teamID == "" {
		teamID = p.TeamID
	}
	if err := adminOf(p, teamID); err != nil {
		return err
	}
	role := req.Role
	if role == "" {
		role = store.RoleMember
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(auth.MaxTokenTTL/time.Second) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_ttl", "ttlSeconds must be between 0 (no expiry) and %d", int64(auth.MaxTokenTTL/time.Second))
	}
	secret, t, err := s.accounts.CreateTokenFormat(r.Context(), auth.TokenFormat(req.Format), teamID, req.UserID, req.Name, role, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.CreatedToken{Token: toAPIToken(t), Secret: secret})
	return nil
}

// listTokens lists one team's tokens (?teamId=, default the caller's) to
// its admins.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	p := callerOf(r)
	teamID := r.URL.Query().Get("teamId")
	if teamID == "" {
		teamID = p.TeamID
	}
	if err := adminOf(p, teamID); err != nil {
		return err
	}
	ts, err := s.accounts.ListTokens(r.Context(), teamID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.TokenList{Tokens: toAPIList(ts, toAPIToken)})
	return nil
}

// deleteToken revokes a token of the caller's team; a host admin's reach
// is every team. Another team's token is not found.
func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	if s.accounts == nil {
		return errNoAccounts
	}
	p := callerOf(r)
	if err := adminOf(p, p.TeamID); err != nil {
		return err
	}
	scope := p.TeamID
	if p.HostAdmin {
		scope = ""
	}
	id := r.PathValue("id")
	if !sandbox.ValidID(id) {
		return store.NotFound("token", id)
	}
	if err := s.accounts.DeleteToken(r.Context(), scope, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
