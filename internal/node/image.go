package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// resolveImage finds the Store image ref names for team (its own refs, then
// the published ones) and the root filesystem the driver mounts for it; both
// are nil for the host image, which the driver prepares itself. Node never
// pulls on its own: a client pulls or imports first, through this replica
// or another (Images.Resolve then pulls what another pulled, by digest).
func (m *Manager) resolveImage(ctx context.Context, team, ref string) (*image.Image, *runtime.Rootfs, error) {
	img, err := m.findImage(team, ref, func() (*image.Image, error) { return m.cfg.Images.Resolve(ctx, team, ref) })
	if img == nil || err != nil {
		return nil, nil, err
	}
	// Only GC's least-recently-used order depends on it: not worth failing
	// the create.
	if err := m.cfg.Images.Touch(team, ref); err != nil {
		m.log.Warn("touch image", "image", ref, "err", err)
	}
	return img, &runtime.Rootfs{Lowers: img.Lowerdirs(), Ref: registryRef(img)}, nil
}

// registryRef names img in its registry, pinned to the digest the store
// holds, for a driver whose nodes pull the image themselves (Kubernetes;
// the others use the layers). "" when img has no name but its digest. An
// imported image's name may be in no registry: such a driver's pull then
// fails and says so.
func registryRef(img *image.Image) string { return pinnedRef(img.Ref, img.Digest) }

// pinnedRef is the image ref with the manifest digest digest as a
// registry reference pinned to it; "" when ref is only a digest.
func pinnedRef(ref, digest string) string {
	if ref == "" || strings.HasPrefix(ref, "sha256:") || digest == "" {
		return ""
	}
	if strings.Contains(ref, "@") {
		return ref
	}
	return ref + "@" + digest
}

// lookupImage is resolveImage without its bookkeeping: the image only (nil
// for the host image), read from the store's memory.
func (m *Manager) lookupImage(team, ref string) (*image.Image, error) {
	return m.findImage(team, ref, func() (*image.Image, error) { return m.cfg.Images.Get(team, ref) })
}

// findImage is the image get finds (nil for the host image), with the
// one "not found" every create answers.
func (m *Manager) findImage(team, ref string, get func() (*image.Image, error)) (*image.Image, error) {
	if ref == hostImage {
		return nil, nil
	}
	notFound := sandbox.Errorf(sandbox.ErrNotFound, "image_not_found",
		"image %q is not on this host: pull it first (paddock image pull %s)", ref, ref)
	if m.cfg.Images == nil {
		return nil, notFound
	}
	img, err := get()
	if errors.Is(err, sandbox.ErrNotFound) && sandbox.CodeOf(err) == "image_not_found" {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// imageEnv is a sandbox's default environment: the image config's Env
// ("K=V" entries, as in Docker) with the create request's env over it. The
// image's PATH thus replaces paddock's default PATH, which is what its
// binaries expect. Entries the kernel cannot pass faithfully are dropped.
func imageEnv(imgEnv []string, reqEnv map[string]string) map[string]string {
	env := make(map[string]string, len(imgEnv)+len(reqEnv))
	for _, kv := range imgEnv {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			continue
		}
		env[k] = v
	}
	maps.Copy(env, reqEnv)
	if len(env) == 0 {
		return nil
	}
	return env
}

// Collector is the optional power of an Images store to forget a scope's
// ref and to collect the layers no image, snapshot or sandbox needs;
// *image.Store has it. Node discovers it on Config.Images by type assertion.
type Collector interface {
	Remove(ctx context.Context, scope, ref string) error
	GC(ctx context.Context, inUse func(layerDir string) bool) error
}

var _ Collector = (*image.Store)(nil)

var errNoImageStore = sandbox.Errorf(sandbox.ErrUnsupported, "images_disabled", "this node has no image store")

// RemoveImage drops scope's ref (scope: a team id, or image.Published) and
// collects what no image and no remaining sandbox needs; a stopped sandbox
// keeps its layers until it is deleted. It refuses an image a pending or
// running sandbox was created from (ErrConflict "image_in_use"). A
// published ref of that name is not scope's own: not found.
func (m *Manager) RemoveImage(ctx context.Context, scope, ref string) error {
	store, ok := m.cfg.Images.(Collector)
	if !ok {
		return errNoImageStore
	}
	img, err := m.cfg.Images.Get(scope, ref)
	if errors.Is(err, sandbox.ErrNotFound) || (err == nil && img.Team != scope) {
		// Not scope's own here (a published ref of that name is not), but
		// perhaps pulled through another replica: the store removes it
		// from the replicas' directory, or says it is not found.
		return store.Remove(ctx, scope, ref)
	}
	if err != nil {
		return err
	}
	if m.ImageInUse(img.Digest) {
		return sandbox.Errorf(sandbox.ErrConflict, "image_in_use", "image %s is used by a running sandbox", img.Ref)
	}
	if err := store.Remove(ctx, scope, ref); err != nil {
		return err
	}
	// The ref is gone either way; a failed sweep is retried by the next one.
	if err := store.GC(ctx, m.LayerInUse); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Ref, err)
	}
	return nil
}

// LayerInUse reports whether a sandbox this node still has (in any state
// but deleted) stacks the layer directory dir; a stopped sandbox keeps its
// upper dir, whose overlay only makes sense over the same layers. It is the
// inUse callback of image.Store.GC.
func (m *Manager) LayerInUse(dir string) bool {
	for _, sb := range m.records() {
		if slices.Contains(sb.ImageLayers, dir) {
			return true
		}
	}
	return false
}

// ImageInUse reports whether a pending or running sandbox was created from
// the image with this manifest digest; removing such an image is refused.
func (m *Manager) ImageInUse(digest string) bool {
	for _, sb := range m.records() {
		if sb.ImageDigest == digest && (sb.State == sandbox.Pending || sb.State == sandbox.Running) {
			return true
		}
	}
	return false
}

// records snapshots every record. Manager.mu is released before any
// entry's lock is taken (the lock order is entry.mu, then Manager.mu).
func (m *Manager) records() []sandbox.Sandbox {
	m.mu.Lock()
	ents := slices.Collect(maps.Values(m.entries))
	m.mu.Unlock()
	out := make([]sandbox.Sandbox, 0, len(ents))
	for _, e := range ents {
		e.mu.Lock()
		if !e.gone {
			out = append(out, e.sb)
		}
		e.mu.Unlock()
	}
	return out
}

// adoptUser asks a new sandbox's agent who its user is (the image's User,
// resolved inside the sandbox), records it, and gives the sandbox's
// still-empty volumes to it. An image naming a user it lacks fails the
// create with the agent's ErrInvalid.
func (m *Manager) adoptUser(ctx context.Context, e *entry, client *agent.Client) error {
	// The driver's create waited for the agent's answer to a ping: that
	// answer has the user, and asking again cost a round trip per create.
	info, ok := client.Pinged()
	if !ok {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		defer cancel()
		var err error
		if info, err = client.Ping(pctx); err != nil {
			return fmt.Errorf("ask the agent for the sandbox user: %w", err)
		}
	}
	if err := info.UserErr(); err != nil {
		return err
	}
	u := userOf(info)
	// Saved with the move to running (or failed) that follows; populate
	// reads it from the entry.
	e.mu.Lock()
	e.sb.User = u
	id, nvols := e.sb.ID, len(e.sb.Volumes)
	e.mu.Unlock()
	if nvols > 0 && m.cfg.Volumes != nil {
		if err := m.cfg.Volumes.SetUser(ctx, id, u.UID, u.GID); err != nil {
			return fmt.Errorf("give volumes to the sandbox user: %w", err)
		}
	}
	return nil
}

// userOf is the sandbox user an agent reports.
func userOf(info agent.Info) sandbox.User {
	u := info.RunAs()
	return sandbox.User{UID: u.UID, GID: u.GID, Home: u.Home}
}
