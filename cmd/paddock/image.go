package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/sdk"
)

// imageCmd manages the server's OCI image store. Refs belong to the
// caller's team unless --published (host admin) makes them every team's.
// Import takes a docker-archive tar (docker save) or an OCI layout
// directory, which it converts into a docker archive on the way up.
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("image", "pull, ls, rm, import", args, stderr)
	if err != nil {
		return err
	}
	switch sc.verb {
	case "pull":
		insecure := sc.fs.Bool("insecure", false, "allow a plain-HTTP registry (host admin only)")
		username := sc.fs.String("username", "", "registry user name")
		password := sc.fs.String("password", "", "registry password or token (default $PADDOCK_REGISTRY_PASSWORD)")
		published := sc.fs.Bool("published", false, "make the ref every team's (host admin only)")
		c, err := sc.connect(1, "<ref>")
		if err != nil {
			return err
		}
		if *password == "" {
			*password = os.Getenv("PADDOCK_REGISTRY_PASSWORD")
		}
		img, err := c.PullImage(ctx, api.PullImageRequest{Ref: sc.fs.Arg(0), Username: *username, Password: *password, Insecure: *insecure, Published: *published},
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
		t := newTable(stdout, "REF", "TEAM", "DIGEST", "LAYERS", "SIZE")
		for _, img := range imgs {
			team := img.TeamID
			if img.Published {
				team = "(published)"
			}
			t.row(img.Ref, team, short(img.Digest), img.Layers, fmt.Sprintf("%dMB", img.Size>>20))
		}
		return t.flush()

	case "rm", "remove":
		published := sc.fs.Bool("published", false, "remove the published ref (host admin only)")
		c, err := sc.connect(1, "<ref>")
		if err != nil {
			return err
		}
		return c.RemoveImage(ctx, sc.fs.Arg(0), publishedOpt(*published)...)

	case "import":
		published := sc.fs.Bool("published", false, "make the ref every team's (host admin only)")
		if err := sc.parse(1, "<docker-archive.tar | oci-layout-dir>"); err != nil {
			return err
		}
		path := sc.fs.Arg(0)
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		c, err := sc.cf.client()
		if err != nil {
			return err
		}
		var img api.Image
		if fi.IsDir() {
			img, err = importLayout(ctx, c, path, publishedOpt(*published)...)
		} else {
			img, err = importArchive(ctx, c, path, publishedOpt(*published)...)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n", img.Ref, img.Digest)
		return nil
	}
	return usagef("image: unknown subcommand %q", sc.verb)
}

// publishedOpt is the SDK option of a --published flag.
func publishedOpt(published bool) []sdk.ImageOption {
	if published {
		return []sdk.ImageOption{sdk.Published()}
	}
	return nil
}

// short trims a digest for display.
func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// importLayout sends the image of an OCI layout directory through the API,
// which takes docker archives: the archive is written into the upload as it
// goes, never to disk. A layout naming no full reference imports by digest,
// as the server's own import of it would.
func importLayout(ctx context.Context, c *sdk.Client, dir string, opts ...sdk.ImageOption) (api.Image, error) {
	img, ref, err := image.FromLayout(dir)
	if err != nil {
		return api.Image{}, fmt.Errorf("image import: read the OCI layout %s: %w", dir, err)
	}
	var tagged name.Reference
	if ref != "" {
		if tagged, err = name.ParseReference(ref); err != nil {
			return api.Image{}, fmt.Errorf("image import: the layout's reference %q: %w", ref, err)
		}
	} else {
		d, err := img.Digest()
		if err != nil {
			return api.Image{}, err
		}
		// A digest reference writes no RepoTags: the server names the
		// image by its digest.
		if tagged, err = name.NewDigest("imported@" + d.String()); err != nil {
			return api.Image{}, err
		}
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() { // owned: importLayout waits for it below
		defer close(done)
		pw.CloseWithError(tarball.MultiRefWrite(map[name.Reference]v1.Image{tagged: img}, pw))
	}()
	out, err := c.ImportImage(ctx, pr, opts...)
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if the upload stopped early
	<-done
	return out, err
}
