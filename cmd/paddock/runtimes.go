package main

import (
	"context"
	"flag"
	"io"
	"strings"
)

// runtimesCmd lists the isolation runtimes the server offers: which run
// sandboxes there, which is the default, what each can do, and why one is
// unavailable (with how to fix it).
func runtimesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("runtimes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return usagef("runtimes: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("runtimes: unexpected arguments %q", fs.Args())
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	rts, err := c.Runtimes(ctx)
	if err != nil {
		return err
	}
	t := newTable(stdout, "NAME", "DEFAULT", "CAPABILITIES", "AVAILABLE")
	for _, r := range rts {
		var caps []string
		for _, c := range []struct {
			on   bool
			name string
		}{{r.Capabilities.Snapshot, "snapshot"}, {r.Capabilities.DiskCap && !r.Capabilities.DiskCapStops, "disk-cap"}, {r.Capabilities.DiskCapStops, "disk-cap(stops)"}, {r.Capabilities.UserNS, "userns"}, {r.Capabilities.Seccomp, "seccomp"}} {
			if c.on {
				caps = append(caps, c.name)
			}
		}
		avail := "yes"
		if !r.Available {
			avail, caps = "no: "+r.Reason, nil
		}
		def := ""
		if r.Default {
			def = "*"
		}
		t.row(r.Name, def, strings.Join(caps, ","), avail)
	}
	return t.flush()
}
