// Package auth says who is calling: API tokens kept hashed in the store,
// and OIDC JWTs from a configured issuer for the web app's users. The result
// is a Principal carried in the request's context; handlers check that the
// principal's team owns what the request touches.
//
// The host admin is not a flag on a token: it is the admin role in the
// bootstrap team (BootstrapTeamID). Bootstrap creates that team and its
// first admin token; any admin of that team, token or OIDC user, is a host
// admin. Admins of other teams administer only their own team.
package auth

import (
	"context"

	"github.com/paddock-dev/paddock/internal/store"
)

// Principal is an authenticated caller.
type Principal struct {
	TeamID  string // the team whose projects and sandboxes the caller may touch
	UserID  string // "" for a token not bound to a user
	TokenID string // "" for an OIDC user
	Name    string // for logs: the token's or the user's name
	Role    string // store.RoleAdmin or store.RoleMember, within TeamID
	// HostAdmin is the host's bootstrap admin: every team's resources, and
	// the admin endpoints (teams, users, tokens of any team).
	HostAdmin bool
}

// CanAccessTeam reports whether p may touch resources owned by teamID.
// Resources with no team (made before teams existed) belong to host admins.
func (p Principal) CanAccessTeam(teamID string) bool {
	return p.HostAdmin || (teamID != "" && teamID == p.TeamID)
}

// ListTeam is the team whose resources a list for p covers: "" (every
// team's) for a host admin; ok false for a principal of no team, which
// owns nothing.
func (p Principal) ListTeam() (team string, ok bool) {
	if p.HostAdmin {
		return "", true
	}
	return p.TeamID, p.TeamID != ""
}

// CanAdminTeam reports whether p may manage teamID's users and tokens: a
// host admin any team's, a team admin their own team's.
func (p Principal) CanAdminTeam(teamID string) bool {
	return p.HostAdmin || (teamID != "" && teamID == p.TeamID && p.Role == store.RoleAdmin)
}

// isHostAdmin is the one rule that makes a host admin.
func isHostAdmin(teamID, role string) bool {
	return teamID == BootstrapTeamID && role == store.RoleAdmin
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal the auth middleware put in ctx.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
