package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// clientFlags are the connection flags every client subcommand takes.
type clientFlags struct {
	url, token string
	// ca is the development CA of the local server's client.json, set by
	// resolve when the URL comes from there.
	ca string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "server URL (default $PADDOCK_URL, else the local client.json)")
	fs.StringVar(&c.token, "token", "", "API token (default $PADDOCK_TOKEN, else the local client.json)")
}

// client resolves each setting from the flag, else the environment, else
// the client.json of the local server.
func (c *clientFlags) client() (*sdk.Client, error) {
	url, token, err := c.resolve()
	if err != nil {
		return nil, err
	}
	if c.ca == "" {
		return sdk.New(url, token), nil
	}
	hc, err := trustingClient(c.ca)
	if err != nil {
		return nil, err
	}
	return sdk.New(url, token, sdk.WithHTTPClient(hc)), nil
}

// trustingClient is an HTTP client that trusts the CA in caFile besides
// the system's roots (a local server's development CA).
func trustingClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("the local server's CA: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the local server's CA %s holds no certificate", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}, nil
}

// resolve is client's choice of the server's URL and the token.
func (c *clientFlags) resolve() (url, token string, err error) {
	url, token = c.url, c.token
	if url == "" {
		url = os.Getenv("PADDOCK_URL")
	}
	if token == "" {
		token = os.Getenv("PADDOCK_TOKEN")
	}
	path := filepath.Join(defaultDataDir(), "client.json")
	if url == "" || token == "" {
		if data, err := os.ReadFile(path); err == nil {
			var cc clientConfig
			if err := json.Unmarshal(data, &cc); err != nil {
				return "", "", fmt.Errorf("parse %s: %w", path, err)
			}
			if url == "" {
				url, c.ca = cc.URL, cc.CA
			}
			if token == "" {
				token = cc.Token
			}
		}
	}
	if url == "" || token == "" {
		return "", "", fmt.Errorf("no paddock server configured: pass --url and --token, set PADDOCK_URL and PADDOCK_TOKEN, or run 'paddock serve' on this machine (it writes %s)", path)
	}
	return url, token, nil
}

// formatLabels shows labels as k=v,k=v in key order.
func formatLabels(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

// envFlag collects repeated --env K=V.
type envFlag map[string]string

func (e envFlag) String() string { return "" }

func (e envFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", v)
	}
	e[k] = val
	return nil
}

// portsFlag collects repeated --port N (private) and --public-port N.
type portsFlag struct {
	ports  *[]api.PortSpec
	public bool
}

func (p portsFlag) String() string { return "" }

func (p portsFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port in [1, 65535], got %q", v)
	}
	*p.ports = append(*p.ports, api.PortSpec{Port: n, Public: p.public})
	return nil
}

func sandboxCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("sandbox: missing subcommand (create, ls, label, exec, shell, cp, url, policy, snapshot, fork, pause, resume, stop, rm)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sandbox "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	parse := func() error {
		if err := fs.Parse(args); err != nil {
			return usagef("sandbox %s: %v", sub, err)
		}
		return nil
	}
	switch sub {
	case "create":
		image := fs.String("image", "host", `image of the sandbox: "host" or a ref pulled or imported with "paddock image"`)
		snapshot := fs.String("snapshot", "", `start from this snapshot ("paddock sandbox snapshot") instead of an image`)
		rt := fs.String("runtime", "", `runtime of the sandbox: runc or gvisor (default: the snapshot's, else the server's; see "paddock runtimes")`)
		vcpus := fs.Float64("vcpus", 0, "CPU share (0: server default)")
		memory := fs.Int64("memory", 0, "memory limit in MB (0: server default)")
		disk := fs.String("disk", "", "cap of the sandbox's writable layer, such as 1G or 512M (default: the server's)")
		timeout := fs.Duration("timeout", 0, "stop the sandbox after this long (0: server default)")
		env := envFlag{}
		fs.Var(env, "env", "default environment of its commands, K=V (repeatable)")
		var ports []api.PortSpec
		fs.Var(portsFlag{ports: &ports}, "port", "serve this port through the proxy, private (repeatable)")
		fs.Var(portsFlag{ports: &ports, public: true}, "public-port", "serve this port through the proxy to anyone (repeatable)")
		var vols []api.VolumeMount
		fs.Var(volumesFlag{vols: &vols}, "volume", "mount a named volume, name:/path (read-write) or name:/path:cow (repeatable)")
		labels := envFlag{}
		fs.Var(labels, "label", "a label of the sandbox, k=v (repeatable)")
		source := sourceFlags(fs)
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("sandbox create: unexpected arguments %q", fs.Args())
		}
		imageSet := false
		fs.Visit(func(f *flag.Flag) { imageSet = imageSet || f.Name == "image" })
		if *snapshot != "" {
			if imageSet {
				return usagef("sandbox create: --image and --snapshot exclude each other")
			}
			*image = ""
		}
		src, err := source()
		if err != nil {
			return err
		}
		diskMB, err := parseMB(*disk)
		if err != nil {
			return usagef("sandbox create: --disk: %v", err)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		sb, err := c.Create(ctx, api.CreateSandboxRequest{
			Image: *image, Snapshot: *snapshot, Resources: api.Resources{VCPUs: *vcpus, MemoryMB: *memory, DiskMB: diskMB},
			TimeoutMs: timeout.Milliseconds(), Env: env, Ports: ports, Volumes: vols, Source: src, Labels: labels, Runtime: *rt,
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, sb.ID)
		return nil

	case "url":
		ttl := fs.Duration("ttl", time.Hour, "how long the URL opens the port (at most 7 days)")
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return usagef("sandbox url: want <id> <port>")
		}
		port, err := strconv.Atoi(fs.Arg(1))
		if err != nil {
			return usagef("sandbox url: port %q is not a number", fs.Arg(1))
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		u, err := c.Sandbox(fs.Arg(0)).SignedURL(ctx, port, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, u.URL)
		return nil

	case "policy":
		return policyCmd(ctx, fs, &cf, parse, stdout)

	case "snapshot":
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return usagef("sandbox snapshot: want <id>")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		snap, err := c.Sandbox(fs.Arg(0)).Snapshot(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, snap.ID)
		return nil

	case "fork":
		timeout := fs.Duration("timeout", 0, "stop the fork after this long (0: server default)")
		env := envFlag{}
		fs.Var(env, "env", "default environment of its commands over the source's, K=V (repeatable)")
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return usagef("sandbox fork: want <id>")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		sb, err := c.Sandbox(fs.Arg(0)).Fork(ctx, &api.CreateSandboxRequest{TimeoutMs: timeout.Milliseconds(), Env: env})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, sb.ID)
		return nil

	case "label":
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() < 1 {
			return usagef("sandbox label: want <id> [k=v]... (no labels removes them all)")
		}
		labels := envFlag{}
		for _, kv := range fs.Args()[1:] {
			if err := labels.Set(kv); err != nil {
				return usagef("sandbox label: %v", err)
			}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		sb := c.Sandbox(fs.Arg(0))
		if err := sb.SetLabels(ctx, labels); err != nil {
			return err
		}
		fmt.Fprintln(stdout, formatLabels(sb.Labels))
		return nil

	case "ls", "list":
		state := fs.String("state", "", "only sandboxes in this state (running, stopped...)")
		labels := envFlag{}
		fs.Var(labels, "label", "only sandboxes with this label, k=v (repeatable, all must match)")
		sudo := fs.Bool("sudo", false, "with <id>: list as root in the sandbox")
		depth := fs.Int("depth", 1, "with <id>: levels to list (1: the directory's own entries)")
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() > 2 || (fs.NArg() > 0 && (*state != "" || len(labels) > 0)) {
			return usagef("sandbox ls: want [--state S] [--label k=v], or <id> [path] to list a directory")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if fs.NArg() > 0 {
			sb := c.Sandbox(fs.Arg(0))
			dir := fs.Arg(1)
			if dir == "" { // the user's home
				if err := sb.Refresh(ctx); err != nil {
					return err
				}
				dir = "/"
				if sb.User != nil && sb.User.Home != "" {
					dir = sb.User.Home
				}
			}
			var opts []sdk.ReadOption
			if *sudo {
				opts = append(opts, sdk.ReadSudo())
			}
			l, err := sb.ListDir(ctx, dir, *depth, opts...)
			if err != nil {
				return err
			}
			return printListing(stdout, l)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tIMAGE\tRUNTIME\tVCPUS\tMEMORY\tCREATED\tEXPIRES\tLABELS")
		for sb, err := range c.List(ctx, sdk.ListOptions{State: *state, Limit: 100, Labels: labels}) {
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%dMB\t%s\t%s\t%s\n", sb.ID, sb.Status, sb.Image, sb.Runtime, sb.Resources.VCPUs,
				sb.Resources.MemoryMB, ago(sb.CreatedAt), until(sb.ExpiresAt, sb.Status), formatLabels(sb.Labels))
		}
		return tw.Flush()

	case "exec":
		sudo := fs.Bool("sudo", false, "run as root in the sandbox")
		cwd := fs.String("cwd", "", "working directory (default: the user's home)")
		timeout := fs.Duration("timeout", 0, "kill the command after this long")
		env := envFlag{}
		fs.Var(env, "env", "environment variable K=V (repeatable)")
		if err := parse(); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) < 2 {
			return usagef("sandbox exec: want <id> -- <cmd> [args...]")
		}
		id, argv := rest[0], rest[1:]
		if argv[0] == "--" {
			argv = argv[1:]
		}
		if len(argv) == 0 {
			return usagef("sandbox exec: missing command")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		return execCmd(ctx, c.Sandbox(id), api.CommandRequest{
			Cmd: argv[0], Args: argv[1:], Cwd: *cwd, Env: env, Sudo: *sudo,
			TimeoutMs: timeout.Milliseconds(), Detached: true,
		}, stdout, stderr)

	case "shell":
		sudo := fs.Bool("sudo", false, "run as root in the sandbox")
		cwd := fs.String("cwd", "", "working directory (default: the user's home)")
		attach := fs.String("attach", "", "join the running terminal session with this command id")
		env := envFlag{}
		fs.Var(env, "env", "environment variable K=V (repeatable)")
		if err := parse(); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) < 1 {
			return usagef("sandbox shell: want <id> [-- <cmd> [args...]]")
		}
		id, argv := rest[0], rest[1:]
		if len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		if *attach != "" && (len(argv) > 0 || *sudo || *cwd != "" || len(env) > 0) {
			return usagef("sandbox shell: --attach takes no command, --sudo, --cwd or --env")
		}
		req := api.PTYRequest{Cwd: *cwd, Env: env, Sudo: *sudo}
		if len(argv) > 0 {
			req.Cmd, req.Args = argv[0], argv[1:]
		}
		if t := os.Getenv("TERM"); t != "" && env["TERM"] == "" {
			if req.Env == nil {
				req.Env = map[string]string{}
			}
			req.Env["TERM"] = t
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		return shellCmd(ctx, c.Sandbox(id), req, *attach, os.Stdin, stdout, stderr)

	case "cp":
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return usagef("sandbox cp: want <local> <id>:<path> or <id>:<path> <local>")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		return copyCmd(ctx, c, fs.Arg(0), fs.Arg(1), stdout, stderr)

	case "pause", "resume":
		timeout := time.Duration(0)
		if sub == "resume" {
			fs.DurationVar(&timeout, "timeout", 0, "stop it after this long from now (0: the timeout it had when paused)")
		}
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usagef("sandbox %s: missing sandbox id", sub)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range fs.Args() {
			sb := c.Sandbox(id)
			if sub == "pause" {
				err = sb.Pause(ctx)
			} else {
				err = sb.Resume(ctx, timeout)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				continue
			}
			fmt.Fprintln(stdout, id)
		}
		return errors.Join(errs...)

	case "stop", "rm", "delete":
		if err := parse(); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usagef("sandbox %s: missing sandbox id", sub)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range fs.Args() {
			sb := c.Sandbox(id)
			if sub == "stop" {
				err = sb.Stop(ctx)
			} else {
				err = sb.Delete(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				continue
			}
			fmt.Fprintln(stdout, id)
		}
		return errors.Join(errs...)

	default:
		return usagef("sandbox: unknown subcommand %q", sub)
	}
}

// execCmd runs a command detached and streams its output live, so output
// shows as it is written; the command's exit code becomes paddock's. An
// interrupt kills the command rather than leaving it running unseen.
func execCmd(ctx context.Context, sb *sdk.Sandbox, req api.CommandRequest, stdout, stderr io.Writer) error {
	cmd, err := sb.RunCommand(ctx, req)
	if err != nil {
		return err
	}
	for line, err := range cmd.Logs(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = cmd.Kill(kctx, "SIGKILL")
				cancel()
				return &exitError{code: 130}
			}
			return err
		}
		switch {
		case line.Exit != nil:
			ex := line.Exit
			if ex.Error != "" {
				fmt.Fprintln(stderr, "paddock:", ex.Error)
			}
			code := 1 // no exit code at all: the command never ran
			if ex.ExitCode != nil {
				code = *ex.ExitCode
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		case line.Stream == api.StreamStderr:
			_, err = stderr.Write(line.Bytes())
		default:
			_, err = stdout.Write(line.Bytes())
		}
		if err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return errors.New("the log stream ended without the command's exit")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func until(t time.Time, status string) string {
	if t.IsZero() || status != api.StatusRunning {
		return "-"
	}
	return "in " + time.Until(t).Round(time.Second).String()
}

// sourceFlags registers the source flags of "sandbox create" and returns
// what builds the request's source from them once parsed. Secrets may come
// from $PADDOCK_GIT_TOKEN / $PADDOCK_GIT_PASSWORD instead of the command
// line, where other users of the machine can read them.
func sourceFlags(fs *flag.FlagSet) func() (*api.Source, error) {
	gitURL := fs.String("git", "", "populate the working dir with a clone of this git repository (http or https)")
	revision := fs.String("revision", "", "with --git: branch, tag or commit (default the remote HEAD)")
	depth := fs.Int("depth", 0, "with --git: commits of history (0: 1, -1: all)")
	user := fs.String("git-user", "", "with --git: username")
	password := fs.String("git-password", "", "with --git: password (or $PADDOCK_GIT_PASSWORD)")
	token := fs.String("git-token", "", "with --git: access token (or $PADDOCK_GIT_TOKEN)")
	tarball := fs.String("tarball", "", "populate the working dir from this tar, tar.gz, tar.zst or tar.bz2 URL")
	strip := fs.Int("strip", 0, "with --tarball: leading path components to drop")
	dir := fs.String("source-dir", "", "where the source lands (default the working dir, else /home/user)")
	return func() (*api.Source, error) {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		switch {
		case *gitURL != "" && *tarball != "":
			return nil, usagef("sandbox create: --git and --tarball exclude each other")
		case *gitURL == "" && (set["revision"] || set["depth"] || set["git-user"] || set["git-password"] || set["git-token"]):
			return nil, usagef("sandbox create: --revision, --depth and --git-* need --git")
		case *tarball == "" && set["strip"]:
			return nil, usagef("sandbox create: --strip needs --tarball")
		case *gitURL == "" && *tarball == "":
			if set["source-dir"] {
				return nil, usagef("sandbox create: --source-dir needs --git or --tarball")
			}
			return nil, nil
		case *tarball != "":
			return &api.Source{Type: api.SourceTarball, URL: *tarball, StripComponents: *strip, Dir: *dir}, nil
		}
		src := &api.Source{Type: api.SourceGit, URL: *gitURL, Revision: *revision, Depth: *depth, Dir: *dir,
			Username: *user, Password: *password, Token: *token}
		if src.Token == "" && src.Password == "" {
			src.Token = os.Getenv("PADDOCK_GIT_TOKEN")
			if src.Token == "" {
				src.Password = os.Getenv("PADDOCK_GIT_PASSWORD")
			}
		}
		if src.Password != "" && src.Username == "" {
			return nil, usagef("sandbox create: a git password needs --git-user")
		}
		return src, nil
	}
}

// printListing prints a directory listing as ls -l does, a path per line
// relative to the directory listed. Names and targets come from inside
// the sandbox, so anything that is not a printable character is quoted
// rather than sent to the terminal.
func printListing(w io.Writer, l api.DirectoryListing) error {
	t := newTable(w, "MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME")
	for _, e := range l.Entries {
		name := strings.TrimPrefix(strings.TrimPrefix(e.Path, l.Path), "/")
		name = printable(name)
		switch e.Type {
		case api.FileTypeDir:
			name += "/"
		case api.FileTypeSymlink:
			name += " -> " + printable(e.SymlinkTarget)
		}
		t.row(e.Permissions, printable(e.Owner), printable(e.Group), e.Size, e.ModTime.UTC().Format("2006-01-02 15:04"), name)
	}
	return t.flush()
}

// printable is s as is when it holds only printable characters (no tab,
// newline or escape), else Go-quoted.
func printable(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
