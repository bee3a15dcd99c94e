package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sign-in with the OIDC issuer: the authorization-code flow with PKCE,
// state and nonce. golang.org/x/oauth2 builds the authorization URL and
// exchanges the code; the ID token it brings back is verified by the API's
// own authenticator (signature, issuer, audience, expiry, and the nonce),
// then becomes the session's token as a pasted API token would: every
// request authenticates it again, so the session ends when the ID token
// expires.

// OIDCCallbackPath is the dashboard's redirect URI path, registered at
// the issuer as <public URL>/ui/oidc/callback.
const OIDCCallbackPath = Prefix + "/oidc/callback"

const (
	oidcLoginPath = Prefix + "/oidc/login"
	// flowCookie carries one sign-in's state, nonce and PKCE verifier
	// from the redirect to the issuer back to the callback.
	flowCookie = "paddock_oidc"
	// flowTTL bounds the time a person has at the issuer's login page.
	flowTTL = 10 * time.Minute
	// maxCookieBytes is what browsers keep of one cookie; an issuer whose
	// ID tokens are larger (many group claims) cannot sign in here.
	maxCookieBytes = 4000
)

// OIDCLogin configures the "Sign in with <issuer>" button.
type OIDCLogin struct {
	// Issuer is the API authenticator's issuer; its discovery document
	// names the authorization and token endpoints.
	Issuer string
	// ClientID is the dashboard's client at the issuer; the authenticator
	// must accept it as an audience.
	ClientID string
	// ClientSecret is empty for a public client (PKCE alone).
	ClientSecret string
	// RedirectURL is <public URL>/ui/oidc/callback as registered at the
	// issuer.
	RedirectURL string
	// Label names the issuer on the button; default its host.
	Label string
	// HTTPClient makes discovery and the code exchange; nil means a
	// client with a 10s timeout.
	HTTPClient *http.Client
}

// IDTokenAuthenticator verifies the ID token a sign-in brought back and
// its nonce (internal/auth's Authenticator).
type IDTokenAuthenticator interface {
	AuthenticateIDToken(ctx context.Context, raw, nonce string) (auth.Principal, error)
}

func (c OIDCLogin) validate() error {
	if c.Issuer == "" || c.ClientID == "" {
		return errors.New("web config: OIDC sign-in needs the issuer and a client id")
	}
	u, err := url.Parse(c.RedirectURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != OIDCCallbackPath {
		return fmt.Errorf("web config: the OIDC redirect URL %q must be http(s)://<public host>%s", c.RedirectURL, OIDCCallbackPath)
	}
	return nil
}

// oidcLogin runs sign-ins; discovery happens at the first one (and again
// after a failure), so an issuer that is down does not stop paddock.
type oidcLogin struct {
	cfg    OIDCLogin
	ids    IDTokenAuthenticator
	client *http.Client

	mu    sync.Mutex // guards oauth; held across discovery
	oauth *oauth2.Config
}

func newOIDCLogin(cfg OIDCLogin, authn Authenticator) (*oidcLogin, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ids, ok := authn.(IDTokenAuthenticator)
	if !ok {
		return nil, errors.New("web config: OIDC sign-in needs an authenticator that verifies ID tokens")
	}
	if cfg.Label == "" {
		if u, err := url.Parse(cfg.Issuer); err == nil && u.Host != "" {
			cfg.Label = u.Host
		} else {
			cfg.Label = cfg.Issuer
		}
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &oidcLogin{cfg: cfg, ids: ids, client: client}, nil
}

// config discovers the issuer's endpoints once.
func (o *oidcLogin) config(ctx context.Context) (*oauth2.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.oauth != nil {
		return o.oauth, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.client), o.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc discovery of %s: %w", o.cfg.Issuer, err)
	}
	o.oauth = &oauth2.Config{
		ClientID:     o.cfg.ClientID,
		ClientSecret: o.cfg.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  o.cfg.RedirectURL,
		Scopes:       []string{oidc.ScopeOpenID, "email", "profile"},
	}
	return o.oauth, nil
}

// oidcFlow is what the flow cookie carries.
type oidcFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Expires  int64  `json:"e"`
}

func flowCookieOf(value string, maxAge int, secure bool) *http.Cookie {
	// Lax, not Strict: the issuer's redirect back is a cross-site
	// navigation, which must bring the cookie along.
	return &http.Cookie{Name: flowCookie, Value: value, Path: Prefix + "/oidc/", MaxAge: maxAge,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// oidcStart sends the browser to the issuer's login page.
func (h *Handler) oidcStart(w http.ResponseWriter, r *http.Request) {
	rq := &request{r: r, w: w}
	conf, err := h.oidc.config(r.Context())
	if err != nil {
		h.log.Warn("dashboard: oidc sign-in", "err", err)
		h.fail(w, rq, http.StatusServiceUnavailable, "The sign-in service at "+h.oidc.cfg.Label+" is unavailable; retry shortly, or sign in with an API token.")
		return
	}
	f := oidcFlow{Verifier: oauth2.GenerateVerifier(), Next: safeNext(r.URL.Query().Get("next")),
		Expires: h.cfg.Now().Add(flowTTL).Unix()}
	if f.State, err = randomString(); err == nil {
		f.Nonce, err = randomString()
	}
	var v string
	if err == nil {
		v, err = h.seal.sealJSON(f, flowCookie)
	}
	if err != nil {
		h.fail(w, rq, http.StatusInternalServerError, "Could not start a sign-in.")
		return
	}
	http.SetCookie(w, flowCookieOf(v, int(flowTTL/time.Second), h.cfg.SecureCookies))
	http.Redirect(w, r, conf.AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce)), http.StatusSeeOther)
}

// oidcCallback is where the issuer sends the browser back: it checks the
// state, exchanges the code, verifies the ID token and its nonce, and
// starts the session.
func (h *Handler) oidcCallback(w http.ResponseWriter, r *http.Request) {
	rq := &request{r: r, w: w}
	refuse := func(status int, msg string) {
		h.render(w, rq, status, "error", pageData{Title: "Sign-in failed", Message: msg, Retry: oidcLoginPath})
	}
	// The flow is used once, whatever happens next.
	http.SetCookie(w, flowCookieOf("", -1, h.cfg.SecureCookies))
	var f oidcFlow
	c, err := r.Cookie(flowCookie)
	q := r.URL.Query()
	if err != nil || !h.seal.openJSON(c.Value, flowCookie, &f) || h.cfg.Now().Unix() >= f.Expires ||
		subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.State)) != 1 {
		refuse(http.StatusBadRequest, "This sign-in expired or was not started in this browser. Start again.")
		return
	}
	if e := q.Get("error"); e != "" {
		msg := "The sign-in was refused at " + h.oidc.cfg.Label + " (" + e + ")"
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		refuse(http.StatusUnauthorized, msg+".")
		return
	}
	conf, err := h.oidc.config(r.Context())
	var tok *oauth2.Token
	if err == nil {
		tok, err = conf.Exchange(oidc.ClientContext(r.Context(), h.oidc.client), q.Get("code"), oauth2.VerifierOption(f.Verifier))
	}
	if err != nil {
		h.log.Warn("dashboard: oidc code exchange", "err", err)
		refuse(http.StatusBadGateway, "The sign-in could not be completed at "+h.oidc.cfg.Label+". Start again.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		refuse(http.StatusBadGateway, h.oidc.cfg.Label+" answered without an ID token: is the dashboard's client set up for OpenID Connect?")
		return
	}
	p, err := h.oidc.ids.AuthenticateIDToken(r.Context(), raw, f.Nonce)
	switch {
	case errors.Is(err, auth.ErrUnknownUser):
		refuse(http.StatusForbidden, "You signed in at "+h.oidc.cfg.Label+", but you are not a member of any team here. Ask an admin to add you (paddock user create --team TEAM --subject YOU).")
		return
	case errors.Is(err, auth.ErrExpiredToken):
		refuse(http.StatusUnauthorized, "The ID token from "+h.oidc.cfg.Label+" has already expired: check that this server's clock is right, then start again.")
		return
	case errors.Is(err, sandbox.ErrUnauthorized):
		h.log.Warn("dashboard: oidc id token refused", "err", err)
		refuse(http.StatusUnauthorized, "The ID token from "+h.oidc.cfg.Label+" could not be verified (signature, audience or nonce). Start again.")
		return
	case err != nil:
		h.log.Warn("dashboard: oidc sign-in", "err", err)
		refuse(http.StatusServiceUnavailable, "Authentication is unavailable; retry shortly.")
		return
	}
	sess, err := newSession(raw, h.cfg.Now())
	var v string
	if err == nil {
		v, err = h.seal.seal(sess)
	}
	if err == nil && len(v) > maxCookieBytes {
		err = fmt.Errorf("the sealed ID token is %d bytes", len(v))
	}
	if err != nil {
		h.log.Warn("dashboard: oidc session", "err", err)
		refuse(http.StatusInternalServerError, "Could not start a session with the ID token from "+h.oidc.cfg.Label+" (is it too large for a cookie?).")
		return
	}
	http.SetCookie(w, sessionCookieOf(v, int(sessionTTL/time.Second), h.cfg.SecureCookies))
	h.log.Info("dashboard: signed in with oidc", "user", p.UserID, "team", p.TeamID)
	// A page rather than a redirect: the browser counts a redirect at the
	// end of the issuer's cross-site chain as cross-site too and would
	// not send the SameSite=Strict session cookie with it; the page's own
	// navigation onwards is same-site.
	h.render(w, rq, http.StatusOK, "signedin", pageData{Title: "Signed in", Next: f.Next, Refresh: f.Next})
}
