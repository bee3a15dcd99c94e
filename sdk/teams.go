package sdk

import (
	"context"
	"net/http"
	"net/url"

	"github.com/paddock-dev/paddock/api"
)

// CreateTeam creates a team; only the host admin may.
func (c *Client) CreateTeam(ctx context.Context, name string) (api.Team, error) {
	var out api.Team
	err := c.do(ctx, http.MethodPost, "/teams", nil, api.CreateTeamRequest{Name: name}, &out)
	return out, err
}

// ListTeams lists every team for the host admin, the caller's own otherwise.
func (c *Client) ListTeams(ctx context.Context) ([]api.Team, error) {
	var out api.TeamList
	err := c.do(ctx, http.MethodGet, "/teams", nil, nil, &out)
	return out.Teams, err
}

// CreateUser adds a user to a team (its admins, or the host admin).
func (c *Client) CreateUser(ctx context.Context, teamID string, req api.CreateUserRequest) (api.User, error) {
	var out api.User
	err := c.do(ctx, http.MethodPost, "/teams/"+url.PathEscape(teamID)+"/users", nil, req, &out)
	return out, err
}

// ListUsers lists a team's users.
func (c *Client) ListUsers(ctx context.Context, teamID string) ([]api.User, error) {
	var out api.UserList
	err := c.do(ctx, http.MethodGet, "/teams/"+url.PathEscape(teamID)+"/users", nil, nil, &out)
	return out.Users, err
}

// DeleteUser removes a user of a team and revokes its tokens (the team's
// admins, or the host admin).
func (c *Client) DeleteUser(ctx context.Context, teamID, userID string) error {
	return c.do(ctx, http.MethodDelete, "/teams/"+url.PathEscape(teamID)+"/users/"+url.PathEscape(userID), nil, nil, nil)
}

// CreateToken creates an API token. The answer's Secret is shown this once:
// the server keeps only its hash.
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.CreatedToken, error) {
	var out api.CreatedToken
	err := c.do(ctx, http.MethodPost, "/tokens", nil, req, &out)
	return out, err
}

// ListTokens lists a team's tokens; teamID "" means the caller's team.
func (c *Client) ListTokens(ctx context.Context, teamID string) ([]api.Token, error) {
	var q url.Values
	if teamID != "" {
		q = url.Values{"teamId": {teamID}}
	}
	var out api.TokenList
	err := c.do(ctx, http.MethodGet, "/tokens", q, nil, &out)
	return out.Tokens, err
}

// DeleteToken revokes a token.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// TeamLimits returns a team's admission limits and what it uses now (its
// members, or the host admin).
func (c *Client) TeamLimits(ctx context.Context, teamID string) (api.TeamAdmission, error) {
	var out api.TeamAdmission
	err := c.do(ctx, http.MethodGet, "/teams/"+url.PathEscape(teamID)+"/limits", nil, nil, &out)
	return out, err
}

// SetTeamLimits gives a team its own admission limits (host admin).
func (c *Client) SetTeamLimits(ctx context.Context, teamID string, l api.TeamLimits) (api.TeamAdmission, error) {
	var out api.TeamAdmission
	err := c.do(ctx, http.MethodPut, "/teams/"+url.PathEscape(teamID)+"/limits", nil, l, &out)
	return out, err
}

// ResetTeamLimits returns a team to the server's default limits (host admin).
func (c *Client) ResetTeamLimits(ctx context.Context, teamID string) (api.TeamAdmission, error) {
	var out api.TeamAdmission
	err := c.do(ctx, http.MethodDelete, "/teams/"+url.PathEscape(teamID)+"/limits", nil, nil, &out)
	return out, err
}
