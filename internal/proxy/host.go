package proxy

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// pathRoot starts every path-form URL: /s/<id>/<port>/rest.
const pathRoot = "/s/"

// Route is how one declared port of a sandbox is reached: the Subdomain
// label under the proxy's domain and the full URL. The URL carries no
// credentials; a private port needs a token (see Signer) or the owner's token.
type Route struct {
	Port      int    `json:"port"`
	Subdomain string `json:"Subdomain"`
	URL       string `json:"url"`
}

// RouteFor builds the route of port on sandbox id under baseURL, the
// proxy's public base such as "https://sandbox.example.com" or
// "http://localhost:7420" (a bare domain means https). The URL keeps
// baseURL's scheme and port: "http://localhost:7420" gives
// "http://3000-sb-abc.localhost:7420/".
//
// DNS labels hold at most 63 bytes, so ids longer than 57 characters give a
// Subdomain that wildcard DNS and certificates will not serve; such
// sandboxes are still reachable through the path form (/s/<id>/<port>/).
func RouteFor(id string, port int, baseURL string) (Route, error) {
	if !sandbox.ValidID(id) {
		return Route{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "invalid sandbox id %q", id)
	}
	if port < 1 || port > 65535 {
		return Route{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_port", "port %d is outside 1-65535", port)
	}
	if !strings.Contains(baseURL, "://") {
		baseURL = "https://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return Route{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_base_url",
			"proxy base URL %q is not an http(s) URL with a host", baseURL)
	}
	sub := label(id, port)
	host := sub + "." + strings.ToLower(strings.Trim(u.Hostname(), "."))
	if p := u.Port(); p != "" {
		host = net.JoinHostPort(host, p)
	}
	return Route{Port: port, Subdomain: sub, URL: (&url.URL{Scheme: u.Scheme, Host: host, Path: "/"}).String()}, nil
}

// PathPrefix is the path-form prefix of port on sandbox id, without the
// trailing slash: "/s/<id>/<port>". The proxy strips it before forwarding.
func PathPrefix(id string, port int) string {
	return pathRoot + id + "/" + strconv.Itoa(port)
}

func label(id string, port int) string { return fmt.Sprintf("%d-%s", port, id) }

// ParseHost extracts the sandbox id and port from a request's Host of the
// form <port>-<sandboxid>.<domain>, such as "3000-sb-abc.localhost:7420"
// with domain "localhost". The request's own :port is ignored, letters are
// compared case-insensitively, and anything else (more labels, a leading
// zero in the port, an invalid id) is rejected. Pure, so it is tested by
// table and safe to call for every request.
func ParseHost(host, domain string) (sandboxID string, port int, ok bool) {
	sub, ok := Subdomain(host, domain)
	if !ok || strings.Contains(sub, ".") {
		return "", 0, false
	}
	portStr, id, ok := strings.Cut(sub, "-")
	if !ok {
		return "", 0, false
	}
	port, ok = parsePort(portStr)
	if !ok || !sandbox.ValidID(id) {
		return "", 0, false
	}
	return id, port, true
}

// Subdomain returns what precedes ".<domain>" in host, lowercased, with the
// host's port and a trailing root dot removed. Only ASCII hosts match: a
// DNS name is ASCII on the wire (IDNs travel as punycode), and Unicode case
// mapping folds some other letters onto ASCII ones (U+212A KELVIN SIGN
// lowercases to "k"), which would give a sandbox's host a second spelling.
func Subdomain(host, domain string) (string, bool) {
	d := NormalizeDomain(domain)
	if d == "" {
		return "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf {
			return "", false
		}
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	sub, ok := strings.CutSuffix(h, "."+d)
	if !ok || sub == "" {
		return "", false
	}
	return sub, true
}

func NormalizeDomain(d string) string { return strings.Trim(strings.ToLower(d), ".") }

// ParsePath extracts the sandbox id and port from a path of the form
// /s/<id>/<port>/rest and returns rest (always starting with "/") as the
// path to forward. A path that stops right after the port ("/s/sb/3000")
// parses with rest "/"; the handler redirects it to the slash form so that
// relative links in the app resolve under the prefix.
func ParsePath(path string) (sandboxID string, port int, rest string, ok bool) {
	s, ok := strings.CutPrefix(path, pathRoot)
	if !ok {
		return "", 0, "", false
	}
	id, after, ok := strings.Cut(s, "/")
	if !ok || !sandbox.ValidID(id) {
		return "", 0, "", false
	}
	portStr, rest, _ := strings.Cut(after, "/")
	port, ok = parsePort(portStr)
	if !ok {
		return "", 0, "", false
	}
	return id, port, "/" + rest, true
}

// parsePort accepts 1-65535 written canonically (no sign, no leading zero),
// so that every port has exactly one host name and one path.
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 65535 {
		return 0, false
	}
	return n, true
}
