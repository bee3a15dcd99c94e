package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/sdk"
)

// usageCmd prints usage and cost per hour or day: a table with a total
// line, or with --json the rows as the API gives them.
func usageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	var q sdk.UsageQuery
	fs.StringVar(&q.TeamID, "team", "", "team id (another team's: host admin only; default the caller's, a host admin's every team)")
	fs.StringVar(&q.ProjectID, "project", "", "one project's usage")
	fs.StringVar(&q.SandboxID, "sandbox", "", "one sandbox's usage (within the server's raw retention)")
	fs.StringVar(&q.Granularity, "granularity", "day", "hour or day (UTC), or minute with --sandbox")
	last := fs.Duration("last", 0, "the last duration, e.g. 24h (instead of --since)")
	since := fs.String("since", "", "from this time (RFC 3339 or YYYY-MM-DD, UTC)")
	until := fs.String("until", "", "until this time (RFC 3339 or YYYY-MM-DD, UTC)")
	asJSON := fs.Bool("json", false, "print the rows as JSON")
	if err := fs.Parse(args); err != nil {
		return usagef("usage: %v", err)
	}
	if fs.NArg() != 0 {
		return usagef("usage: unexpected arguments %q", fs.Args())
	}
	var err error
	if q.Since, err = parseWhen(*since); err != nil {
		return usagef("usage: --since: %v", err)
	}
	if q.Until, err = parseWhen(*until); err != nil {
		return usagef("usage: --until: %v", err)
	}
	switch {
	case *last < 0:
		return usagef("usage: --last must be positive")
	case *last > 0 && !q.Since.IsZero():
		return usagef("usage: give --last or --since, not both")
	case *last > 0:
		q.Since = time.Now().Add(-*last)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	list, err := c.AllUsage(ctx, q)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	return printUsage(stdout, list)
}

// parseWhen reads an RFC 3339 time or a UTC date; "" is the zero time.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time or YYYY-MM-DD, got %q", s)
	}
	return t, nil
}

// printUsage prints the rows and a total line.
func printUsage(w io.Writer, list api.UsageList) error {
	showTeam := slices.ContainsFunc(list.Usage, func(u api.Usage) bool { return u.TeamID != list.Usage[0].TeamID })
	showSandbox := slices.ContainsFunc(list.Usage, func(u api.Usage) bool { return u.SandboxID != "" })
	cols := []string{strings.ToUpper(list.Granularity)}
	if showTeam {
		cols = append(cols, "TEAM")
	}
	cols = append(cols, "PROJECT")
	if showSandbox {
		cols = append(cols, "SANDBOX")
	}
	cols = append(cols, "CPU-S", "MEM-GB-H", "PEAK-MEM", "NET-IN", "NET-OUT", "CREATED", "STORAGE-GB-H", "COST ("+list.Currency+")")
	tab := newTable(w, cols...)
	var total api.Usage
	layout := "2006-01-02"
	if list.Granularity == "hour" {
		layout = "2006-01-02 15:00"
	}
	for _, u := range list.Usage {
		row := []any{u.Start.UTC().Format(layout)}
		if showTeam {
			row = append(row, u.TeamID)
		}
		row = append(row, dash(u.ProjectID))
		if showSandbox {
			row = append(row, dash(u.SandboxID))
		}
		tab.row(append(row, usageFigures(u)...)...)
		total.CPUSeconds += u.CPUSeconds
		total.MemoryGBHours += u.MemoryGBHours
		total.MemoryPeakBytes = max(total.MemoryPeakBytes, u.MemoryPeakBytes)
		total.NetRxBytes += u.NetRxBytes
		total.NetTxBytes += u.NetTxBytes
		total.Creations += u.Creations
		total.StorageGBHours += u.StorageGBHours
		total.Cost.Total += u.Cost.Total
	}
	row := []any{"total"}
	if showTeam {
		row = append(row, "")
	}
	row = append(row, "")
	if showSandbox {
		row = append(row, "")
	}
	tab.row(append(row, usageFigures(total)...)...)
	return tab.flush()
}

func usageFigures(u api.Usage) []any {
	return []any{strconv.FormatFloat(u.CPUSeconds, 'f', 2, 64), strconv.FormatFloat(u.MemoryGBHours, 'f', 3, 64),
		byteSize(u.MemoryPeakBytes), byteSize(u.NetRxBytes), byteSize(u.NetTxBytes), u.Creations,
		strconv.FormatFloat(u.StorageGBHours, 'f', 3, 64), strconv.FormatFloat(u.Cost.Total, 'f', 4, 64)}
}

// byteSize prints n in the largest binary unit that keeps it at least 1.
func byteSize(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v, i = v/1024, i+1
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + string(units[i]) + "iB"
}

// budgetCmd reads and (host admin) sets or removes a team's monthly budget.
func budgetCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("budget", "get, set, rm", args, stderr)
	if err != nil {
		return err
	}
	fs, cf := sc.fs, &sc.cf
	var req api.BudgetRequest
	var thresholds string
	asJSON := fs.Bool("json", false, "print the budget as JSON")
	if sc.verb == "set" {
		fs.Float64Var(&req.MonthlyLimit, "limit", 0, "monthly limit in the price table's currency (required)")
		fs.StringVar(&thresholds, "thresholds", "", "warning thresholds in percent, e.g. 50,80,100 (default 50,80,100)")
		fs.BoolVar(&req.HardCap, "hard-cap", false, "at the limit, refuse new sandboxes and activations and stop running ones (state saved)")
	}
	if err := sc.parse(1, "one team id (paddock team ls)"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	teamID := fs.Arg(0)
	switch sc.verb {
	case "get", "show":
		b, err := c.GetBudget(ctx, teamID)
		if err != nil {
			return err
		}
		return printBudget(stdout, b, *asJSON)
	case "set":
		if !flagSet(fs, "limit") {
			return usagef("budget set: --limit is required")
		}
		for _, f := range strings.FieldsFunc(thresholds, func(r rune) bool { return r == ',' || r == ' ' }) {
			n, err := strconv.Atoi(strings.TrimSuffix(f, "%"))
			if err != nil {
				return usagef("budget set: --thresholds: %q is not a percentage", f)
			}
			req.Thresholds = append(req.Thresholds, n)
		}
		b, err := c.SetBudget(ctx, teamID, req)
		if err != nil {
			return err
		}
		return printBudget(stdout, b, *asJSON)
	case "rm", "delete":
		return c.DeleteBudget(ctx, teamID)
	default:
		return usagef("budget: unknown subcommand %q (get, set, rm)", sc.verb)
	}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func printBudget(w io.Writer, b api.Budget, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	}
	tab := newTable(w, "TEAM", "LIMIT", "SPENT", "PERCENT", "THRESHOLDS", "HARD-CAP", "CAPPED")
	th := make([]string, len(b.Thresholds))
	for i, t := range b.Thresholds {
		th[i] = strconv.Itoa(t) + "%"
	}
	tab.row(b.TeamID, fmt.Sprintf("%.2f %s", b.MonthlyLimit, b.Currency), fmt.Sprintf("%.4f", b.Spend),
		fmt.Sprintf("%.1f%%", b.Percent), dash(strings.Join(th, ",")), b.HardCap, b.Capped)
	return tab.flush()
}
