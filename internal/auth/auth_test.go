package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

const audience = "paddock-web"

// issuer is an OIDC provider on loopback: a discovery document and a JWKS
// with one RSA and one EC key, both generated here.
type issuer struct {
	url   string
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	other *rsa.PrivateKey // not published: signatures with it are wrong
	// keyFetches counts requests for the key set.
	keyFetches atomic.Int64
}

func startIssuer(t *testing.T) *issuer {
	t.Helper()
	iss := &issuer{}
	var err error
	if iss.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if iss.other, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if iss.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	hs := httptest.NewServer(mux) // 127.0.0.1
	t.Cleanup(hs.Close)
	iss.url = hs.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{ //nolint:errcheck
			"issuer": iss.url, "jwks_uri": iss.url + "/keys",
			"authorization_endpoint": iss.url + "/auth", "token_endpoint": iss.url + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		iss.keyFetches.Add(1)
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{ //nolint:errcheck
			{Key: &iss.rsa.PublicKey, KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
			{Key: &iss.ec.PublicKey, KeyID: "ec", Algorithm: "ES256", Use: "sig"},
		}})
	})
	return iss
}

// sign makes a JWT with the given claims; kid "rsa" or "ec" picks the key,
// "forged" signs with an unpublished key under the published kid.
func (iss *issuer) sign(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	var key jose.SigningKey
	switch kid {
	case "rsa":
		key = jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: iss.rsa, KeyID: "rsa"}}
	case "ec":
		key = jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: iss.ec, KeyID: "ec"}}
	case "forged":
		key = jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: iss.other, KeyID: "rsa"}}
	default: // a key id the issuer never published
		key = jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: iss.other, KeyID: kid}}
	}
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// claims are a valid token's claims at now; set overrides, nil deletes.
func (iss *issuer) claims(now time.Time, set map[string]any) map[string]any {
	c := map[string]any{
		"iss": iss.url, "aud": audience, "sub": "user-1", "email": "ada@example.com", "email_verified": true,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range set {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// newStore opens a real SQLite store in a temp dir.
func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newAuth(t *testing.T, st store.Store, clk *fake.Clock, oidcCfg *auth.OIDCConfig) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(t.Context(), auth.Config{Store: st, OIDC: oidcCfg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	if !errors.Is(err, sandbox.ErrUnauthorized) || sandbox.CodeOf(err) != code {
		t.Fatalf("err = %v (code %q), want 401 %s", err, sandbox.CodeOf(err), code)
	}
}

func TestOIDC(t *testing.T) {
	iss := startIssuer(t)
	clk := fake.NewClock(time.Now())
	st := newStore(t)
	ctx := t.Context()
	team := store.Team{ID: "team-a", Name: "a", CreatedAt: clk.Now()}
	if err := st.CreateTeam(ctx, team); err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{
		{ID: "usr-sub", TeamID: "team-a", Issuer: iss.url, Subject: "user-1", Role: store.RoleMember},
		{ID: "usr-mail", TeamID: "team-a", Issuer: iss.url, Subject: "ada@example.com", Role: store.RoleAdmin},
	} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	bySub := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience})
	byEmail := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience, UserClaim: "email"})
	// No discovery: the keys' URL is given.
	byJWKS := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience, JWKSURL: iss.url + "/keys"})
	// The dashboard signs in as its own client, whose tokens count too.
	withClient := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience, ClientID: "dashboard"})

	now := clk.Now()
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(mustJSON(t, iss.claims(now, nil))) + "."
	tests := []struct {
		name     string
		a        *auth.Authenticator
		token    string
		code     string
		wantUser string
	}{
		{"valid rs256", bySub, iss.sign(t, "rsa", iss.claims(now, nil)), "", "usr-sub"},
		{"valid es256", bySub, iss.sign(t, "ec", iss.claims(now, nil)), "", "usr-sub"},
		{"valid via jwks url", byJWKS, iss.sign(t, "rsa", iss.claims(now, nil)), "", "usr-sub"},
		{"audience list", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": []string{"x", audience}})), "", "usr-sub"},
		{"email claim", byEmail, iss.sign(t, "rsa", iss.claims(now, nil)), "", "usr-mail"},
		{"wrong audience", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": "other-app"})), "invalid_token", ""},
		{"dashboard client's audience", withClient, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": "dashboard"})), "", "usr-sub"},
		{"app's audience with a dashboard client", withClient, iss.sign(t, "rsa", iss.claims(now, nil)), "", "usr-sub"},
		{"dashboard client's audience unconfigured", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": "dashboard"})), "invalid_token", ""},
		{"other audience with a dashboard client", withClient, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": "other-app"})), "invalid_token", ""},
		{"no audience", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"aud": nil})), "invalid_token", ""},
		{"wrong issuer", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"iss": "https://evil.example"})), "invalid_token", ""},
		{"expired", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"exp": now.Add(-time.Minute).Unix()})), "expired_token", ""},
		{"expired within skew", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"exp": now.Add(-10 * time.Second).Unix()})), "", "usr-sub"},
		{"no exp", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"exp": nil})), "expired_token", ""},
		{"wrong signature", bySub, iss.sign(t, "forged", iss.claims(now, nil)), "invalid_token", ""},
		{"alg none", bySub, none, "invalid_token", ""},
		{"tampered payload", bySub, tamper(t, iss.sign(t, "rsa", iss.claims(now, nil))), "invalid_token", ""},
		{"unknown user", bySub, iss.sign(t, "rsa", iss.claims(now, map[string]any{"sub": "stranger"})), "unknown_user", ""},
		{"claim missing", byEmail, iss.sign(t, "rsa", iss.claims(now, map[string]any{"email": nil})), "invalid_token", ""},
		{"email unverified", byEmail, iss.sign(t, "rsa", iss.claims(now, map[string]any{"email_verified": false})), "invalid_token", ""},
		{"email verification unsaid", byEmail, iss.sign(t, "rsa", iss.claims(now, map[string]any{"email_verified": nil})), "invalid_token", ""},
		{"email verified as a string", byEmail, iss.sign(t, "rsa", iss.claims(now, map[string]any{"email_verified": "true"})), "", "usr-mail"},
		{"unpublished key id", bySub, iss.sign(t, "kid-nobody-knows", iss.claims(now, nil)), "invalid_token", ""},
		{"email of nobody, sub of a user", byEmail, iss.sign(t, "rsa", iss.claims(now, map[string]any{"email": "bob@example.com"})), "unknown_user", ""},
		{"garbage", bySub, "a.b.c", "invalid_token", ""},
		{"not a jwt", bySub, "hello", "invalid_token", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.a.AuthenticateBearer(ctx, tt.token)
			wantCode(t, err, tt.code)
			if tt.code != "" {
				return
			}
			if p.UserID != tt.wantUser || p.TeamID != "team-a" || p.TokenID != "" || p.HostAdmin {
				t.Errorf("principal = %+v", p)
			}
		})
	}

	// The claim chooses the user and so the role.
	p, err := byEmail.AuthenticateBearer(ctx, iss.sign(t, "rsa", iss.claims(now, nil)))
	if err != nil || p.Role != store.RoleAdmin || p.Name != "" && p.Name != "ada@example.com" {
		t.Errorf("email principal = %+v, %v", p, err)
	}

	// A JWT is refused outright where OIDC is not configured.
	plain := newAuth(t, st, clk, nil)
	_, err = plain.AuthenticateBearer(ctx, iss.sign(t, "rsa", iss.claims(now, nil)))
	wantCode(t, err, "invalid_token")

	// The dashboard's sign-in wants the nonce it sent back in the ID token.
	for _, tt := range []struct {
		name, tokenNonce, want, code string
	}{
		{"nonce matches", "n-1", "n-1", ""},
		{"nonce differs", "n-2", "n-1", "invalid_token"},
		{"nonce missing", "", "n-1", "invalid_token"},
		{"no nonce asked", "n-1", "", "invalid_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set := map[string]any{"nonce": tt.tokenNonce}
			if tt.tokenNonce == "" {
				set["nonce"] = nil
			}
			claims := iss.claims(now, set)
			p, err := withClient.AuthenticateIDToken(ctx, iss.sign(t, "rsa", claims), tt.want)
			wantCode(t, err, tt.code)
			if tt.code == "" && p.UserID != "usr-sub" {
				t.Errorf("principal = %+v", p)
			}
		})
	}
	if _, err := plain.AuthenticateIDToken(ctx, iss.sign(t, "rsa", iss.claims(now, map[string]any{"nonce": "n"})), "n"); err == nil {
		t.Error("an ID token signed in where OIDC is not configured")
	}
}

func TestOIDCProvisionsIntoDefaultTeam(t *testing.T) {
	iss := startIssuer(t)
	clk := fake.NewClock(time.Now())
	st := newStore(t)
	if err := st.CreateTeam(t.Context(), store.Team{ID: "team-web", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	a := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience, DefaultTeam: "team-web", UserClaim: "email"})
	tok := iss.sign(t, "rsa", iss.claims(clk.Now(), map[string]any{"email": "new@example.com"}))
	p1, err := a.AuthenticateBearer(t.Context(), tok)
	if err != nil || p1.TeamID != "team-web" || p1.Role != store.RoleMember || p1.UserID == "" {
		t.Fatalf("first sign-in = %+v, %v", p1, err)
	}
	p2, err := a.AuthenticateBearer(t.Context(), tok)
	if err != nil || p2.UserID != p1.UserID {
		t.Fatalf("second sign-in = %+v, %v; want the same user", p2, err)
	}
	if us, _ := st.ListUsers(t.Context(), "team-web"); len(us) != 1 || us[0].Email != "new@example.com" {
		t.Errorf("users = %+v", us)
	}
}

func TestOIDCConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  auth.OIDCConfig
		ok   bool
	}{
		{"ok", auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app"}, true},
		{"loopback http", auth.OIDCConfig{Issuer: "http://127.0.0.1:5556", Audience: "app"}, true},
		{"no audience", auth.OIDCConfig{Issuer: "https://id.example.com"}, false},
		{"no issuer", auth.OIDCConfig{Audience: "app"}, false},
		{"plain http", auth.OIDCConfig{Issuer: "http://id.example.com", Audience: "app"}, false},
		{"plain http jwks", auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app", JWKSURL: "http://k.example.com/keys"}, false},
		{"huge skew", auth.OIDCConfig{Issuer: "https://id.example.com", Audience: "app", ClockSkew: time.Hour}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); tt.ok != (err == nil) {
				t.Errorf("Validate = %v", err)
			}
		})
	}
}

func TestAPITokens(t *testing.T) {
	clk := fake.NewClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	st := newStore(t)
	a := newAuth(t, st, clk, nil)
	ctx := t.Context()

	admin, created, err := a.Bootstrap(ctx)
	if err != nil || !created || !strings.HasPrefix(admin, auth.TokenPrefix) {
		t.Fatalf("Bootstrap = %q, %v, %v", admin, created, err)
	}
	if again, created, err := a.Bootstrap(ctx); err != nil || created || again != "" {
		t.Fatalf("second Bootstrap = %q, %v, %v", again, created, err)
	}
	p, err := a.AuthenticateBearer(ctx, admin)
	if err != nil || !p.HostAdmin || p.TeamID != auth.BootstrapTeamID || p.Role != store.RoleAdmin || p.TokenID == "" {
		t.Fatalf("admin principal = %+v, %v", p, err)
	}

	team, err := a.CreateTeam(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	member, tok, err := a.CreateToken(ctx, team.ID, "", "ci", store.RoleMember, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Hash) != 32 || strings.Contains(string(tok.Hash), member) || !tok.ExpiresAt.Equal(clk.Now().Add(time.Hour)) {
		t.Errorf("stored token = %+v", tok)
	}
	teamAdmin, _, err := a.CreateToken(ctx, team.ID, "", "lead", store.RoleAdmin, 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked, rtok, err := a.CreateToken(ctx, team.ID, "", "old", store.RoleMember, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteToken(ctx, "team-nope", rtok.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("delete through another team = %v, want not found", err)
	}
	if err := a.DeleteToken(ctx, team.ID, rtok.ID); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, secret string
		code         string
		check        func(auth.Principal) bool
	}{
		{"member", member, "", func(p auth.Principal) bool {
			return p.TeamID == team.ID && p.Role == store.RoleMember && p.TokenID == tok.ID && !p.HostAdmin && p.Name == "ci"
		}},
		{"team admin is not host admin", teamAdmin, "", func(p auth.Principal) bool {
			return p.Role == store.RoleAdmin && !p.HostAdmin && p.CanAdminTeam(team.ID) && !p.CanAdminTeam(auth.BootstrapTeamID)
		}},
		{"unknown", auth.TokenPrefix + strings.Repeat("A", 43), "invalid_token", nil},
		{"one char off", member[:len(member)-1] + "x", "invalid_token", nil},
		{"revoked", revoked, "invalid_token", nil},
		{"empty", "", "missing_token", nil},
		{"prefix only", auth.TokenPrefix, "invalid_token", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.AuthenticateBearer(ctx, tt.secret)
			wantCode(t, err, tt.code)
			if tt.check != nil && !tt.check(p) {
				t.Errorf("principal = %+v", p)
			}
		})
	}

	clk.Advance(time.Hour) // the member token's expiry, exactly
	_, err = a.AuthenticateBearer(ctx, member)
	wantCode(t, err, "expired_token")
	if _, err := a.AuthenticateBearer(ctx, teamAdmin); err != nil {
		t.Errorf("token without expiry: %v", err)
	}

	// Reset: the old admin secret stops working, the new one works.
	fresh, err := a.ResetAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.AuthenticateBearer(ctx, admin)
	wantCode(t, err, "invalid_token")
	if p, err := a.AuthenticateBearer(ctx, fresh); err != nil || !p.HostAdmin {
		t.Errorf("reset admin token: %+v, %v", p, err)
	}
}

func TestCreateTokenValidates(t *testing.T) {
	clk := fake.NewClock(time.Now())
	st := newStore(t)
	a := newAuth(t, st, clk, nil)
	ctx := t.Context()
	team, err := a.CreateTeam(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.CreateTeam(ctx, "t2")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := a.CreateUser(ctx, store.User{TeamID: other.ID, Email: "x@example.com", Role: store.RoleMember})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		team, user, role string
		tokName          string
		ttl              time.Duration
		kind             error
	}{
		{"bad role", team.ID, "", "owner", "n", 0, sandbox.ErrInvalid},
		{"no name", team.ID, "", store.RoleMember, "", 0, sandbox.ErrInvalid},
		{"control char", team.ID, "", store.RoleMember, "a\nb", 0, sandbox.ErrInvalid},
		{"negative ttl", team.ID, "", store.RoleMember, "n", -time.Second, sandbox.ErrInvalid},
		{"unknown team", "team-nope", "", store.RoleMember, "n", 0, sandbox.ErrNotFound},
		{"user of another team", team.ID, stranger.ID, store.RoleMember, "n", 0, sandbox.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := a.CreateToken(ctx, tt.team, tt.user, tt.tokName, tt.role, tt.ttl)
			if !errors.Is(err, tt.kind) {
				t.Errorf("CreateToken = %v, want %v", err, tt.kind)
			}
		})
	}
}

func TestAuthenticateRequest(t *testing.T) {
	a := newAuth(t, newStore(t), fake.NewClock(time.Now()), nil)
	secret, _, err := a.Bootstrap(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, header, code string }{
		{"none", "", "missing_token"},
		{"basic", "Basic dTpw", "missing_token"},
		{"empty bearer", "Bearer ", "missing_token"},
		{"lower-case scheme", "bearer " + secret, ""},
		{"ok", "Bearer " + secret, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/v1/sandboxes", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			_, err := a.Authenticate(r)
			wantCode(t, err, tt.code)
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tamper swaps the payload of a signed JWT for one naming another subject.
func tamper(t *testing.T, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	c["sub"] = "admin"
	parts[1] = base64.RawURLEncoding.EncodeToString(mustJSON(t, c))
	return strings.Join(parts, ".")
}

// BenchmarkAuthenticateToken is the per-request cost of an API token on
// SQLite: one hash, one indexed lookup.
func BenchmarkAuthenticateToken(b *testing.B) {
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "paddock.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	a, err := auth.New(b.Context(), auth.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	secret, _, err := a.Bootstrap(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.AuthenticateBearer(b.Context(), secret); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUnknownKeyIDs: tokens naming key ids the issuer never published make
// the server fetch the key set again at most once a minute, however many
// arrive (anyone can send them, unauthenticated).
func TestUnknownKeyIDs(t *testing.T) {
	ctx := t.Context()
	iss := startIssuer(t)
	st := newStore(t)
	clk := fake.NewClock(time.Now())
	a := newAuth(t, st, clk, &auth.OIDCConfig{Issuer: iss.url, Audience: audience})
	now := clk.Now()
	// The first token fetches the keys; a known kid never fetches again.
	if _, err := a.AuthenticateBearer(ctx, iss.sign(t, "rsa", iss.claims(now, nil))); !errors.Is(err, auth.ErrUnknownUser) {
		t.Fatalf("first token: %v", err)
	}
	base := iss.keyFetches.Load()
	for i := range 50 {
		_, err := a.AuthenticateBearer(ctx, iss.sign(t, fmt.Sprintf("rotated-%d", i), iss.claims(now, nil)))
		wantCode(t, err, "invalid_token")
	}
	burst := iss.keyFetches.Load() - base
	if burst > 1 {
		t.Errorf("50 tokens with unknown key ids made %d key fetches within a minute, want at most 1", burst)
	}
	clk.Advance(time.Minute) // keyRefreshInterval
	_, err := a.AuthenticateBearer(ctx, iss.sign(t, "rotated-late", iss.claims(clk.Now(), nil)))
	wantCode(t, err, "invalid_token")
	if n := iss.keyFetches.Load() - base; n != burst+1 {
		t.Errorf("after a minute: %d fetches, want %d: one more", n, burst+1)
	}
	if _, err := a.AuthenticateBearer(ctx, iss.sign(t, "ec", iss.claims(clk.Now(), nil))); !errors.Is(err, auth.ErrUnknownUser) {
		t.Errorf("a published key still verifies: %v", err)
	}
}

// TestE2BKeys: a key in E2B's format has the shape E2B's SDKs validate,
// names its team and role like any token, and is revoked like one.
func TestE2BKeys(t *testing.T) {
	clk := fake.NewClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	a := newAuth(t, newStore(t), clk, nil)
	ctx := t.Context()
	team, err := a.CreateTeam(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key, tok, err := a.CreateTokenFormat(ctx, auth.FormatE2B, team.ID, "", "sdk", store.RoleMember, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(key) {
		t.Errorf("key %q does not have the shape E2B's SDKs validate", key)
	}
	p, err := a.AuthenticateBearer(ctx, key)
	if err != nil || p.TeamID != team.ID || p.Role != store.RoleMember || p.TokenID != tok.ID {
		t.Fatalf("principal = %+v, %v", p, err)
	}
	_, err = a.AuthenticateBearer(ctx, auth.E2BKeyPrefix+strings.Repeat("0", 40))
	wantCode(t, err, "invalid_token")
	if err := a.DeleteToken(ctx, team.ID, tok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = a.AuthenticateBearer(ctx, key)
	wantCode(t, err, "invalid_token")
	if _, _, err := a.CreateTokenFormat(ctx, "jwt", team.ID, "", "x", store.RoleMember, 0); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("unknown format: %v, want invalid", err)
	}
}
