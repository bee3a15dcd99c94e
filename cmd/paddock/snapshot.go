package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// snapshotCmd lists and deletes the server's snapshots; taking one and
// forking are sandbox subcommands, since they act on a sandbox.
func snapshotCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("snapshot: missing subcommand (ls, rm)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("snapshot "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return usagef("snapshot %s: %v", sub, err)
	}
	switch sub {
	case "ls", "list":
		if fs.NArg() != 0 {
			return usagef("snapshot ls: unexpected arguments %q", fs.Args())
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		snaps, err := c.ListSnapshots(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSOURCE\tIMAGE\tSIZE\tCREATED\tEXPIRES")
		for _, s := range snaps {
			expires := "never"
			if !s.ExpiresAt.IsZero() {
				expires = s.ExpiresAt.Local().Format("2006-01-02 15:04")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%dMB\t%s\t%s\n", s.ID, s.SourceSandboxID, s.Image, s.SizeBytes>>20, ago(s.CreatedAt), expires)
		}
		return tw.Flush()

	case "rm", "remove", "delete":
		if fs.NArg() == 0 {
			return usagef("snapshot rm: missing snapshot id")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range fs.Args() {
			if err := c.DeleteSnapshot(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
			}
		}
		return errors.Join(errs...)
	}
	return usagef("snapshot: unknown subcommand %q", sub)
}
