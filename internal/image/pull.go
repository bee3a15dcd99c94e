package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// PullOptions say how to reach a registry. With no credentials a pull is
// anonymous, unless Keychain lets it use the server's own logins.
type PullOptions struct {
	// Username and Password are basic credentials (a GHCR or ACR token goes
	// in Password).
	Username, Password string
	// Token is a registry bearer token, sent as is.
	Token string
	// Insecure allows plain HTTP. Loopback (127.0.0.1, localhost) and
	// RFC 1918 registries get HTTP anyway. Which addresses a pull may reach
	// at all is the Store's Guard's business.
	Insecure bool
	// Platform is the os/arch[/variant] to pick from a multi-platform image;
	// linux/<this machine's arch> if empty.
	Platform string
	// Keychain lets a pull without credentials use the server's default
	// keychain: the docker config (~/.docker/config.json or $DOCKER_CONFIG)
	// and its credential helpers (Docker Hub, GHCR, ACR logins made with
	// `docker login`). Those are the operator's credentials, not a
	// tenant's: the server sets it for the host admin, and for teams only
	// when the operator allows it.
	Keychain bool
}

func (o PullOptions) platform() (*v1.Platform, error) {
	p := o.Platform
	if p == "" {
		p = "linux/" + runtime.GOARCH
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_platform", "invalid platform %q: %v", p, err)
	}
	return plat, nil
}

func (o PullOptions) remoteAuth() remote.Option {
	switch {
	case o.Token != "":
		return remote.WithAuth(authn.FromConfig(authn.AuthConfig{RegistryToken: o.Token}))
	case o.Username != "" || o.Password != "":
		return remote.WithAuth(&authn.Basic{Username: o.Username, Password: o.Password})
	case o.Keychain:
		return remote.WithAuthFromKeychain(authn.DefaultKeychain)
	default:
		return remote.WithAuth(authn.Anonymous)
	}
}

// Pull fetches ref from its registry, unpacks the layers the store does not
// have yet and records ref in team's scope (Published: every team's), and
// in the Directory, if any. progress (may be nil) is called from Pull's
// goroutine.
func (s *Store) Pull(ctx context.Context, team, ref string, opts PullOptions, progress func(LayerProgress)) (*Image, error) {
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "invalid image reference %q: %v", ref, err)
	}
	plat, err := opts.platform()
	if err != nil {
		return nil, err
	}
	out, err := s.pull(ctx, team, r.Name(), r, opts, progress)
	if err != nil {
		return nil, err
	}
	err = s.record(ctx, Entry{Scope: team, Ref: out.Ref, Digest: out.Digest, Source: r.Name(),
		Platform: plat.String(), Insecure: opts.Insecure, Keychain: opts.Keychain})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pull fetches from and installs it as ref of scope. Pull and Resolve
// (an image another replica pulled, by digest) share it.
func (s *Store) pull(ctx context.Context, scope, ref string, from name.Reference, opts PullOptions, progress func(LayerProgress)) (*Image, error) {
	img, err := s.remoteImage(ctx, from, opts, s.registry)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", from.Name(), registryError(from.Name(), err))
	}
	out, err := s.install(ctx, scope, ref, img, progress)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", from.Name(), registryError(from.Name(), err))
	}
	s.log.InfoContext(ctx, "image pulled", "image", out.Ref, "team", scope, "digest", out.Digest, "bytes", out.Size)
	return out, nil
}

// remoteImage opens from in its registry for opts' platform through
// transport: for a pull, the guarded one, so that every connection, the
// token realm's and redirects' included, is checked: a registry cannot
// point paddock at the host's or the LAN's services.
func (s *Store) remoteImage(ctx context.Context, from name.Reference, opts PullOptions, transport http.RoundTripper) (v1.Image, error) {
	plat, err := opts.platform()
	if err != nil {
		return nil, err
	}
	return remote.Image(from, remote.WithContext(ctx), remote.WithPlatform(*plat), opts.remoteAuth(),
		remote.WithTransport(transport))
}

// registryError gives a registry's refusals a kind; errors that have one
// already (a hostile layer, a size cap) keep theirs.
func registryError(ref string, err error) error {
	var se *sandbox.Error
	if errors.As(err, &se) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var be *netguard.BlockedError
	if errors.As(err, &be) {
		return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrForbidden, "registry_address_forbidden",
			"pulling %s: %s (registries, their redirects and token servers may not be link-local, metadata or, unless the server allows it, loopback and private addresses)",
			ref, be.Error()), err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrUnauthorized, "registry_auth",
				"the registry refused the credentials for %s", ref), err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrNotFound, "image_not_found",
				"image %s not found in its registry", ref), err)
		}
	}
	return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrUnavailable, "registry_unavailable",
		"cannot pull %s from its registry", ref), err)
}

// Import loads an image from a docker-archive tar (docker save) or an OCI
// image layout directory into team's scope (Published: every team's). The
// ref is the archive's first tag or the layout's
// org.opencontainers.image.ref.name annotation, else the image's digest.
// Whatever the archive claims, it names a ref of team's scope only.
func (s *Store) Import(ctx context.Context, team, path string) (*Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_archive", "import %s: %v", path, err)
	}
	var (
		img v1.Image
		ref string
	)
	if fi.IsDir() {
		img, ref, err = FromLayout(path)
	} else {
		img, ref, err = fromDockerArchive(path)
	}
	if err != nil {
		var se *sandbox.Error
		if !errors.As(err, &se) {
			err = fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrInvalid, "invalid_archive", "import %s: not a docker archive or OCI layout", path), err)
		}
		return nil, err
	}
	if ref == "" {
		d, err := img.Digest()
		if err != nil {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_archive", "import %s: %v", path, err)
		}
		ref = d.String()
	} else if ref, err = normalizeRef(ref); err != nil {
		return nil, err
	}
	out, err := s.install(ctx, team, ref, img, nil)
	if err != nil {
		var se *sandbox.Error
		if !errors.As(err, &se) {
			err = fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrInvalid, "invalid_archive", "import %s failed", path), err)
		}
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	s.log.InfoContext(ctx, "image imported", "image", out.Ref, "team", team, "digest", out.Digest, "bytes", out.Size)
	// In no registry: the directory says which replica has it.
	if err := s.record(ctx, Entry{Scope: team, Ref: out.Ref, Digest: out.Digest}); err != nil {
		return nil, err
	}
	return out, nil
}

func fromDockerArchive(path string) (v1.Image, string, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return nil, "", err
	}
	if len(m) == 0 {
		return nil, "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_archive", "the docker archive %s holds no image", path)
	}
	// An archive of several images: take the first, by its tag when it has
	// one (ImageFromPath needs a tag to choose).
	if len(m[0].RepoTags) > 0 {
		tag, err := name.NewTag(m[0].RepoTags[0])
		if err != nil {
			return nil, "", err
		}
		img, err := tarball.ImageFromPath(path, &tag)
		return img, tag.Name(), err
	}
	img, err := tarball.ImageFromPath(path, nil)
	return img, "", err
}

// FromLayout opens the image for this host's platform in the OCI layout
// directory path, with its reference when the layout names a full one
// ("" otherwise). The CLI uses it to send a layout through the API as a
// docker archive.
func FromLayout(path string) (v1.Image, string, error) {
	p, err := layout.FromPath(path)
	if err != nil {
		return nil, "", err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, "", err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	plat, _ := PullOptions{}.platform()
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		if d.Platform != nil && !d.Platform.Satisfies(*plat) {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, "", err
		}
		// The annotation is often a bare tag ("v1"), which names no
		// repository: only a full reference is taken as the ref.
		ref := strings.TrimSpace(d.Annotations["org.opencontainers.image.ref.name"])
		if !strings.Contains(ref, "/") {
			ref = ""
		}
		return img, ref, nil
	}
	return nil, "", sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "the OCI layout %s holds no image for %s", path, plat)
}
