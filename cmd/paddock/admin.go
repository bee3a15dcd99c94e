package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
)

// tokenCmd manages API tokens: create (the secret is printed once), ls, rm.
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("token", "create, ls, rm", args, stderr)
	if err != nil {
		return err
	}
	fs, cf := sc.fs, &sc.cf
	team := fs.String("team", "", "team id (default: the caller's team)")
	var user, role string
	var ttl time.Duration
	var e2b bool
	// "new" is create's alias, so it takes create's flags too.
	if sc.verb == "create" || sc.verb == "new" {
		fs.StringVar(&user, "user", "", "bind the token to this user of the team")
		fs.StringVar(&role, "role", api.RoleMember, "member or admin")
		fs.DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 720h (default: no expiry)")
		fs.BoolVar(&e2b, "e2b", false, "spell the secret as an E2B API key (e2b_...), for E2B's SDKs (E2B_API_KEY)")
	}
	// The arguments are checked per verb: rm takes any number of ids.
	if err := fs.Parse(sc.args); err != nil {
		return usagef("token %s: %v", sc.verb, err)
	}
	switch sc.verb {
	case "create", "new":
		if fs.NArg() != 1 {
			return usagef("token create: give one token name")
		}
		if ttl < 0 || (ttl > 0 && ttl < time.Second) {
			return usagef("token create: --ttl must be at least 1s")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.CreateTokenRequest{
			TeamID: *team, UserID: user, Name: fs.Arg(0), Role: role, TTLSeconds: int64(ttl / time.Second),
		}
		if e2b {
			req.Format = string(auth.FormatE2B)
		}
		tok, err := c.CreateToken(ctx, req)
		if err != nil {
			return err
		}
		// The secret alone on stdout, so that scripts can capture it.
		fmt.Fprintln(stdout, tok.Secret)
		fmt.Fprintf(stderr, "token %s (%s, team %s, role %s): the secret above is shown only once\n", tok.ID, tok.Name, tok.TeamID, tok.Role)
		return nil

	case "ls", "list":
		if fs.NArg() != 0 {
			return usagef("token ls: unexpected arguments %q", fs.Args())
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		toks, err := c.ListTokens(ctx, *team)
		if err != nil {
			return err
		}
		tab := newTable(stdout, "ID", "NAME", "TEAM", "ROLE", "USER", "CREATED", "EXPIRES")
		for _, t := range toks {
			expires := "never"
			if !t.ExpiresAt.IsZero() {
				expires = t.ExpiresAt.Local().Format("2006-01-02 15:04")
			}
			tab.row(t.ID, t.Name, t.TeamID, t.Role, dash(t.UserID), ago(t.CreatedAt), expires)
		}
		return tab.flush()

	case "rm", "revoke", "delete":
		if fs.NArg() == 0 {
			return usagef("token rm: missing token id")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range fs.Args() {
			if err := c.DeleteToken(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("token %s: %w", id, err))
			}
		}
		return errors.Join(errs...)

	default:
		return usagef("token: unknown subcommand %q (create, ls, rm)", sc.verb)
	}
}

// userCmd manages a team's users: create (an OIDC identity needs the host
// admin), ls, rm (which revokes the user's tokens).
func userCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("user", "create, ls, rm", args, stderr)
	if err != nil {
		return err
	}
	fs, cf := sc.fs, &sc.cf
	team := fs.String("team", "", "team id (default: the caller's team, when it has one)")
	var req api.CreateUserRequest
	if sc.verb == "create" || sc.verb == "new" {
		fs.StringVar(&req.Subject, "subject", "", "OIDC subject (the configured claim's value; host admin only)")
		fs.StringVar(&req.Issuer, "issuer", "", "OIDC issuer (default: the server's)")
		fs.StringVar(&req.Email, "email", "", "e-mail address")
		fs.StringVar(&req.Role, "role", api.RoleMember, "member or admin")
	}
	if err := fs.Parse(sc.args); err != nil {
		return usagef("user %s: %v", sc.verb, err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	teamID := *team
	if teamID == "" {
		teams, err := c.ListTeams(ctx)
		if err != nil {
			return err
		}
		if len(teams) != 1 {
			return usagef("user %s: give --team (you see %d teams)", sc.verb, len(teams))
		}
		teamID = teams[0].ID
	}
	switch sc.verb {
	case "create", "new":
		if fs.NArg() > 1 {
			return usagef("user create: give at most one name")
		}
		req.Name = fs.Arg(0)
		u, err := c.CreateUser(ctx, teamID, req)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, u.ID)
		return nil

	case "ls", "list":
		if fs.NArg() != 0 {
			return usagef("user ls: unexpected arguments %q", fs.Args())
		}
		users, err := c.ListUsers(ctx, teamID)
		if err != nil {
			return err
		}
		tab := newTable(stdout, "ID", "NAME", "EMAIL", "ROLE", "SUBJECT", "CREATED")
		for _, u := range users {
			tab.row(u.ID, dash(u.Name), dash(u.Email), u.Role, dash(u.Subject), ago(u.CreatedAt))
		}
		return tab.flush()

	case "rm", "delete":
		if fs.NArg() == 0 {
			return usagef("user rm: missing user id")
		}
		var errs []error
		for _, id := range fs.Args() {
			if err := c.DeleteUser(ctx, teamID, id); err != nil {
				errs = append(errs, fmt.Errorf("user %s: %w", id, err))
			}
		}
		return errors.Join(errs...)

	default:
		return usagef("user: unknown subcommand %q (create, ls, rm)", sc.verb)
	}
}

// teamCmd creates and lists teams, and shows and sets their limits.
func teamCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("team", "create, ls, limits", args, stderr)
	if err != nil {
		return err
	}
	fs, cf := sc.fs, &sc.cf
	if sc.verb == "limits" {
		return teamLimits(ctx, sc, stdout)
	}
	if err := fs.Parse(sc.args); err != nil {
		return usagef("team %s: %v", sc.verb, err)
	}
	switch sc.verb {
	case "create", "new":
		if fs.NArg() != 1 {
			return usagef("team create: give one team name")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		t, err := c.CreateTeam(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, t.ID)
		return nil

	case "ls", "list":
		if fs.NArg() != 0 {
			return usagef("team ls: unexpected arguments %q", fs.Args())
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		teams, err := c.ListTeams(ctx)
		if err != nil {
			return err
		}
		tab := newTable(stdout, "ID", "NAME", "CREATED")
		for _, t := range teams {
			tab.row(t.ID, t.Name, ago(t.CreatedAt))
		}
		return tab.flush()

	default:
		return usagef("team: unknown subcommand %q (create, ls, limits)", sc.verb)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// authFlags are serve's authentication flags, made into daemon.Config's
// OIDC and ResetAdminToken.
type authFlags struct {
	oidcIssuer      string
	oidcAudience    string
	oidcJWKSURL     string
	oidcUserClaim   string
	oidcDefaultTeam string
	// The dashboard's own client at the issuer, for its "Sign in with"
	// button.
	oidcClientID, oidcClientSecretFile, oidcRedirectURL string
	resetAdminToken                                     bool
}

func (f *authFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.oidcIssuer, "oidc-issuer", "", "accept OIDC ID tokens (JWTs) from this issuer too (https, or http on loopback)")
	fs.StringVar(&f.oidcAudience, "oidc-audience", "", "the audience (client id) OIDC tokens must carry; required with --oidc-issuer")
	fs.StringVar(&f.oidcJWKSURL, "oidc-jwks-url", "", "the issuer's keys, for issuers without discovery")
	fs.StringVar(&f.oidcUserClaim, "oidc-user-claim", auth.DefaultUserClaim, "the claim that names the user (sub, email, ...)")
	fs.StringVar(&f.oidcDefaultTeam, "oidc-default-team", "", "add unknown OIDC users to this team as members (default: refuse them)")
	fs.StringVar(&f.oidcClientID, "oidc-client-id", "", "the dashboard's client id at the issuer: adds \"Sign in with\" to the dashboard (its ID tokens are accepted too)")
	fs.StringVar(&f.oidcClientSecretFile, "oidc-client-secret-file", "", "a file holding the dashboard client's secret (default: a public client, PKCE alone)")
	fs.StringVar(&f.oidcRedirectURL, "oidc-redirect-url", "", "the dashboard's redirect URI registered at the issuer (default: <public-url>/ui/oidc/callback)")
	fs.BoolVar(&f.resetAdminToken, "reset-admin-token", false, "revoke the host admin token and print a new one")
}

func (f authFlags) oidc() *auth.OIDCConfig {
	if f.oidcIssuer == "" && f.oidcAudience == "" && f.oidcJWKSURL == "" && f.oidcClientID == "" {
		return nil
	}
	return &auth.OIDCConfig{Issuer: f.oidcIssuer, Audience: f.oidcAudience, JWKSURL: f.oidcJWKSURL,
		UserClaim: f.oidcUserClaim, DefaultTeam: f.oidcDefaultTeam, ClientID: f.oidcClientID}
}

// oidcClientSecret reads the dashboard client's secret: from a file, so
// it is not in the process list.
func (f authFlags) oidcClientSecret() (string, error) {
	if f.oidcClientSecretFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(f.oidcClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("--oidc-client-secret-file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("--oidc-client-secret-file: %s is empty", f.oidcClientSecretFile)
	}
	return secret, nil
}

// teamLimits shows a team's admission limits and use, or (host admin)
// sets them: `paddock team limits [--preset P] [--concurrent N] ... TEAM`,
// `--reset` to return to the server's default.
func teamLimits(ctx context.Context, sc *subcommand, stdout io.Writer) error {
	fs := sc.fs
	var l api.TeamLimits
	fs.StringVar(&l.Preset, "preset", "", "preset: hobby (10 sandboxes) or pro (2,000)")
	fs.IntVar(&l.Concurrent, "concurrent", 0, "pending and running sandboxes at once (0: the preset's, or none)")
	fs.Float64Var(&l.VCPUs, "vcpus", 0, "their vCPUs together (0: the preset's, or none)")
	fs.Int64Var(&l.MemoryMB, "memory-mb", 0, "their memory together, in MiB (0: the preset's, or none)")
	fs.IntVar(&l.CreatesPerMinute, "creates-per-minute", 0, "creates in any minute (0: the preset's, or none)")
	reset := fs.Bool("reset", false, "return the team to the server's default limits")
	c, err := sc.connect(1, "one team id (flags before it)")
	if err != nil {
		return err
	}
	team := fs.Arg(0)
	set := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "preset", "concurrent", "vcpus", "memory-mb", "creates-per-minute":
			set = true
		}
	})
	var st api.TeamAdmission
	switch {
	case *reset && set:
		return usagef("team limits: --reset takes no limits")
	case *reset:
		st, err = c.ResetTeamLimits(ctx, team)
	case set:
		st, err = c.SetTeamLimits(ctx, team, l)
	default:
		st, err = c.TeamLimits(ctx, team)
	}
	if err != nil {
		return err
	}
	limit := func(n float64) string {
		if n == 0 {
			return "-"
		}
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	source := "custom"
	switch {
	case st.Default:
		source = "server default"
	case st.Limits.Preset != "":
		source = "preset " + st.Limits.Preset
		if st.Limits != (api.TeamLimits{Preset: st.Limits.Preset}) {
			source += " with custom values"
		}
	}
	fmt.Fprintf(stdout, "team %s: %s limits\n", st.TeamID, source)
	e, u := st.Effective, st.Usage
	tab := newTable(stdout, "", "USED", "LIMIT")
	tab.row("sandboxes", strconv.Itoa(u.Concurrent), limit(float64(e.Concurrent)))
	tab.row("vcpus", strconv.FormatFloat(u.VCPUs, 'f', -1, 64), limit(e.VCPUs))
	tab.row("memory-mb", strconv.FormatInt(u.MemoryMB, 10), limit(float64(e.MemoryMB)))
	tab.row("creates/min", strconv.Itoa(u.CreatesLastMinute), limit(float64(e.CreatesPerMinute)))
	tab.row("queued", strconv.Itoa(u.Queued), "-")
	return tab.flush()
}
