package image

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Directory is where the replicas sharing one database record every
// scope's refs and every team's snapshots (internal/daemon gives the
// store's image and snapshot directories), so that a replica whose own
// store lacks an image another replica pulled, or a snapshot another
// replica took, pulls it too when a sandbox needs it (Resolve,
// ResolveSnapshot). The Store writes it on every pull, import, snapshot
// and removal; Resolve reads it. Record fills in Entry.Replica (the
// replica writing) and Lookup returns it.
type Directory interface {
	// Record inserts or replaces the entry of (e.Scope, e.Ref).
	Record(ctx context.Context, e Entry) error
	// Lookup returns a scope's ref; an error of kind sandbox.ErrNotFound
	// if the scope has none of that name.
	Lookup(ctx context.Context, scope, ref string) (Entry, error)
	// Forget removes (scope, ref) if it still names digest.
	Forget(ctx context.Context, scope, ref, digest string) error
	// CountRefs returns how many refs scope has, whichever replica
	// recorded them: what a team's image cap counts.
	CountRefs(ctx context.Context, scope string) (int, error)

	// RecordSnapshot inserts or replaces a snapshot's entry: the
	// snapshot as its replica took it (Layers are left out, they are
	// that replica's directories). Record fills in Snapshot.Replica.
	RecordSnapshot(ctx context.Context, snap Snapshot) error
	// LookupSnapshot returns a snapshot's entry, Replica and LastUsed
	// set, Layers empty; an error of kind sandbox.ErrNotFound if there is
	// none.
	LookupSnapshot(ctx context.Context, id string) (Snapshot, error)
	// TouchSnapshot moves a snapshot's last use to at if that is later.
	TouchSnapshot(ctx context.Context, id string, at time.Time) error
	// ForgetSnapshot removes a snapshot's entry; an unknown one is not an
	// error.
	ForgetSnapshot(ctx context.Context, id string) error
	// ListSnapshots returns a team's entries ("" every team's), oldest
	// first, each as LookupSnapshot returns it.
	ListSnapshots(ctx context.Context, team string) ([]Snapshot, error)
}

// Entry is one ref of one scope in the Directory, and how to pull its
// image again: never credentials.
type Entry struct {
	Scope  string // a team id, or Published
	Ref    string // the normalised ref, as the Store keys it
	Digest string // the manifest digest
	// Source is the registry reference the image was pulled from; "" for
	// an imported image.
	Source   string
	Platform string
	Insecure bool
	// Keychain: the pull was allowed the server's own keychain (the
	// operator's logins), so pulling it again for the same scope is too.
	Keychain bool
	Replica  string // the replica that recorded it
}

// ShareRefs makes dir the Store's directory. The first time a store meets
// a directory, it records the refs it holds that the directory lacks
// (refs pulled before replicas shared them), as pulled from their own name
// (a ref that is a digest, as imported): from then on the directory has
// every ref this store has, and a ref missing from it was removed through
// another replica (Resolve). So with its snapshots (shareSnapshots). Call
// it before the store is used.
func (s *Store) ShareRefs(ctx context.Context, dir Directory) error {
	s.dirRefs = dir
	if err := s.shareImageRefs(ctx, dir); err != nil {
		return err
	}
	return s.shareSnapshots(ctx, dir)
}

// shareImageRefs is ShareRefs of the image refs.
func (s *Store) shareImageRefs(ctx context.Context, dir Directory) error {
	s.mu.Lock()
	if s.idx.Shared {
		s.mu.Unlock()
		return nil
	}
	var local []Entry
	for scope, refs := range s.idx.Scopes {
		for ref, d := range refs {
			e := Entry{Scope: scope, Ref: ref, Digest: d}
			if !strings.HasPrefix(ref, "sha256:") {
				e.Source = ref
			}
			local = append(local, e)
		}
	}
	s.mu.Unlock()
	for _, e := range local {
		_, err := dir.Lookup(ctx, e.Scope, e.Ref)
		if err == nil {
			continue // another replica's is newer than ours
		}
		if !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("image store: share refs: %w", err)
		}
		if err := dir.Record(ctx, e); err != nil {
			return fmt.Errorf("image store: share refs: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idx.Shared = true
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("image store: share refs: %w", err)
	}
	if len(local) > 0 {
		s.log.InfoContext(ctx, "image store: refs shared with the other replicas", "refs", len(local))
	}
	return nil
}

// record writes a ref this store has just moved into the directory. A
// ref new to a capped scope there is then checked against the team's cap
// again (settleImageRef), and refused leaves this store too; moving a ref
// the scope has is always allowed.
func (s *Store) record(ctx context.Context, e Entry) error {
	if s.dirRefs == nil {
		return nil
	}
	max, isNew := s.imageCap(e.Scope), false
	if max > 0 {
		_, err := s.dirRefs.Lookup(ctx, e.Scope, e.Ref)
		if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("%s is in this replica's image store, but the other replicas were not told (try again): %w", e.Ref, err)
		}
		isNew = err != nil
	}
	if err := s.dirRefs.Record(ctx, e); err != nil {
		return fmt.Errorf("%s is in this replica's image store, but the other replicas were not told (try again): %w", e.Ref, err)
	}
	if isNew {
		return s.settleImageRef(ctx, e, max)
	}
	return nil
}

// Resolve returns the image ref names for team, as Get does, as the
// directory says it is: the team's own ref, then the published one. A
// ref this store lacks, or holds at another digest (moved through another
// replica), is pulled by digest from the registry it came from first,
// with the pull's own checks and caps, into the same scope (charged to
// that team's quota); an imported one, in no registry, is an error naming
// the replica that has it. A local ref the directory no longer has was
// removed through another replica: it is dropped here (its layers stay
// while a sandbox uses them). Without a directory it is Get.
func (s *Store) Resolve(ctx context.Context, team, ref string) (*Image, error) {
	if s.dirRefs == nil {
		return s.Get(team, ref)
	}
	key, err := normalizeRef(ref)
	if err != nil {
		return nil, err
	}
	scopes := []string{team}
	if team != Published {
		scopes = append(scopes, Published)
	}
	for _, scope := range scopes {
		e, err := s.dirRefs.Lookup(ctx, scope, key)
		if errors.Is(err, sandbox.ErrNotFound) {
			s.dropRemoved(ctx, scope, key)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: read the image directory: %w", ref, err)
		}
		if img := s.held(scope, key, e.Digest); img != nil {
			return img, nil
		}
		return s.fetch(ctx, e)
	}
	// A digest names an image through any ref of the team's scopes.
	return s.Get(team, ref)
}

// held returns scope's ref if it names digest here, else nil.
func (s *Store) held(scope, ref, digest string) *Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx.Scopes[scope][ref] != digest {
		return nil
	}
	rec, ok := s.idx.Images[digest]
	if !ok {
		return nil
	}
	return s.imageLocked(scope, ref, rec)
}

// dropRemoved forgets scope's ref here, removed through another replica.
func (s *Store) dropRemoved(ctx context.Context, scope, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := s.idx.Scopes[scope]
	d, ok := refs[ref]
	if !ok {
		return
	}
	delete(refs, ref)
	if len(refs) == 0 {
		delete(s.idx.Scopes, scope)
	}
	s.dropUnreferencedLocked(d)
	if err := s.saveLocked(); err != nil {
		s.log.WarnContext(ctx, "image store: drop a ref removed through another replica", "image", ref, "team", scope, "err", err)
		return
	}
	s.log.InfoContext(ctx, "image store: ref removed through another replica, dropped here", "image", ref, "team", scope, "digest", d)
}

// fetch pulls the image of a directory entry by digest into its scope.
// The pull is bounded by PullTimeout and ends with the store.
func (s *Store) fetch(ctx context.Context, e Entry) (*Image, error) {
	if e.Source == "" {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "image_on_other_replica",
			"image %s was imported through replica %s and is in no registry, so this replica cannot pull it: import it again through this replica, or push it to a registry and pull it from there",
			e.Ref, e.Replica)
	}
	var nameOpts []name.Option
	if e.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	src, err := name.ParseReference(e.Source, nameOpts...)
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "image %s: the directory's source %q: %v", e.Ref, e.Source, err)
	}
	from := src.Context().Digest(e.Digest)
	ctx, cancel := context.WithTimeout(ctx, s.opts.PullTimeout)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	log := s.log.With("image", e.Ref, "team", e.Scope, "digest", e.Digest, "from", from.Name(), "replica", e.Replica)
	log.InfoContext(ctx, "image not in this replica's store: pulling it by digest")
	progress := func(p LayerProgress) {
		if p.Done {
			log.InfoContext(ctx, "image pull: layer", "layer", p.Index+1, "of", p.Count, "bytes", p.Bytes, "cached", p.Cached)
		}
	}
	img, err := s.pull(ctx, e.Scope, e.Ref, from, PullOptions{Platform: e.Platform, Insecure: e.Insecure, Keychain: e.Keychain}, progress)
	if errors.Is(err, sandbox.ErrUnauthorized) {
		// Not the caller's credentials at fault: the tenant's own, which
		// the directory never keeps.
		return nil, fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrForbidden, "image_needs_credentials",
			"image %s was pulled through replica %s with credentials this replica does not have: pull it again through this replica", e.Ref, e.Replica), err)
	}
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrNotFound, "image_gone_from_registry",
			"image %s was pulled through replica %s, but %s is no longer in its registry: pull it again", e.Ref, e.Replica, from.Name()), err)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s (pulled through replica %s): %w", e.Ref, e.Replica, err)
	}
	return img, nil
}
