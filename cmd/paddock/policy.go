package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/paddock-dev/paddock/api"
)

// stringsFlag collects a repeatable flag; a value may also hold a
// comma-separated list.
type stringsFlag struct{ vals *[]string }

func (s stringsFlag) String() string { return "" }

func (s stringsFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s.vals = append(*s.vals, part)
		}
	}
	return nil
}

// policyCmd is `paddock sandbox policy <id> --mode M [--allow-domain D]...
// [--allow-cidr C]... [--deny-cidr C]...`: it replaces a running sandbox's
// egress policy, which takes effect at once for its running processes.
func policyCmd(ctx context.Context, fs *flag.FlagSet, cf *clientFlags, parse func() error, stdout io.Writer) error {
	mode := fs.String("mode", "", "allow-all, deny-all or custom (required)")
	var p api.NetworkPolicy
	fs.Var(stringsFlag{&p.AllowDomains}, "allow-domain", "custom: a domain the sandbox may resolve and reach; *.example.com for subdomains (repeatable)")
	fs.Var(stringsFlag{&p.AllowCIDRs}, "allow-cidr", "custom: an address range the sandbox may reach (repeatable)")
	fs.Var(stringsFlag{&p.DenyCIDRs}, "deny-cidr", "a range always refused, even inside an allowed one (repeatable)")
	if err := parse(); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("sandbox policy: want <id>")
	}
	if *mode == "" {
		return usagef("sandbox policy: --mode is required (allow-all, deny-all or custom)")
	}
	p.Mode = *mode
	c, err := cf.client()
	if err != nil {
		return err
	}
	if err := c.Sandbox(fs.Arg(0)).SetNetworkPolicy(ctx, p); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: egress %s\n", fs.Arg(0), describePolicy(p))
	return nil
}

func describePolicy(p api.NetworkPolicy) string {
	var parts []string
	for _, l := range []struct {
		name string
		vals []string
	}{{"domains", p.AllowDomains}, {"allow", p.AllowCIDRs}, {"deny", p.DenyCIDRs}} {
		if len(l.vals) > 0 {
			parts = append(parts, l.name+" "+strings.Join(l.vals, ","))
		}
	}
	if len(parts) == 0 {
		return p.Mode
	}
	return p.Mode + " (" + strings.Join(parts, "; ") + ")"
}
