// Package source fetches what populates a sandbox's working directory at
// create time — a git repository or a tarball — on the host, and hands it
// back as one sanitized tar stream for the in-sandbox agent to unpack.
//
// Fetching happens on the host so that credentials never enter a sandbox and
// the sandbox's egress policy does not apply. That makes every fetch a
// request the host makes on a caller's behalf, so every connection goes
// through a dial guard (package netguard; see Config): link-local and
// metadata addresses, multicast and Config.Deny (the sandbox pool) are
// always refused, loopback and private ranges unless allowed, and file://
// URLs unless allowed. The guard runs on the resolved address right before
// connect(2), so a refused address sees no traffic and a DNS answer cannot
// redirect around it.
//
// Everything fetched is hostile: archive names, link targets, git tree
// entries and ref names, sizes. The tar this package emits holds only
// regular files, directories, symlinks (kept verbatim: they resolve inside
// the sandbox's own root, and nothing on the host follows them) and
// hardlinks to earlier files; names are relative, clean, without "..", and
// never pass through an earlier symlink.
//
// git over HTTP(S) uses go-git's transport registry, which is process-wide:
// New installs, once, an http(s) transport that serves only requests made
// inside a Fetch (it finds the Fetcher's guarded transport in the request's
// context) and refuses any other go-git HTTP use in the process.
package source

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxBytes   = 1 << 30
	DefaultMaxEntries = 1 << 20
	DefaultTimeout    = 10 * time.Minute
)

// Config configures a Fetcher.
type Config struct {
	// TempDir holds downloads and clones while they are streamed; default
	// os.TempDir(). Each fetch uses its own directory, removed afterwards.
	TempDir string
	// MaxBytes caps what one fetch downloads and, separately, the total size
	// of the files it unpacks; default 1 GiB.
	MaxBytes int64
	// MaxEntries caps the entries of one source; default 1Mi.
	MaxEntries int
	// Timeout bounds the network part of one fetch; default 10 minutes.
	Timeout time.Duration
	// AllowPrivate lets fetches reach loopback and private addresses
	// (netguard.Private: 10/8, 172.16/12, 192.168/16, 100.64/10, 198.18/15,
	// fc00::/7, 127/8, ::1 ...).
	AllowPrivate bool
	// Allow lists prefixes reachable even though private or loopback (a
	// company's git server). Reserved ranges and Deny still win.
	Allow []netip.Prefix
	// Deny lists prefixes never reachable, whatever else says: the sandbox
	// pool, so a source cannot be served by another sandbox, and the
	// operator's blocked ranges.
	Deny []netip.Prefix
	// AllowFile permits file:// git URLs, which read the host's own
	// filesystem: for tests only.
	AllowFile bool
	// Logger says when a fetch takes a slow path; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks a config after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.MaxBytes < 0:
		return fmt.Errorf("source config: negative MaxBytes")
	case c.MaxEntries < 0:
		return fmt.Errorf("source config: negative MaxEntries")
	case c.Timeout < 0:
		return fmt.Errorf("source config: negative Timeout")
	}
	if err := c.guard().Validate(); err != nil {
		return fmt.Errorf("source config: %w", err)
	}
	return nil
}

// guard is the dial guard of every fetch.
func (c *Config) guard() netguard.Guard {
	return netguard.Guard{AllowPrivate: c.AllowPrivate, Allow: c.Allow, Deny: c.Deny,
		Hint: "paddock serve --source-allow-private or --egress-allow-cidr"}
}

// Fetcher fetches sources. It is safe for concurrent use.
type Fetcher struct {
	cfg  Config
	http *httpTransport
}

// New returns a Fetcher for cfg.
func New(cfg Config) (*Fetcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.TempDir, 0o700); err != nil {
		return nil, fmt.Errorf("source: temp dir: %w", err)
	}
	installGitTransport()
	return &Fetcher{cfg: cfg, http: newHTTPTransport(cfg.guard())}, nil
}

// Close releases idle connections.
func (f *Fetcher) Close() error {
	f.http.t.CloseIdleConnections()
	return nil
}

// Fetch fetches src and returns a tar stream of its content, relative to
// the directory it is to land in, and what to record about it (Dir is left
// to the caller). The stream may still fail with a *sandbox.Error (a hostile
// entry, the size cap); closing it releases everything the fetch holds on
// the host. ctx bounds the fetch and the stream.
func (f *Fetcher) Fetch(ctx context.Context, src sandbox.Source) (io.ReadCloser, *sandbox.SourceInfo, error) {
	u, err := ParseURL(src.Type, src.URL)
	if err != nil {
		return nil, nil, err
	}
	switch src.Type {
	case sandbox.SourceGit:
		return f.fetchGit(ctx, src, u)
	case sandbox.SourceTarball:
		return f.fetchTarball(ctx, src, u)
	}
	return nil, nil, invalidf("source_invalid", "unknown source type %q", src.Type)
}

// ParseURL parses a source URL and checks its scheme: http or https, or
// for git also file (which Fetch refuses unless Config.AllowFile). Userinfo
// is allowed (it becomes credentials); Redact removes it for records.
func ParseURL(typ, raw string) (*url.URL, error) {
	if raw == "" || len(raw) > 8192 || strings.ContainsAny(raw, "\x00\r\n") {
		return nil, invalidf("source_invalid_url", "source url must be 1 to 8192 characters without control characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalidf("source_invalid_url", "source url: %v", redactErr(err, raw))
	}
	switch {
	case u.Scheme == "http" || u.Scheme == "https":
		if u.Host == "" || u.Hostname() == "" {
			return nil, invalidf("source_invalid_url", "source url %q has no host", Redact(u))
		}
	case u.Scheme == "file" && typ == sandbox.SourceGit:
		if u.Host != "" && u.Host != "localhost" || u.Path == "" {
			return nil, invalidf("source_invalid_url", "file url %q must be file:///absolute/path", Redact(u))
		}
	default:
		return nil, invalidf("source_invalid_url", "source url scheme %q is not supported (http, https)", u.Scheme)
	}
	return u, nil
}

// Redact returns u as a string without its credentials: no userinfo, no
// fragment, and every query value replaced (presigned URLs carry their
// signature and key in the query: X-Amz-Signature, sig, token...). The
// names stay, so a reader still sees what kind of URL it was. This is what
// records, logs and answers keep of a source URL.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			q[k] = []string{"redacted"}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// redactErr keeps a url.Parse error from echoing credentials.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if i := strings.Index(raw, "@"); i >= 0 {
		msg = strings.ReplaceAll(msg, raw, "<url>")
	}
	return msg
}
