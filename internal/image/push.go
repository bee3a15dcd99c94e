package image

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// SnapshotPush asks AddSnapshot to push the new snapshot to a registry as
// an image, for a runtime whose sandboxes run registry images their nodes
// pull (Kubernetes) rather than this host's layer directories.
type SnapshotPush struct {
	// Repo is the repository the image goes to (host[:port]/path), tagged
	// with the snapshot's id. The server's own registry logins (the docker
	// config's keychain) authenticate the push; none goes into a sandbox.
	Repo string
	// Base is the registry image the source sandbox ran: the snapshot's
	// image is Base plus the snapshot's layer. Its layers are not uploaded
	// again when Repo's registry has them (the same repository, or a
	// mount from another of the registry's); from another registry they
	// are copied.
	Base string
	// BestEffort: a push that fails keeps the snapshot, unpushed, instead
	// of failing it; for a runtime that runs this host's layers, which
	// pushes only so that other replicas can pull the snapshot.
	BestEffort bool
}

// SnapshotLabel is the config label a pushed snapshot image carries its
// snapshot's id in: it also makes every snapshot's manifest distinct, so
// deleting one never deletes another that happens to have the same
// content.
const SnapshotLabel = "dev.paddock.snapshot"

// pushTimeout bounds one snapshot push, layers included.
const pushTimeout = 30 * time.Minute

// unpushTimeout bounds deleting one pushed snapshot image.
const unpushTimeout = time.Minute

// CheckRepository says whether repo can be a SnapshotPush.Repo.
func CheckRepository(repo string) error {
	if _, err := name.NewRepository(repo, name.StrictValidation); err != nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_snapshot_registry", "snapshot registry %q is not a repository (host[:port]/path): %v", repo, err)
	}
	return nil
}

// pushSnapshot pushes the layer directory dir of snapshot id as an image:
// p.Base plus one layer made from dir, with spec's env, user and working
// dir, tagged id in p.Repo. It returns the image as repo@digest.
func (s *Store) pushSnapshot(ctx context.Context, id, dir string, spec NewSnapshot) (string, error) {
	p := spec.Push
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	repo, err := name.NewRepository(p.Repo, name.StrictValidation)
	if err != nil {
		return "", CheckRepository(p.Repo)
	}
	baseRef, err := name.ParseReference(p.Base)
	if err != nil {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "snapshot base %q is not an image reference: %v", p.Base, err)
	}
	auth := remote.WithAuthFromKeychain(authn.DefaultKeychain)
	// The operator named the snapshot registry: it may be on a private
	// address the pull guard refuses (an in-cluster registry). Any other
	// registry a base comes from is reached as pulls reach it.
	var baseTransport http.RoundTripper = s.registry
	if baseRef.Context().RegistryStr() == repo.RegistryStr() {
		baseTransport = remote.DefaultTransport
	}
	base, err := remote.Image(baseRef, remote.WithContext(ctx), auth, remote.WithTransport(baseTransport),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return "", pushError(repo.String(), fmt.Errorf("base image %s: %w", p.Base, err))
	}

	// The layer is compressed once, into a file: ggcr then hashes it and
	// uploads it from there, streaming, whatever its size (its own
	// compression of a plain tar runs twice, or caches the whole blob in
	// memory). The fastest level: the caller waits for the push.
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "push-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("push snapshot: %w", err)
	}
	defer os.Remove(f.Name())
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err == nil {
		err = WriteLayerTar(ctx, zw, dir)
	}
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("push snapshot: %w", err)
	}
	layerType := types.DockerLayer
	if mt, err := base.MediaType(); err == nil && mt == types.OCIManifestSchema1 {
		layerType = types.OCILayer
	}
	layer, err := tarball.LayerFromFile(f.Name(), tarball.WithMediaType(layerType))
	if err != nil {
		return "", fmt.Errorf("push snapshot: %w", err)
	}
	now := v1.Time{Time: s.now().UTC().Truncate(time.Second)}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: layerType,
		History: v1.History{Created: now, CreatedBy: "paddock snapshot " + id, Comment: "sandbox " + spec.Source}})
	if err != nil {
		return "", pushError(repo.String(), err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", pushError(repo.String(), fmt.Errorf("base image %s: %w", p.Base, err))
	}
	cf = cf.DeepCopy()
	cf.Created = now
	cf.Config.Env = slices.Clone(spec.Config.Env)
	cf.Config.User = spec.Config.User
	cf.Config.WorkingDir = spec.Config.WorkingDir
	cf.Config.Labels = maps.Clone(cf.Config.Labels)
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels[SnapshotLabel] = id
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", pushError(repo.String(), err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", pushError(repo.String(), err)
	}
	if err := remote.Write(repo.Tag(id), img, remote.WithContext(ctx), auth); err != nil {
		return "", pushError(repo.String(), err)
	}
	ref := repo.Digest(digest.String()).String()
	s.log.InfoContext(ctx, "image store: snapshot pushed", "snapshot", id, "image", ref, "base", p.Base)
	return ref, nil
}

// pushError is a failed push as the API reports it: the registry is the
// operator's, so whatever it said, the snapshot is unavailable, not the
// caller's fault.
func pushError(repo string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("push snapshot to %s: %w", repo, err)
	}
	return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrUnavailable, "snapshot_push_failed",
		"cannot push the snapshot to its registry %s", repo), err)
}

// UnpushSnapshot deletes a pushed snapshot image (SnapshotPush; ref as
// Snapshot.Ref gives it) from its registry. A registry that does not let
// manifests be deleted (many disable it) keeps the image: that is logged,
// not an error; so is an image already gone.
func (s *Store) UnpushSnapshot(ctx context.Context, ref string) error {
	r, err := name.NewDigest(ref)
	if err != nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "pushed snapshot %q is not a repo@digest: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(ctx, unpushTimeout)
	defer cancel()
	err = remote.Delete(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	var te *transport.Error
	switch {
	case err == nil:
		s.log.InfoContext(ctx, "image store: pushed snapshot deleted", "image", ref)
		return nil
	case errors.As(err, &te) && (te.StatusCode == http.StatusMethodNotAllowed || te.StatusCode == http.StatusNotFound ||
		slices.ContainsFunc(te.Errors, func(d transport.Diagnostic) bool { return d.Code == transport.UnsupportedErrorCode })):
		s.log.InfoContext(ctx, "image store: pushed snapshot kept: its registry does not delete it", "image", ref, "status", te.StatusCode)
		return nil
	}
	return fmt.Errorf("delete pushed snapshot %s: %w", ref, err)
}
