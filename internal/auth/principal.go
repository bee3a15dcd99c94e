// Package auth says who is calling: API tokens kept hashed in the store,
// and OIDC JWTs from a configured issuer for the web app's users. The result
// is a Principal carried in the request's context; handlers check that the
// principal's team owns what the request touches.
package auth

import "context"

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
