package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// projectCmd manages projects: an app that paddock runs in a sandbox on
// demand and reaches through its authenticated proxy.
func projectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("project", "create, ls, get, rm, activate, deactivate", args, stderr)
	if err != nil {
		return err
	}
	fs := sc.fs
	// target is the prologue of the verbs that act on one project, which
	// they take by id or by name.
	target := func() (*sdk.Client, api.Project, error) {
		c, err := sc.connect(1, "<project id or name>")
		if err != nil {
			return nil, api.Project{}, err
		}
		p, err := findProject(ctx, c, fs.Arg(0))
		return c, p, err
	}
	switch sc.verb {
	case "create":
		var req api.ProjectRequest
		var git api.GitSource
		fs.StringVar(&req.Source.Image, "image", "", "image in the server's store (paddock image pull/import)")
		fs.StringVar(&req.Runtime, "runtime", "", `runtime of the project's activations: runc or gvisor (default: the server's; see "paddock runtimes")`)
		fs.StringVar(&git.URL, "git", "", "git repository to check out over the host image, instead of --image")
		fs.StringVar(&git.Revision, "revision", "", "with --git: branch, tag or commit")
		fs.StringVar(&req.Install, "install", "", "command (sh -c) run before the app at each activation")
		fs.StringVar(&req.Start, "start", "", "command (sh -c) that starts the app; default the image's entrypoint")
		fs.IntVar(&req.AppPort, "port", 0, "port the app listens on (default 3001)")
		fs.StringVar(&req.HealthPath, "health", "", "path that answers 2xx once the app is up (default /status)")
		env, secrets := envFlag{}, envFlag{}
		fs.Var(env, "env", "environment of the app, K=V (repeatable)")
		fs.Var(secrets, "secret", "secret environment of the app, K=V, encrypted at rest, never shown (repeatable)")
		var persist listFlag
		fs.Var(&persist, "persist", "path saved at deactivation and restored at activation (repeatable)")
		idle := fs.Duration("idle-timeout", 0, "deactivate after this long unused (default 15m)")
		life := fs.Duration("max-lifetime", 0, "deactivate this long after activation (default 4h)")
		health := fs.Duration("health-timeout", 0, "fail the activation if the app answers no 2xx this long after starting (0: the server's default)")
		fs.Float64Var(&req.Resources.VCPUs, "vcpus", 0, "CPU share (0: server default)")
		fs.Int64Var(&req.Resources.MemoryMB, "memory", 0, "memory limit in MB (0: server default)")
		labels := envFlag{}
		fs.Var(labels, "label", "a label of the project and its sandboxes, k=v (repeatable)")
		if err := sc.parse(1, "<name>"); err != nil {
			return err
		}
		if (req.Source.Image == "") == (git.URL == "") {
			return usagef("project create: give exactly one of --image and --git")
		}
		if git.URL != "" {
			req.Source.Git = &git
		}
		req.Name = fs.Arg(0)
		req.Env, req.PersistentPaths, req.Labels = env, persist, labels
		if len(secrets) > 0 {
			req.Secrets = secrets
		}
		req.IdleTimeoutMs, req.MaxLifetimeMs, req.HealthTimeoutMs = idle.Milliseconds(), life.Milliseconds(), health.Milliseconds()
		c, err := sc.cf.client()
		if err != nil {
			return err
		}
		p, err := c.CreateProject(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, p.ID)
		return nil

	case "ls", "list":
		c, err := sc.connect(0, "no arguments")
		if err != nil {
			return err
		}
		t := newTable(stdout, "ID", "NAME", "SOURCE", "STATE")
		for p, err := range c.ListProjects(ctx) {
			if err != nil {
				return err
			}
			state := "inactive"
			if p.Active != nil {
				state = p.Active.State
			}
			t.row(p.ID, p.Name, sourceOf(p.Spec.Source), state)
		}
		return t.flush()

	case "get":
		_, p, err := target()
		if err != nil {
			return err
		}
		return printJSON(stdout, p)

	case "rm", "remove", "delete":
		c, p, err := target()
		if err != nil {
			return err
		}
		return c.DeleteProject(ctx, p.ID)

	case "activate":
		noWait := fs.Bool("no-wait", false, "return at once instead of following the activation to ready")
		c, p, err := target()
		if err != nil {
			return err
		}
		if *noWait {
			a, err := c.Activate(ctx, p.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s %s\n", a.ID, a.State)
			return nil
		}
		a, err := activateWithProgress(ctx, c, p.ID, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "app: %s\n", a.AppURL)
		return nil

	case "deactivate":
		c, p, err := target()
		if err != nil {
			return err
		}
		a, err := c.Deactivate(ctx, p.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", a.ID, a.State)
		return nil
	}
	return usagef("project: unknown subcommand %q", sc.verb)
}

// activateWithProgress activates a project and prints one line per
// progress event, with the time since the start; a failure prints the
// log's tail and returns the error.
func activateWithProgress(ctx context.Context, c *sdk.Client, projectID string, out io.Writer) (api.Activation, error) {
	start := time.Now()
	a, err := c.ActivateAndWait(ctx, projectID, func(e api.ActivationEvent) {
		line := fmt.Sprintf("%6.1fs  %s", time.Since(start).Seconds(), e.Type)
		if pos := e.Data["position"]; pos != "" {
			line += " (place " + pos + " in the team's queue)"
		}
		if e.Message != "" {
			line += ": " + e.Message
		}
		fmt.Fprintln(out, line)
	})
	var failed *sdk.ActivationFailedError
	if errors.As(err, &failed) && failed.Activation.LogTail != "" {
		fmt.Fprintf(out, "--- end of the log ---\n%s\n---\n", strings.TrimRight(failed.Activation.LogTail, "\n"))
	}
	return a, err
}

// findProject takes an id, or else the name of one of the caller's projects.
func findProject(ctx context.Context, c *sdk.Client, idOrName string) (api.Project, error) {
	p, err := c.GetProject(ctx, idOrName)
	if err == nil || !errors.Is(err, sdk.ErrNotFound) {
		return p, err
	}
	for p, lerr := range c.ListProjects(ctx) {
		if lerr != nil {
			return api.Project{}, lerr
		}
		if p.Name == idOrName {
			return p, nil
		}
	}
	return api.Project{}, err
}

func sourceOf(s api.ProjectSource) string {
	if s.Git != nil {
		return s.Git.URL
	}
	return s.Image
}

// printJSON writes v indented, for `get` verbs.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
