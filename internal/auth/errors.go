package auth

import "github.com/paddock-dev/paddock/internal/sandbox"

// Errors of authentication. Each is a 401 with a code a client can act on:
// send a token, get a new one, or ask an admin to add the user.
var (
	ErrMissingToken = sandbox.Errorf(sandbox.ErrUnauthorized, "missing_token", "missing bearer token: send Authorization: Bearer <token>")
	ErrInvalidToken = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "the bearer token is not valid")
	ErrExpiredToken = sandbox.Errorf(sandbox.ErrUnauthorized, "expired_token", "the bearer token has expired")
	ErrUnknownUser  = sandbox.Errorf(sandbox.ErrUnauthorized, "unknown_user", "the signed-in user is not a member of any team here: ask an admin to add them")
)
