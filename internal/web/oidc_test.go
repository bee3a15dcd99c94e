package web

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/internal/web/webtest"
)

const (
	oidcClientID = "dashboard"
	oidcSecret   = "dashboard-secret"
)

// issuer is a hand-written OIDC issuer with its own key: discovery, keys,
// a login page whose form names the user, and a token endpoint that checks
// the client, the redirect URI and the PKCE verifier. claims, if set,
// changes an ID token's claims before it is signed.
type issuer struct {
	srv *httptest.Server
	url string // http://localhost:port, another site than the dashboard's 127.0.0.1
	key *rsa.PrivateKey

	mu     sync.Mutex // guards codes and claims
	codes  map[string]issuedCode
	claims func(map[string]any)
}

type issuedCode struct {
	user, nonce, challenge, redirect string
}

var issuerLoginPage = template.Must(template.New("login").Parse(`<!doctype html><html lang="en"><title>Issuer</title>
<form method="post" action="/authorize">
{{range $k, $v := .}}<input type="hidden" name="{{$k}}" value="{{index $v 0}}">{{end}}
<label for="user">User</label><input id="user" name="user">
<button id="issuer-login" type="submit">Log in</button></form></html>`))

func startIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &issuer{key: key, codes: map[string]issuedCode{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss.url, "authorization_endpoint": iss.url + "/authorize", "token_endpoint": iss.url + "/token",
			"jwks_uri": iss.url + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != oidcClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || !strings.Contains(q.Get("scope"), "openid") {
			http.Error(w, "bad authorization request: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		issuerLoginPage.Execute(w, q)
	})
	mux.HandleFunc("POST /authorize", func(w http.ResponseWriter, r *http.Request) {
		code := iss.approve(r.PostFormValue("user"), r.PostForm)
		http.Redirect(w, r, r.PostFormValue("redirect_uri")+"?"+url.Values{"code": {code}, "state": {r.PostFormValue("state")}}.Encode(), http.StatusSeeOther)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
		}
		iss.mu.Lock()
		c, found := iss.codes[r.PostFormValue("code")]
		delete(iss.codes, r.PostFormValue("code"))
		mutate := iss.claims
		iss.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		switch {
		case id != oidcClientID || secret != oidcSecret:
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		case !found || r.PostFormValue("grant_type") != "authorization_code" || r.PostFormValue("redirect_uri") != c.redirect ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		now := time.Now()
		claims := map[string]any{"iss": iss.url, "aud": oidcClientID, "sub": c.user, "nonce": c.nonce,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mutate != nil {
			mutate(claims)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + c.user, "token_type": "Bearer", "expires_in": 3600,
			"id_token": iss.sign(t, claims)})
	})
	iss.srv = httptest.NewServer(mux)
	t.Cleanup(iss.srv.Close)
	_, port, _ := net.SplitHostPort(iss.srv.Listener.Addr().String())
	iss.url = "http://localhost:" + port
	return iss
}

// approve is the person signing in at the issuer: it returns the code
// for the authorization request q.
func (iss *issuer) approve(user string, q url.Values) string {
	code := rand.Text()
	iss.mu.Lock()
	defer iss.mu.Unlock()
	iss.codes[code] = issuedCode{user: user, nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	return code
}

func (iss *issuer) setClaims(f func(map[string]any)) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	iss.claims = f
}

func (iss *issuer) sign(t *testing.T, claims map[string]any) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: iss.key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Error(err)
		return ""
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Error(err)
		return ""
	}
	raw, _ := jws.CompactSerialize()
	return raw
}

// oidcEnv is the dashboard with OIDC sign-in over the real API handler and
// the real authenticator: user "ada" is a member of team-a, whose sandbox
// is sb; nobody else is in a team.
type oidcEnv struct {
	srv *httptest.Server
	iss *issuer
	sb  string
}

func newOIDCEnv(t *testing.T) *oidcEnv {
	t.Helper()
	iss := startIssuer(t)
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	if err := st.CreateTeam(ctx, store.Team{ID: "team-a", Name: "a", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(ctx, store.User{ID: "usr-ada", TeamID: "team-a", Issuer: iss.url, Subject: "ada", Role: store.RoleMember}); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(ctx, auth.Config{Store: st, OIDC: &auth.OIDCConfig{Issuer: iss.url, Audience: "app", ClientID: oidcClientID}})
	if err != nil {
		t.Fatal(err)
	}
	ag := fake.StartAgent(t, fake.AgentConfig{})
	sbs := fake.NewSandboxes(fake.SandboxesConfig{Agent: ag.Client()})
	sb, err := sbs.Create(ctx, sandbox.CreateRequest{TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	bus := events.NewBus(st, nil)
	t.Cleanup(func() { bus.Close() })
	apiSrv, err := server.New(server.Config{Sandboxes: sbs, Auth: authn, StagingDir: t.TempDir(), Events: bus})
	if err != nil {
		t.Fatal(err)
	}
	// The redirect URL names the server's address, known once it listens.
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(func() { apiSrv.CloseStreams(); srv.Close() })
	h, err = New(Config{API: apiSrv.Handler(), Auth: authn, SecretsKey: []byte("0123456789abcdef0123456789abcdef"),
		OIDC: &OIDCLogin{Issuer: iss.url, ClientID: oidcClientID, ClientSecret: oidcSecret, RedirectURL: srv.URL + OIDCCallbackPath}})
	if err != nil {
		t.Fatal(err)
	}
	return &oidcEnv{srv: srv, iss: iss, sb: sb.ID}
}

// start begins a sign-in in browser c and returns the issuer's
// authorization request.
func (e *oidcEnv) start(t *testing.T, c *http.Client) url.Values {
	t.Helper()
	resp, _ := get(t, c, e.srv.URL+"/ui/oidc/login?next=%2Fui%2Fsandboxes%2F"+e.sb)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil || !strings.HasPrefix(loc.String(), e.iss.url+"/authorize?") {
		t.Fatalf("start: %d %q, want a redirect to the issuer", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestOIDCSignIn(t *testing.T) {
	e := newOIDCEnv(t)
	tests := []struct {
		name   string
		user   string
		claims func(map[string]any)
		// callback changes the callback's query (the issuer's answer).
		callback func(q url.Values)
		// otherBrowser sends the callback from a browser that did not start the sign-in.
		otherBrowser bool
		status       int
		want         string
	}{
		{name: "success", user: "ada", status: http.StatusOK, want: "Signed in"},
		{name: "bad state", user: "ada", callback: func(q url.Values) { q.Set("state", "forged") }, status: http.StatusBadRequest, want: "not started in this browser"},
		{name: "no state", user: "ada", callback: func(q url.Values) { q.Del("state") }, status: http.StatusBadRequest, want: "not started in this browser"},
		{name: "another browser", user: "ada", otherBrowser: true, status: http.StatusBadRequest, want: "not started in this browser"},
		{name: "refused at the issuer", user: "ada", callback: func(q url.Values) { q.Del("code"); q.Set("error", "access_denied") }, status: http.StatusUnauthorized, want: "refused at localhost"},
		{name: "bad code", user: "ada", callback: func(q url.Values) { q.Set("code", "forged") }, status: http.StatusBadGateway, want: "could not be completed"},
		{name: "bad nonce", user: "ada", claims: func(c map[string]any) { c["nonce"] = "replayed" }, status: http.StatusUnauthorized, want: "could not be verified"},
		{name: "no nonce", user: "ada", claims: func(c map[string]any) { delete(c, "nonce") }, status: http.StatusUnauthorized, want: "could not be verified"},
		{name: "wrong audience", user: "ada", claims: func(c map[string]any) { c["aud"] = "other-app" }, status: http.StatusUnauthorized, want: "could not be verified"},
		{name: "expired token", user: "ada", claims: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, status: http.StatusUnauthorized, want: "already expired"},
		{name: "user with no team", user: "stranger", status: http.StatusForbidden, want: "not a member of any team"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.iss.setClaims(tt.claims)
			c := (&env{}).client(t)
			authz := e.start(t, c)
			q := url.Values{"code": {e.iss.approve(tt.user, authz)}, "state": {authz.Get("state")}}
			if tt.callback != nil {
				tt.callback(q)
			}
			if tt.otherBrowser {
				c = (&env{}).client(t)
			}
			resp, body := get(t, c, e.srv.URL+OIDCCallbackPath+"?"+q.Encode())
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) {
				t.Fatalf("callback: %d, want %d with %q:\n%s", resp.StatusCode, tt.status, tt.want, body)
			}
			signedIn := false
			for _, ck := range resp.Cookies() {
				signedIn = signedIn || ck.Name == sessionCookie && ck.MaxAge > 0
			}
			if signedIn != (tt.status == http.StatusOK) {
				t.Fatalf("session cookie set = %v after %d", signedIn, resp.StatusCode)
			}
			if tt.status != http.StatusOK {
				return
			}
			if !strings.Contains(body, `content="0;url=/ui/sandboxes/`+e.sb+`"`) {
				t.Errorf("the signed-in page does not go on to the page asked for:\n%s", body)
			}
			resp, body = get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sb)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, "ada") {
				t.Fatalf("after sign-in: %d, want the sandbox's page as ada:\n%s", resp.StatusCode, body)
			}
			// The flow cookie was used up: the same answer again is refused.
			if resp, _ := get(t, c, e.srv.URL+OIDCCallbackPath+"?"+q.Encode()); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("replayed callback: %d, want 400", resp.StatusCode)
			}
		})
	}
}

func TestOIDCConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  OIDCLogin
		ok   bool
	}{
		{"ok", OIDCLogin{Issuer: "https://id.example.com", ClientID: "c", RedirectURL: "https://paddock.example.com/ui/oidc/callback"}, true},
		{"no client", OIDCLogin{Issuer: "https://id.example.com", RedirectURL: "https://paddock.example.com/ui/oidc/callback"}, false},
		{"other path", OIDCLogin{Issuer: "https://id.example.com", ClientID: "c", RedirectURL: "https://paddock.example.com/callback"}, false},
		{"relative", OIDCLogin{Issuer: "https://id.example.com", ClientID: "c", RedirectURL: "/ui/oidc/callback"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.validate(); (err == nil) != tt.ok {
				t.Errorf("validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
	// The token-only fake cannot check ID tokens.
	_, err := New(Config{API: http.NotFoundHandler(), Auth: &tokens{}, SecretsKey: make([]byte, 32),
		OIDC: &OIDCLogin{Issuer: "https://id.example.com", ClientID: "c", RedirectURL: "https://p.example.com/ui/oidc/callback"}})
	if err == nil {
		t.Error("New accepted OIDC sign-in with an authenticator that cannot verify ID tokens")
	}

	// An issuer that is down: the button leads to a page that says so,
	// and paddock itself started.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	h, err := New(Config{API: http.NotFoundHandler(), Auth: idTokens{&tokens{}}, SecretsKey: make([]byte, 32),
		OIDC: &OIDCLogin{Issuer: down.URL, ClientID: "c", RedirectURL: "https://p.example.com/ui/oidc/callback"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if resp, body := get(t, (&env{}).client(t), srv.URL+"/ui/oidc/login"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
		t.Errorf("issuer down: %d, want 503 saying so:\n%s", resp.StatusCode, body)
	}
}

// idTokens is the token-only fake that also "verifies" ID tokens (none).
type idTokens struct{ *tokens }

func (idTokens) AuthenticateIDToken(context.Context, string, string) (auth.Principal, error) {
	return auth.Principal{}, auth.ErrInvalidToken
}

// TestBrowserOIDC clicks "Sign in with" through the issuer's login page
// (on another site, as a real issuer is) into the dashboard.
func TestBrowserOIDC(t *testing.T) {
	e := newOIDCEnv(t)
	c := webtest.New(t, 1024, 768)
	c.Do("sign in at the issuer",
		chromedp.Navigate(e.srv.URL+"/ui/sandboxes/"+e.sb),
		chromedp.WaitVisible(chromedp.CSS("#oidc-login")),
		chromedp.Click(chromedp.CSS("#oidc-login")),
		chromedp.WaitVisible(chromedp.CSS("#user")),
		chromedp.SendKeys(chromedp.CSS("#user"), "ada"),
		chromedp.Click(chromedp.CSS("#issuer-login")),
	)
	c.Do("land on the page asked for, signed in", chromedp.WaitVisible(chromedp.CSS("#stop")))
	loc, err := chromedp.Run(c.Ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	who, err := chromedp.Run(c.Ctx, chromedp.Text(chromedp.CSS(".who")))
	if err != nil {
		t.Fatal(err)
	}
	if loc != e.srv.URL+"/ui/sandboxes/"+e.sb || !strings.Contains(who, "ada") {
		t.Errorf("signed in at %s as %q, want the sandbox's page as ada", loc, who)
	}
	if errs := c.ConsoleErrors("favicon.ico"); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
