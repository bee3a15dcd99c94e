package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// OIDCConfig accepts JWTs (ID tokens) of one issuer: the web app signs its
// users in there and sends their token as a bearer.
type OIDCConfig struct {
	// Issuer is the exact "iss" of the tokens; its discovery document
	// names the keys unless JWKSURL does.
	Issuer string
	// Audience must be among the token's "aud" (the app's client id).
	Audience string
	// ClientID, if set, is the dashboard's own client at the issuer (its
	// "Sign in with" button): tokens issued to it are accepted as well as
	// Audience's, since the dashboard's session sends them to the API.
	ClientID string
	// JWKSURL skips discovery, for issuers that publish only keys.
	JWKSURL string
	// UserClaim names the user: its value is the subject looked up with
	// Store.GetUserBySubject(Issuer, value). Default "sub"; "email" is
	// common, and then a token saying email_verified=false is refused.
	UserClaim string
	// ClockSkew is how far past "exp" a token is still accepted, for
	// clocks that disagree a little. Default 30s, at most 5m.
	ClockSkew time.Duration
	// DefaultTeam, if set, adds users the store does not know to this
	// team as members on their first request; empty refuses them
	// (401 unknown_user) until an admin adds them.
	DefaultTeam string
	// HTTPClient fetches discovery and keys; nil means a client with a
	// 10s timeout.
	HTTPClient *http.Client
}

// Defaults and bounds of OIDCConfig.
const (
	DefaultUserClaim = "sub"
	DefaultClockSkew = 30 * time.Second
	MaxClockSkew     = 5 * time.Minute
)

// signingAlgs are the only algorithms accepted: asymmetric, so a leaked
// verification key signs nothing, and never "none".
var signingAlgs = []string{oidc.RS256, oidc.ES256}

// Validate checks the settings that cannot be defaulted.
func (c OIDCConfig) Validate() error {
	switch {
	case c.Issuer == "":
		return errors.New("oidc config: Issuer is required")
	case c.Audience == "":
		return errors.New("oidc config: Audience is required: tokens for another app must not sign in here")
	case c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew:
		return fmt.Errorf("oidc config: ClockSkew %s is not within [0, %s]", c.ClockSkew, MaxClockSkew)
	}
	if err := checkURL("Issuer", c.Issuer); err != nil {
		return err
	}
	if c.JWKSURL != "" {
		return checkURL("JWKSURL", c.JWKSURL)
	}
	return nil
}

// checkURL wants https, or http to a loopback address (a local issuer in
// development and tests): keys fetched in the clear could be swapped.
func checkURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("oidc config: %s %q is not an absolute URL", field, raw)
	}
	if u.Scheme == "https" {
		return nil
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if u.Scheme == "http" && (host == "localhost" || (ip != nil && ip.IsLoopback())) {
		return nil
	}
	return fmt.Errorf("oidc config: %s %q must be https (or http on loopback)", field, raw)
}

type oidcVerifier struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
}

func newOIDCVerifier(ctx context.Context, cfg OIDCConfig, now func() time.Time) (*oidcVerifier, error) {
	if cfg.UserClaim == "" {
		cfg.UserClaim = DefaultUserClaim
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	vc := &oidc.Config{
		// verify checks the audience: Audience or ClientID.
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: signingAlgs,
		// go-oidc compares "exp" with no leeway; shifting its clock back
		// by the skew is the leeway. Its "nbf" check has its own 5m.
		Now: func() time.Time { return now().Add(-cfg.ClockSkew) },
	}
	jwksURL := cfg.JWKSURL
	if jwksURL == "" {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), cfg.Issuer)
		if err != nil {
			return nil, fmt.Errorf("oidc discovery of %s: %w", cfg.Issuer, err)
		}
		var doc struct {
			JWKSURL string `json:"jwks_uri"`
		}
		if err := p.Claims(&doc); err != nil || doc.JWKSURL == "" {
			return nil, fmt.Errorf("oidc discovery of %s: no jwks_uri", cfg.Issuer)
		}
		if err := checkURL("discovered jwks_uri", doc.JWKSURL); err != nil {
			return nil, err
		}
		jwksURL = doc.JWKSURL
	}
	// Our own key set rather than go-oidc's remote one, which fetches the
	// keys again for every token naming an unknown key id.
	algs := make([]jose.SignatureAlgorithm, len(signingAlgs))
	for i, a := range signingAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	ks := &keySet{url: jwksURL, client: client, now: now, algs: algs}
	return &oidcVerifier{cfg: cfg, verifier: oidc.NewVerifier(cfg.Issuer, ks, vc)}, nil
}

var errEmailUnverified = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "the token's email is not verified (email_verified must be true)")

// emailVerified accepts true, and the string "true" some issuers send.
func emailVerified(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// errWrongAudience: a token of the issuer, but for another app.
var errWrongAudience = errors.New("the token's audience is not this server's")

// errWrongNonce: an ID token that does not answer the sign-in that asked
// for it (replayed or injected into another browser's callback).
var errWrongNonce = errors.New("the ID token's nonce is not the sign-in's")

// verify checks the JWT (signature, algorithm, issuer, audience, expiry,
// and the nonce when one is given) and returns the issuer and the value of
// the user claim.
func (v *oidcVerifier) verify(ctx context.Context, raw, nonce string) (issuer, subject string, err error) {
	tok, err := v.verifier.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return "", "", ErrExpiredToken
		}
		// The reason (bad signature, wrong audience) stays in the error
		// chain for the server's logs; the client gets invalid_token.
		return "", "", fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if !slices.Contains(tok.Audience, v.cfg.Audience) && (v.cfg.ClientID == "" || !slices.Contains(tok.Audience, v.cfg.ClientID)) {
		return "", "", fmt.Errorf("%w: %w %v", ErrInvalidToken, errWrongAudience, tok.Audience)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(nonce)) != 1 {
		return "", "", fmt.Errorf("%w: %w", ErrInvalidToken, errWrongNonce)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	value, _ := claims[v.cfg.UserClaim].(string)
	if value == "" {
		return "", "", sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "the token has no %q claim naming the user", v.cfg.UserClaim)
	}
	// An email names a person only once the issuer checked it: a token
	// that does not say so (some issuers leave the claim out for addresses
	// a user typed in) is refused, as is a "false".
	if v.cfg.UserClaim == "email" && !emailVerified(claims["email_verified"]) {
		return "", "", errEmailUnverified
	}
	return v.cfg.Issuer, value, nil
}
