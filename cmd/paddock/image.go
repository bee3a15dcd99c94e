package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/paddock-dev/paddock/api"
)

// imageCmd manages the server's OCI image store. Import sends a
// docker-archive tar (docker save) only: an OCI layout directory must be
// imported on the server's host, or saved as a docker archive first.
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("image: missing subcommand (pull, ls, rm, import)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("image "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	parse := func(nargs int, what string) error {
		if err := fs.Parse(args); err != nil {
			return usagef("image %s: %v", sub, err)
		}
		if fs.NArg() != nargs {
			return usagef("image %s: want %s", sub, what)
		}
		return nil
	}
	switch sub {
	case "pull":
		insecure := fs.Bool("insecure", false, "allow a plain-HTTP registry")
		username := fs.String("username", "", "registry user name")
		password := fs.String("password", "", "registry password or token (default $PADDOCK_REGISTRY_PASSWORD)")
		if err := parse(1, "<ref>"); err != nil {
			return err
		}
		if *password == "" {
			*password = os.Getenv("PADDOCK_REGISTRY_PASSWORD")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		img, err := c.PullImage(ctx, api.PullImageRequest{Ref: fs.Arg(0), Username: *username, Password: *password, Insecure: *insecure},
			func(p api.PullProgress) {
				switch {
				case p.Done && p.Cached:
					fmt.Fprintf(stderr, "layer %d/%d %s: already present\n", p.Index+1, p.Count, short(p.Digest))
				case p.Done:
					fmt.Fprintf(stderr, "layer %d/%d %s: %d bytes\n", p.Index+1, p.Count, short(p.Digest), p.Bytes)
				}
			})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n", img.Ref, img.Digest)
		return nil

	case "ls", "list":
		if err := parse(0, "no arguments"); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		imgs, err := c.ListImages(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REF\tDIGEST\tLAYERS\tSIZE")
		for _, img := range imgs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%dMB\n", img.Ref, short(img.Digest), img.Layers, img.Size>>20)
		}
		return tw.Flush()

	case "rm", "remove":
		if err := parse(1, "<ref>"); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		return c.RemoveImage(ctx, fs.Arg(0))

	case "import":
		if err := parse(1, "<docker-archive.tar>"); err != nil {
			return err
		}
		fi, err := os.Stat(fs.Arg(0))
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return usagef("image import: %s is a directory; only docker-archive tars (docker save) go through the API", fs.Arg(0))
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		c, err := cf.client()
		if err != nil {
			return err
		}
		img, err := c.ImportImage(ctx, f)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n", img.Ref, img.Digest)
		return nil
	}
	return usagef("image: unknown subcommand %q", sub)
}

// short trims a digest for display.
func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
