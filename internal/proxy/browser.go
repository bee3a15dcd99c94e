package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// What a browser may do with what a sandbox answers. Every sandbox host
// (<port>-<id>.<domain>, app-<id>.<domain>) is one site with every other
// tenant's, and the path forms (/s/<id>/<port>/, /api/v1/projects/<id>/app/)
// share the API's own origin. A sandbox's response is therefore not allowed
// to reach past its own origin: no cookies for the parent domain or the
// API's origin, no service worker over the API's origin, no clearing of
// other origins' data, and on the path form an opaque origin for whatever
// document it serves.

// PathFormCSP is added to every path-form response. A document served
// there runs in an opaque origin: its scripts cannot read the API origin's
// responses, cookies or storage, and its requests are cross-site, so the
// SameSite=Lax token cookies of other sandboxes' paths never go with them.
// Scripts, forms and popups still work, so an app's own pages stay usable.
const PathFormCSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"

// FilterResponse strips what a sandbox must not set in a browser. shared
// is true on the path forms, whose origin is the API's.
func FilterResponse(resp *http.Response, shared bool) {
	h := resp.Header
	// A worker script may claim a scope wider than its directory only
	// through this header: a sandbox's worker would then see every later
	// request to paddock in that browser.
	h.Del("Service-Worker-Allowed")
	// "cookies" and "storage" clear the whole registrable domain's, which
	// is every tenant's and, on the path form, the API's.
	h.Del("Clear-Site-Data")
	if shared {
		h.Del("Set-Cookie")
		h.Add("Content-Security-Policy", PathFormCSP)
		return
	}
	keepHostOnlyCookies(h)
}

// keepHostOnlyCookies drops every Set-Cookie that names a Domain (it would
// reach the parent domain, so every other sandbox and app host, and could
// shadow their token cookies) or paddock's own cookie name, and any it
// cannot parse. Host-only cookies of the sandbox's own host pass as sent.
func keepHostOnlyCookies(h http.Header) {
	lines := h.Values("Set-Cookie")
	if len(lines) == 0 {
		return
	}
	h.Del("Set-Cookie")
	for _, line := range lines {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Domain != "" || strings.EqualFold(c.Name, TokenCookie) {
			continue
		}
		h.Add("Set-Cookie", line)
	}
}

var (
	errServiceWorker = sandbox.Errorf(sandbox.ErrForbidden, "service_worker_refused",
		"service workers cannot be registered on the API's origin: serve the page from the port's host form (<port>-<id>.<domain>)")
	errCrossSite = sandbox.Errorf(sandbox.ErrForbidden, "cross_site_request",
		"a cross-site request cannot use paddock's cookie: send the token in the X-Paddock-Token or Authorization header")
)

// RefuseServiceWorker answers a browser's fetch of a service worker script
// on the path form: a worker registered there would control the API's
// origin. Browsers mark that fetch with "Service-Worker: script".
func RefuseServiceWorker(r *http.Request) error {
	if r.Header.Get("Service-Worker") != "" {
		return errServiceWorker
	}
	return nil
}

// safeMethod reports the methods a cross-site page can make a browser send
// with cookies without any effect the server should act on (RFC 9110
// safe methods).
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// explicitCredential reports whether r carries a credential a cross-site
// page cannot make a browser send: a header (which needs a CORS preflight
// the sandbox host never grants on paddock's behalf), not a cookie.
func explicitCredential(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || r.Header.Get(TokenHeader) != ""
}

// CheckSameOrigin refuses an unsafe request a browser sent from another
// origin when it relies on an ambient credential (the cookie or a token in
// the URL): another tenant's page on a sibling host is same-site, so
// SameSite=Lax alone does not stop it. Requests without the Fetch Metadata
// and Origin headers (programs, old browsers) pass: they carry no cookie a
// third party chose to send.
func CheckSameOrigin(r *http.Request) error {
	if safeMethod(r.Method) || explicitCredential(r) {
		return nil
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return nil
	case "":
	default: // same-site, cross-site
		return errCrossSite
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return errCrossSite // "null" (an opaque origin) included
	}
	return nil
}
