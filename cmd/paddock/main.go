// Command paddock is the one binary of paddock: `paddock serve` runs the
// sandbox host and its HTTP API; the other subcommands are a client of that
// API (create sandboxes, run commands, copy files) and host checks.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/paddock-dev/paddock/internal/runtime/runc"
)

func main() {
	// First, before anything else: libcontainer re-executes this binary as a
	// container's init, and that child must run nothing of ours.
	runc.Init()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode is the one place that picks paddock's exit status: a command's
// own code for `sandbox exec`, 2 for usage errors, 1 for any other failure.
func exitCode(err error, stderr io.Writer) int {
	var ex *exitError
	var usage *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ex):
		return ex.code
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "paddock:", usage.msg)
		return 2
	default:
		msg := err.Error()
		if !strings.HasPrefix(msg, "paddock:") {
			msg = "paddock: " + msg
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
}

// exitError carries the exit code of a command run by `sandbox exec`.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("command exited with %d", e.code) }

// usageError is a command line that does not parse.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usage = `paddock: self-hosted sandboxes

Usage:
  paddock serve [--listen ADDR] [--data-dir DIR] [--default-timeout D] [--max-timeout D] [--max-sandboxes N]
                [--team-preset hobby|pro] [--queue-max N] [--queue-max-wait D]
                [--no-network] [--network-pool CIDR] [--nat] [--domain DOMAIN] [--public-url URL] [--node-name N]
                [--mongodb-uri URI [--mongodb-database DB]] [--lease-ttl D] [--lease-renew D] [--orphan-grace D]
                [--max-volume-size SIZE] [--app-max-body BYTES] [--health-timeout D] [--source-allow-private] [--reset-admin-token]
                [--registry-allow-private] [--egress-allow-cidr CIDR]... [--block-cidr CIDR]...
                [--pool name=N,min=N[,max=N][,image=REF|,snapshot=S][,runtime=R][,vcpus=N][,memory=MB][,disk=MB]]... [--pool-concurrency N]
                [--runtime runc|gvisor]
                [--usage-interval D] [--usage-retention D] [--price-cpu-second X] [--price-memory-gb-hour X]
                [--price-egress-gb X] [--price-storage-gb-month X] [--price-creation X] [--price-currency C]
                [--webhook-allow-private] [--metrics-listen ADDR]
                [--oidc-issuer URL --oidc-audience AUD [--oidc-jwks-url URL] [--oidc-user-claim C] [--oidc-default-team T]
                 [--oidc-client-id ID [--oidc-client-secret-file F] [--oidc-redirect-url URL]]]
  paddock image pull [--insecure] [--username U] [--password P] [--published] <ref>
  paddock image ls
  paddock image rm [--published] <ref>
  paddock image import [--published] <docker-archive.tar | oci-layout-dir>
  paddock sandbox create [--image host|<ref> | --snapshot <snap>] [--runtime runc|gvisor] [--vcpus N] [--memory MB] [--timeout D] [--env K=V]...
                         [--port N]... [--public-port N]... [--volume name:/path[:cow]]... [--label k=v]...
                         [--git URL [--revision R] [--depth N] [--git-token T | --git-user U --git-password P]
                          | --tarball URL [--strip N]] [--source-dir DIR]
  paddock sandbox url [--ttl D] <id> <port>      (a signed URL that opens a private port)
  paddock sandbox policy --mode allow-all|deny-all|custom [--allow-domain D]... [--allow-cidr C]... [--deny-cidr C]... <id>
  paddock sandbox ls [--state STATE] [--label k=v]...
  paddock sandbox ls [--sudo] [--depth N] <id> [path]  (a directory's entries; default: the user's home)
  paddock sandbox label <id> [k=v]...           (replaces its labels; none removes them)
  paddock sandbox exec [--sudo] [--cwd DIR] [--env K=V]... [--timeout D] <id> -- <cmd> [args...]
  paddock sandbox shell [--sudo] [--cwd DIR] [--env K=V]... <id> [-- <cmd> [args...]]
                        (a terminal session: default the user's login shell; exits with its code)
  paddock sandbox shell --attach <cmd-id> <id>    (join a running terminal session)
  paddock sandbox cp <local> <id>:<path> | <id>:<path> <local>
  paddock sandbox snapshot <id>
  paddock sandbox fork [--timeout D] [--env K=V]... <id>
  paddock sandbox pause <id>
  paddock sandbox resume [--timeout D] <id>
  paddock sandbox stop <id>
  paddock sandbox rm <id>
  paddock snapshot ls
  paddock snapshot rm <snap>
  paddock volume create [--size 10G] <name>
  paddock volume ls
  paddock volume rm <name>
  paddock pool set [--image REF | --snapshot S] [--runtime R] [--vcpus N] [--memory MB] [--disk MB] --min N [--max N] <name>
                                                  (host admin: keep idle sandboxes of that key warm)
  paddock pool ls
  paddock pool rm <name>
  paddock runtimes                                (the isolation runtimes the server offers, and why one is unavailable)
  paddock token create [--team ID] [--user ID] [--role member|admin] [--ttl D] <name>   (prints the secret once)
  paddock token ls [--team ID]
  paddock token rm <token-id>...
  paddock team create <name>                      (host admin)
  paddock team ls
  paddock team limits [--preset hobby|pro] [--concurrent N] [--vcpus N] [--memory-mb N]
                      [--creates-per-minute N] [--reset] <team>   (shows; setting is for the host admin)
  paddock user create [--team ID] [--email E] [--role member|admin] [--subject S [--issuer URL]] [<name>]
                                                  (--subject binds an OIDC identity: host admin only)
  paddock user ls [--team ID]
  paddock user rm [--team ID] <user-id>...        (revokes the user's tokens too)
  paddock project create (--image REF | --git URL [--revision R]) [--runtime runc|gvisor] [--start CMD] [--install CMD] [--port N]
                         [--health PATH] [--env K=V]... [--secret K=V]... [--persist PATH]...
                         [--idle-timeout D] [--max-lifetime D] [--health-timeout D] [--vcpus N] [--memory MB]
                         [--label k=v]... <name>
  paddock project ls
  paddock project get|rm|deactivate <project>     (an id, or a name of yours)
  paddock project activate [--no-wait] <project>  (prints progress until the app is ready)
  paddock usage [--team ID] [--project P] [--sandbox S] [--granularity hour|day] [--last D | --since T] [--until T] [--json]
                                                  (usage and cost; a table with a total line)
  paddock budget get <team>
  paddock budget set --limit AMOUNT [--thresholds 50,80,100] [--hard-cap] <team>   (host admin)
  paddock budget rm <team>                        (host admin)
  paddock events [--type T]... [--sandbox ID] [--project ID] [--after SEQ]   (follows lifecycle events, JSON lines)
  paddock webhook add [--secret S] [--type T]... <url>   (prints the id and the signing secret once)
  paddock webhook ls
  paddock webhook rm <webhook-id>
  paddock webhook deliveries [--state pending|delivered|failed] <webhook-id>
  paddock demo                                    (builds the goose stand-in and runs it as project "demo")
  paddock bench soak [--concurrency 16] [--duration 5m] [--warmup D] [--image REF] [--pid PID | --no-host]
                    [--max-rss-growth 10] [--json]   (N workers loop create/write/exec/read/destroy; see README)
  paddock doctor [--data-dir DIR]
  paddock version

sandbox cp copies files and directories; directories travel as tar streams:
  cp ./f.txt id:/w/g.txt   the file becomes /w/g.txt ("id:/w/" puts it in /w/f.txt)
  cp ./dir   id:/w         dir's contents go into /w (created if needed), like cp -r dir/. /w
  cp id:/w/g.txt ./x       the file becomes ./x (./x a directory: ./x/g.txt; "-": stdout)
  cp id:/w   ./out         /w's contents go into ./out (created if needed; "-": a tar on stdout)
A remote source is read as a file first and fetched as an archive when the
sandbox answers is_a_directory. Archives from a sandbox are extracted safely:
nothing lands outside the destination, symlinks must point inside it, hard
links, devices and FIFOs are refused, setuid/setgid bits and owners dropped.

The sandbox commands find the server in --url/--token, else $PADDOCK_URL and
$PADDOCK_TOKEN, else the client.json that 'paddock serve' writes in its data dir.
`

// run dispatches a subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("missing subcommand")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "sandbox", "sandboxes", "sb":
		return sandboxCmd(ctx, args[1:], stdout, stderr)
	case "image", "images":
		return imageCmd(ctx, args[1:], stdout, stderr)
	case "snapshot", "snapshots":
		return snapshotCmd(ctx, args[1:], stdout, stderr)
	case "volume", "volumes":
		return volumeCmd(ctx, args[1:], stdout, stderr)
	case "pool", "pools":
		return poolCmd(ctx, args[1:], stdout, stderr)
	case "runtimes", "runtime":
		return runtimesCmd(ctx, args[1:], stdout, stderr)
	case "token", "tokens":
		return tokenCmd(ctx, args[1:], stdout, stderr)
	case "team", "teams":
		return teamCmd(ctx, args[1:], stdout, stderr)
	case "user", "users":
		return userCmd(ctx, args[1:], stdout, stderr)
	case "events":
		return eventsCmd(ctx, args[1:], stdout, stderr)
	case "webhook", "webhooks":
		return webhookCmd(ctx, args[1:], stdout, stderr)
	case "project", "projects":
		return projectCmd(ctx, args[1:], stdout, stderr)
	case "usage":
		return usageCmd(ctx, args[1:], stdout, stderr)
	case "budget", "budgets":
		return budgetCmd(ctx, args[1:], stdout, stderr)
	case "demo":
		return demoCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "doctor":
		return doctorCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "paddock", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown subcommand %q", args[0])
	}
}
