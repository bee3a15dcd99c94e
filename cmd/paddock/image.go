package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/paddock-dev/paddock/api"
)

// imageCmd manages the server's OCI image store. Import sends a
// docker-archive tar (docker save) only: an OCI layout directory must be
// imported on the server's host, or saved as a docker archive first.
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("image", "pull, ls, rm, import", args, stderr)
	if err != nil {
		return err
	}
	switch sc.verb {
	case "pull":
		insecure := sc.fs.Bool("insecure", false, "allow a plain-HTTP registry")
		username := sc.fs.String("username", "", "registry user name")
		password := sc.fs.String("password", "", "registry password or token (default $PADDOCK_REGISTRY_PASSWORD)")
		c, err := sc.connect(1, "<ref>")
		if err != nil {
			return err
		}
		if *password == "" {
			*password = os.Getenv("PADDOCK_REGISTRY_PASSWORD")
		}
		img, err := c.PullImage(ctx, api.PullImageRequest{Ref: sc.fs.Arg(0), Username: *username, Password: *password, Insecure: *insecure},
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
		c, err := sc.connect(0, "no arguments")
		if err != nil {
			return err
		}
		imgs, err := c.ListImages(ctx)
		if err != nil {
			return err
		}
		t := newTable(stdout, "REF", "DIGEST", "LAYERS", "SIZE")
		for _, img := range imgs {
			t.row(img.Ref, short(img.Digest), img.Layers, fmt.Sprintf("%dMB", img.Size>>20))
		}
		return t.flush()

	case "rm", "remove":
		c, err := sc.connect(1, "<ref>")
		if err != nil {
			return err
		}
		return c.RemoveImage(ctx, sc.fs.Arg(0))

	case "import":
		if err := sc.parse(1, "<docker-archive.tar>"); err != nil {
			return err
		}
		path := sc.fs.Arg(0)
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return usagef("image import: %s is a directory; only docker-archive tars (docker save) go through the API", path)
		}
		c, err := sc.cf.client()
		if err != nil {
			return err
		}
		img, err := importArchive(ctx, c, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n", img.Ref, img.Digest)
		return nil
	}
	return usagef("image: unknown subcommand %q", sc.verb)
}

// short trims a digest for display.
func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
