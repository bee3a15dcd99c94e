package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/paddock-dev/paddock/internal/soak"
)

// benchCmd runs load tests against a server.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("bench: missing subcommand (soak)")
	}
	switch args[0] {
	case "soak":
		return soakCmd(ctx, args[1:], stdout, stderr)
	default:
		return usagef("bench: unknown subcommand %q (soak)", args[0])
	}
}

// soakCmd is `paddock bench soak`: the soak of internal/soak against the
// server the other client verbs talk to. The server must run on this host
// for its RSS, open files and the host's leftovers (its pid is found from
// the URL's port, or given with --pid).
func soakCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	cfg := soak.Config{}
	fs.IntVar(&cfg.Concurrency, "concurrency", soak.DefaultConcurrency, fmt.Sprintf("workers, each looping create → write → exec → read → destroy (1-%d)", soak.MaxConcurrency))
	fs.DurationVar(&cfg.Duration, "duration", soak.DefaultDuration, "how long the measured run lasts (at most 24h)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "the same loop before the measured run, reported apart (default min(1m, duration/5); negative: none)")
	fs.DurationVar(&cfg.StepTimeout, "step-timeout", soak.DefaultStepTimeout, "bound of each step")
	fs.IntVar(&cfg.FileBytes, "file-size", soak.DefaultFileBytes, "bytes of the file each iteration writes, cats and reads back")
	image := fs.String("image", "", "image of the sandboxes (default: the server's default, host)")
	pid := fs.Int("pid", 0, "pid of the server process (default: the process listening on the URL's port)")
	noHost := fs.Bool("no-host", false, "skip the server's RSS and open files and the host leak check (a server on another host)")
	maxGrowth := fs.Float64("max-rss-growth", 10, "fail when the server's RSS after the run exceeds the one after the warm-up by more than this many percent (0: no check)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return usagef("bench soak: %v", err)
	}
	if fs.NArg() != 0 {
		return usagef("bench soak: unexpected arguments %q", fs.Args())
	}
	if *maxGrowth < 0 {
		return usagef("bench soak: --max-rss-growth must not be negative")
	}
	if cfg.Concurrency < 1 || cfg.Duration <= 0 {
		return usagef("bench soak: --concurrency and --duration must be positive")
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil { // before the client: it needs no server
		return usagef("bench %v", err)
	}
	base, token, err := cf.resolve()
	if err != nil {
		return err
	}
	// A sandbox the soak cannot destroy (the soak killed) stops on its own.
	sbTimeout := max(10*time.Minute, 2*cfg.StepTimeout)
	cfg.Client = soak.NewAPIClient(base, token, *image, sbTimeout, max(cfg.Concurrency, 1))
	if !*noHost {
		if *pid == 0 {
			u, err := url.Parse(base)
			if err != nil {
				return fmt.Errorf("bench soak: server URL: %w", err)
			}
			if *pid, err = soak.ServerPID(hostPort(u)); err != nil {
				return fmt.Errorf("bench soak: find the server's process (or pass --pid, or --no-host): %w", err)
			}
		}
		h, err := soak.NewProcHost(*pid)
		if err != nil {
			return fmt.Errorf("bench soak: %w", err)
		}
		cfg.Host = h
	}
	if !*asJSON {
		cfg.Progress = func(line string) { fmt.Fprintln(stderr, "soak:", line) }
	}

	r, runErr := soak.Run(ctx, cfg)
	if r == nil {
		return runErr
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printSoak(stdout, base, *pid, r)
	}
	var problems []string
	if runErr != nil {
		problems = append(problems, runErr.Error())
	}
	if n := r.Warmup.Failures + r.Run.Failures; n > 0 {
		problems = append(problems, fmt.Sprintf("%d failed iterations", n))
	}
	if n := len(r.Left); n > 0 {
		problems = append(problems, fmt.Sprintf("%d sandboxes left on the server", n))
	}
	if n := len(r.HostLeaks); n > 0 {
		problems = append(problems, fmt.Sprintf("%d leftovers on the host", n))
	}
	if r.Sampled && *maxGrowth > 0 && r.RSSGrowth*100 > *maxGrowth {
		problems = append(problems, fmt.Sprintf("server RSS grew %.1f%%, over the %.1f%% allowed", r.RSSGrowth*100, *maxGrowth))
	}
	if len(problems) > 0 {
		return errors.New("bench soak: " + strings.Join(problems, "; "))
	}
	return nil
}

// hostPort is the URL's host:port, with the scheme's default port.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return u.Hostname() + ":" + port
}

// printSoak writes the report as tables.
func printSoak(w io.Writer, base string, pid int, r *soak.Report) {
	fmt.Fprintf(w, "paddock bench soak: %d workers, %s measured (+ %d iterations of warm-up) against %s",
		r.Concurrency, r.Duration.Round(time.Second), r.Warmup.Iterations+r.Warmup.Failures, base)
	if r.Sampled {
		fmt.Fprintf(w, " (server pid %d)", pid)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "iterations %d (%.2f/s), failures %d (warm-up: %d)\n\n", r.Run.Iterations, r.Run.PerSecond, r.Run.Failures, r.Warmup.Failures)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tcount\tp50\tp99\tmax\t")
	for _, s := range r.Run.Steps {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", s.Name, s.Count, ms(s.P50), ms(s.P99), ms(s.Max))
	}
	tw.Flush()
	for _, ph := range []struct {
		name string
		p    soak.Phase
	}{{"warm-up", r.Warmup}, {"run", r.Run}} {
		if len(ph.p.Reasons) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nfailures (%s):\n", ph.name)
		keys := make([]string, 0, len(ph.p.Reasons))
		for k := range ph.p.Reasons {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %5d  %s\n", ph.p.Reasons[k], k)
		}
	}
	if r.Sampled {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "server\tRSS\tanon\tfds\tthreads\t\tfds by kind")
		for _, row := range []struct {
			name string
			p    soak.Process
		}{{"start", r.Start}, {"before (after warm-up)", r.Before}, {"after", r.After}} {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t\t%s\n", row.name, mib(row.p.RSSBytes), mib(row.p.RSSAnonBytes), row.p.FDs, row.p.Threads, kinds(row.p.FDKinds))
		}
		fmt.Fprintf(tw, "peak during the run\t%s\t\t\t\t\t\n", mib(r.PeakRSSBytes))
		tw.Flush()
		fmt.Fprintf(w, "RSS growth %+.1f%% (anonymous %+.1f%%), fds %+d (after vs before)\n", r.RSSGrowth*100, r.RSSAnonGrowth*100, r.FDGrowth)
		if len(r.Trend) > 1 {
			fmt.Fprintf(w, "trend, RSS/anonymous MiB every %s (the first and last idle):", (r.Trend[1].Elapsed - r.Trend[0].Elapsed).Round(time.Second))
			for _, p := range r.Trend {
				fmt.Fprintf(w, " %.1f/%.1f", float64(p.RSSBytes)/(1<<20), float64(p.RSSAnonBytes)/(1<<20))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "\nleft on the server: %d sandboxes", len(r.Left))
	if len(r.Left) > 0 {
		fmt.Fprintf(w, " %v", r.Left)
	}
	if r.Sampled {
		fmt.Fprintf(w, "; on the host: %d", len(r.HostLeaks))
		for _, l := range r.HostLeaks {
			fmt.Fprintf(w, "\n  %s", l)
		}
	}
	fmt.Fprintln(w)
}

// kinds prints fd counts by kind, in a fixed order.
func kinds(m map[string]int) string {
	var parts []string
	for _, k := range []string{"socket", "pipe", "pidfd", "anon", "file"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
