package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Default size caps, uncompressed. They bound what one hostile or mistaken
// image can write to the host's disk before it is refused.
const (
	DefaultMaxLayerBytes = 8 << 30
	DefaultMaxImageBytes = 16 << 30
)

// StoreOptions configure a Store.
type StoreOptions struct {
	// MaxBytes is the size GC brings the store under by evicting the least
	// recently used images; 0 means no cap.
	MaxBytes int64
	// MaxLayerBytes caps one layer's uncompressed tar stream and the content
	// it unpacks to (DefaultMaxLayerBytes if 0).
	MaxLayerBytes int64
	// MaxImageBytes caps the sum of an image's layers (DefaultMaxImageBytes
	// if 0).
	MaxImageBytes int64
	// SnapshotTTL is how long a snapshot lives after its last use:
	// DefaultSnapshotTTL if 0, forever if negative.
	SnapshotTTL time.Duration
	// PullTimeout bounds one pull StartPull runs (DefaultPullTimeout if 0).
	PullTimeout time.Duration
	// Guard decides which addresses a pull may connect to: the registry,
	// its redirects (blob storage) and its token realm alike. The zero value
	// refuses loopback and private addresses (set Guard.AllowPrivate or
	// Guard.Allow for a registry on the LAN); link-local and metadata
	// addresses are always refused.
	Guard netguard.Guard
	// SnapshotRegistry is the repository snapshots are pushed to (paddock
	// serve --snapshot-registry): the operator's, so a snapshot another
	// replica pushed there is pulled from it whatever Guard says, as it
	// was pushed (ResolveSnapshot). "": every snapshot pull is guarded.
	SnapshotRegistry string
	// Per-team caps (quota.go): image refs a team's scope holds,
	// snapshots a team owns and the bytes of their own layers. 0: the
	// Default of each; negative: no cap.
	TeamMaxImages        int
	TeamMaxSnapshots     int
	TeamMaxSnapshotBytes int64
	// Logger gets the store's events (slog.Default() if nil).
	Logger *slog.Logger
}

// Validate reports an options value that cannot work.
func (o StoreOptions) Validate() error {
	if o.MaxBytes < 0 || o.MaxLayerBytes < 0 || o.MaxImageBytes < 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_store_options", "image store size limits must not be negative")
	}
	if o.PullTimeout < 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_store_options", "image store pull timeout must not be negative")
	}
	if err := o.Guard.Validate(); err != nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_store_options", "image store: %v", err)
	}
	return nil
}

// ImageConfig is the part of an image's config a sandbox's processes use.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// Published is the scope of the refs every team sees: the host admin
// publishes into it. Any other scope is a team id, whose refs only that team
// sees and moves. A team's own ref shadows a published one of the same name.
const Published = ""

// Image is an image in the Store, as one scope sees it.
type Image struct {
	// Ref is the normalised reference the image was pulled or imported as
	// (index.docker.io/library/alpine:3.20), or its digest if it has none.
	Ref string `json:"ref"`
	// Team is the scope Ref lives in: a team id, or Published ("").
	Team string `json:"team,omitempty"`
	// Digest is the manifest digest (sha256:...).
	Digest string `json:"digest"`
	// Layers are the unpacked layer directories, lowest (base) first.
	Layers []string    `json:"-"`
	Config ImageConfig `json:"config"`
	// Size is the sum of the layers' unpacked sizes in bytes.
	Size int64 `json:"size"`
}

// Lowerdirs are img's layer directories in overlayfs lowerdir order:
// topmost first, base last.
func (img *Image) Lowerdirs() []string {
	lowers := slices.Clone(img.Layers)
	slices.Reverse(lowers)
	return lowers
}

// LayerProgress reports one layer of a pull or import.
type LayerProgress struct {
	Digest string // the layer's diff ID
	Index  int    // 0-based, lowest layer first
	Count  int    // layers in the image
	Bytes  int64  // unpacked size, once Done
	Cached bool   // already in the store: nothing was downloaded
	Done   bool   // false when the layer starts, true when it is unpacked
}

// imageRecord is an image as persisted in the index. It lives while any
// scope's ref names its digest.
type imageRecord struct {
	Digest   string      `json:"digest"`
	DiffIDs  []string    `json:"diff_ids"` // lowest first, "sha256:<hex>"
	Config   ImageConfig `json:"config"`
	LastUsed time.Time   `json:"last_used"`
}

// layerRecord is an unpacked layer as persisted in the index.
type layerRecord struct {
	Size int64 `json:"size"`
}

// index is the store's persistent state, one JSON file.
type index struct {
	// Scopes maps a scope (a team id, or Published under "") to its refs:
	// ref -> image digest. An image imported without a tag is named in its
	// scope by its own digest.
	Scopes map[string]map[string]string `json:"scopes"`
	// LegacyRefs are the host-wide refs of a store from before teams. load
	// moves them into the Published scope, where every team still sees them
	// and only the host admin can move them.
	LegacyRefs map[string]string       `json:"refs,omitempty"`
	Images     map[string]*imageRecord `json:"images"` // digest -> image
	Layers     map[string]layerRecord  `json:"layers"` // diff ID hex (or snapshot layer name) -> layer
	// Snapshots are sandboxes' writable layers kept as layers.
	Snapshots map[string]*snapshotRecord `json:"snapshots,omitempty"` // snapshot id -> snapshot
	// Shared: the refs here were recorded in a Directory (ShareRefs), so a
	// ref the directory lacks was removed through another replica.
	Shared bool `json:"shared,omitempty"`
	// SnapshotsShared: the snapshots here were recorded in a Directory
	// (ShareRefs), so one the directory lacks was deleted through another
	// replica.
	SnapshotsShared bool `json:"snapshots_shared,omitempty"`
}

// flight is one in-progress unpack of a layer that concurrent pulls share.
type flight struct {
	done chan struct{}
	size int64
	err  error
}

// Store keeps pulled and imported images under one directory:
//
//	index.json            refs, images, layers and last-use times
//	layers/<diff ID hex>/ one unpacked layer, an overlay lowerdir
//	tmp/                  layers being unpacked, renamed into layers/ when whole
//
// One process owns a store directory at a time. The pulls StartPull runs
// belong to the store: Close cancels them and waits.
type Store struct {
	dir  string
	opts StoreOptions
	log  *slog.Logger
	now  func() time.Time // the one clock; tests replace it
	// registry carries every pull's HTTP traffic through opts.Guard.
	registry *http.Transport

	mu      sync.Mutex         // guards the fields below and index.json
	idx     index              // the in-memory copy of index.json
	flights map[string]*flight // diff ID hex -> unpack in progress
	pinned  map[string]int     // diff ID hex -> pulls in progress that hold it

	// dirRefs is the replicas' shared directory of refs (ShareRefs); nil:
	// this store's refs are its own.
	dirRefs Directory

	unpacks atomic.Int64 // layers unpacked since open, for tests

	// life ends at Close; the pulls StartPull runs end with it.
	life     context.Context
	stopLife context.CancelFunc
	bgMu     sync.Mutex     // guards closed, and pulls.Add against Close's Wait
	closed   bool           // StartPull refuses once set
	pulls    sync.WaitGroup // the pulls StartPull runs
}

// OpenStore opens (creating if needed) the image store in dir, normally
// <data>/images. Layers left half-unpacked by a crash are removed.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_store_options", "image store: empty directory")
	}
	if opts.MaxLayerBytes == 0 {
		opts.MaxLayerBytes = DefaultMaxLayerBytes
	}
	if opts.MaxImageBytes == 0 {
		opts.MaxImageBytes = DefaultMaxImageBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PullTimeout == 0 {
		opts.PullTimeout = DefaultPullTimeout
	}
	if opts.Guard.Hint == "" {
		opts.Guard.Hint = "paddock serve --registry-allow-private or --egress-allow-cidr"
	}
	s := &Store{
		dir:      filepath.Clean(dir),
		opts:     opts,
		log:      opts.Logger,
		now:      time.Now,
		registry: opts.Guard.Transport(),
		flights:  map[string]*flight{},
		pinned:   map[string]int{},
	}
	if err := fstree.Remove(filepath.Join(s.dir, "tmp")); err != nil {
		return nil, fmt.Errorf("image store: clean tmp: %w", err)
	}
	for _, d := range []string{s.dir, filepath.Join(s.dir, "layers"), filepath.Join(s.dir, "tmp")} {
		// 0o700, set again on every start (MkdirAll leaves an existing
		// directory's mode alone): layer paths show in /proc/mounts, and no
		// host user has business below them. Overlay mounts are made by
		// root, whose credentials reach the lower dirs.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	s.life, s.stopLife = context.WithCancel(context.Background())
	return s, nil
}

func (s *Store) indexPath() string { return filepath.Join(s.dir, "index.json") }

func (s *Store) layerDir(hex string) string { return filepath.Join(s.dir, "layers", hex) }

func (s *Store) load() error {
	s.idx = index{Scopes: map[string]map[string]string{}, Images: map[string]*imageRecord{}, Layers: map[string]layerRecord{}}
	b, err := os.ReadFile(s.indexPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &s.idx); err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	if s.idx.Scopes == nil {
		s.idx.Scopes = map[string]map[string]string{}
	}
	if len(s.idx.LegacyRefs) > 0 {
		pub := s.scopeLocked(Published)
		for ref, d := range s.idx.LegacyRefs {
			pub[ref] = d
		}
		s.log.Info("image store: host-wide refs from before teams are now published", "refs", len(s.idx.LegacyRefs))
		s.idx.LegacyRefs = nil
	}
	if s.idx.Images == nil {
		s.idx.Images = map[string]*imageRecord{}
	}
	if s.idx.Layers == nil {
		s.idx.Layers = map[string]layerRecord{}
	}
	return nil
}

// saveLocked writes the index atomically: a crash leaves the old or the new
// file, never half of one. Callers hold s.mu.
func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(s.idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.indexPath(), b, 0o600)
}

// normalizeRef gives the one spelling of a reference the index is keyed by,
// so "alpine" and "index.docker.io/library/alpine:latest" are one image. A
// bare digest (an imported image without a tag) is its own key.
func normalizeRef(ref string, opts ...name.Option) (string, error) {
	if strings.HasPrefix(ref, "sha256:") {
		return ref, nil
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "invalid image reference %q: %v", ref, err)
	}
	return r.Name(), nil
}

// scopeLocked returns scope's ref map, made if missing. Callers hold s.mu.
func (s *Store) scopeLocked(scope string) map[string]string {
	m := s.idx.Scopes[scope]
	if m == nil {
		m = map[string]string{}
		s.idx.Scopes[scope] = m
	}
	return m
}

// referencedLocked reports whether any scope's ref names digest. Callers
// hold s.mu.
func (s *Store) referencedLocked(digest string) bool {
	for _, refs := range s.idx.Scopes {
		for _, d := range refs {
			if d == digest {
				return true
			}
		}
	}
	return false
}

// dropUnreferencedLocked forgets an image no ref names any more; its layers
// go in the next GC. Callers hold s.mu.
func (s *Store) dropUnreferencedLocked(digest string) {
	if !s.referencedLocked(digest) {
		delete(s.idx.Images, digest)
	}
}

// imageLocked builds the public view of a record. Callers hold s.mu.
func (s *Store) imageLocked(scope, ref string, rec *imageRecord) *Image {
	img := &Image{Ref: ref, Team: scope, Digest: rec.Digest, Config: rec.Config}
	for _, id := range rec.DiffIDs {
		hex := strings.TrimPrefix(id, "sha256:")
		img.Layers = append(img.Layers, s.layerDir(hex))
		img.Size += s.idx.Layers[hex].Size
	}
	return img
}

// lookupLocked finds what ref (a reference or a digest) names for team: the
// team's own ref first, then a published one. A digest is found only if one
// of those scopes holds a ref to it, so no team reaches an image another
// team keeps private by guessing or learning its digest. It returns the
// scope and ref that matched. Callers hold s.mu.
func (s *Store) lookupLocked(team, ref string) (string, string, *imageRecord, error) {
	key, err := normalizeRef(ref)
	if err != nil {
		return "", "", nil, err
	}
	scopes := []string{team}
	if team != Published {
		scopes = append(scopes, Published)
	}
	for _, scope := range scopes {
		refs := s.idx.Scopes[scope]
		if d, ok := refs[key]; ok {
			if rec, ok := s.idx.Images[d]; ok {
				return scope, key, rec, nil
			}
		}
	}
	if strings.HasPrefix(key, "sha256:") {
		if rec, ok := s.idx.Images[key]; ok {
			for _, scope := range scopes {
				for r, d := range s.idx.Scopes[scope] {
					if d == key {
						return scope, r, rec, nil
					}
				}
			}
		}
	}
	return "", "", nil, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "image %q is not in the store", ref)
}

// Get returns the image a ref (or a digest) names for team: its own ref,
// else a published one.
func (s *Store) Get(team, ref string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	scope, key, rec, err := s.lookupLocked(team, ref)
	if err != nil {
		return nil, err
	}
	return s.imageLocked(scope, key, rec), nil
}

// List returns the refs team sees (its own and the published ones), sorted
// by ref, the team's before a published ref of the same name; an image with
// two refs appears twice. AllScopes lists every scope's refs.
func (s *Store) List(team string) []*Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Image
	for scope, refs := range s.idx.Scopes {
		if team != AllScopes && scope != team && scope != Published {
			continue
		}
		for ref, d := range refs {
			if rec, ok := s.idx.Images[d]; ok {
				out = append(out, s.imageLocked(scope, ref, rec))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref != out[j].Ref {
			return out[i].Ref < out[j].Ref
		}
		return out[i].Team > out[j].Team // a team's ref before the published one
	})
	return out
}

// AllScopes asks List for every scope's refs (the host admin's view).
const AllScopes = "\x00all"

// Remove forgets a ref of scope (never another scope's: a team removing
// "alpine" never touches the published alpine); removing by digest removes
// every ref of the scope to that image. The image goes when its last ref in
// any scope does; its layers stay on disk until GC, which also checks that
// no sandbox still uses them. With a Directory the ref leaves it too, and
// a ref only the directory has (pulled through another replica) is
// removed from it; the other replicas drop theirs when next asked for it
// (Resolve).
func (s *Store) Remove(ctx context.Context, scope, ref string) error {
	key, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	removed, err := s.removeLocal(scope, key, ref)
	if errors.Is(err, sandbox.ErrNotFound) && s.dirRefs != nil {
		e, lerr := s.dirRefs.Lookup(ctx, scope, key)
		if lerr != nil {
			if errors.Is(lerr, sandbox.ErrNotFound) {
				return err
			}
			return fmt.Errorf("remove image %s: %w", ref, lerr)
		}
		removed, err = map[string]string{key: e.Digest}, nil
	}
	if err != nil {
		return err
	}
	if s.dirRefs == nil {
		return nil
	}
	var errs []error
	for r, d := range removed {
		if err := s.dirRefs.Forget(ctx, scope, r, d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove image %s from the other replicas' directory (removed here; try again): %w", ref, err)
	}
	return nil
}

// removeLocal is Remove in this store: the refs it removed, ref -> digest.
func (s *Store) removeLocal(scope, key, ref string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := s.idx.Scopes[scope]
	removed := map[string]string{}
	if d, ok := refs[key]; ok {
		removed[key] = d
		delete(refs, key)
	} else if strings.HasPrefix(key, "sha256:") {
		for r, d := range refs {
			if d == key {
				removed[r] = d
				delete(refs, r)
			}
		}
	}
	if len(removed) == 0 {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "image %q is not in the store", ref)
	}
	if len(refs) == 0 {
		delete(s.idx.Scopes, scope)
	}
	for _, d := range removed {
		s.dropUnreferencedLocked(d)
	}
	return removed, s.saveLocked()
}

// Touch records that a sandbox of team starts from the image ref names now,
// for GC's least-recently-used order. Node calls it on every sandbox create.
func (s *Store) Touch(team, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _, rec, err := s.lookupLocked(team, ref)
	if err != nil {
		return err
	}
	rec.LastUsed = s.now()
	return s.saveLocked()
}

// Size returns the bytes of all unpacked layers in the store.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sizeLocked()
}

func (s *Store) sizeLocked() int64 {
	var n int64
	for _, l := range s.idx.Layers {
		n += l.Size
	}
	return n
}

// GC removes layers that no image references and then, while the store is
// larger than MaxBytes, evicts the least recently used images whose layers
// are not in use. inUse reports whether a running sandbox mounts a layer
// directory (nil: none is); a layer in use is never removed, and an image
// with a layer in use is never evicted. Snapshots past their TTL are
// dropped first, and their pushed images deleted from their registry;
// with a Directory, once their TTL has passed since their last use
// through any replica (or when another replica deleted them: dropped
// here only).
func (s *Store) GC(ctx context.Context, inUse func(layerDir string) bool) error {
	if inUse == nil {
		inUse = func(string) bool { return false }
	}
	var pushed []string
	exp := s.snapshotExpiries(ctx, inUse)
	// After the unlock below: no registry call holds s.mu.
	defer func() {
		for _, ref := range pushed {
			if err := s.UnpushSnapshot(ctx, ref); err != nil {
				s.log.WarnContext(ctx, "image store: delete an expired snapshot's image", "image", ref, "err", err)
			}
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()

	pushed = s.expireSnapshotsLocked(ctx, inUse, exp)
	// Evict images first, so their layers go in the sweep below.
	if s.opts.MaxBytes > 0 && s.projectedLocked(inUse) > s.opts.MaxBytes {
		recs := make([]*imageRecord, 0, len(s.idx.Images))
		for _, rec := range s.idx.Images {
			recs = append(recs, rec)
		}
		sort.Slice(recs, func(i, j int) bool { return recs[i].LastUsed.Before(recs[j].LastUsed) })
		for _, rec := range recs {
			if s.projectedLocked(inUse) <= s.opts.MaxBytes {
				break
			}
			if s.imageInUseLocked(rec, inUse) {
				continue
			}
			s.log.InfoContext(ctx, "image store: evicting image", "image", rec.Digest)
			for scope, refs := range s.idx.Scopes {
				for r, d := range refs {
					if d == rec.Digest {
						delete(refs, r)
					}
				}
				if len(refs) == 0 {
					delete(s.idx.Scopes, scope)
				}
			}
			delete(s.idx.Images, rec.Digest)
		}
	}

	referenced := map[string]bool{}
	for _, rec := range s.idx.Images {
		for _, id := range rec.DiffIDs {
			referenced[strings.TrimPrefix(id, "sha256:")] = true
		}
	}
	s.snapshotLayersLocked(referenced)
	entries, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	var errs []error
	for _, e := range entries {
		hex := e.Name()
		if referenced[hex] || s.pinned[hex] > 0 || s.flights[hex] != nil || inUse(s.layerDir(hex)) {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := fstree.Remove(s.layerDir(hex)); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.InfoContext(ctx, "image store: removed layer", "layer", hex, "bytes", s.idx.Layers[hex].Size)
		delete(s.idx.Layers, hex)
	}
	if err := s.saveLocked(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	return nil
}

// projectedLocked is the store's size once the sweep has removed the layers
// no image references; layers of pulls in progress and layers in use stay.
func (s *Store) projectedLocked(inUse func(string) bool) int64 {
	keep := map[string]bool{}
	for _, rec := range s.idx.Images {
		for _, id := range rec.DiffIDs {
			keep[strings.TrimPrefix(id, "sha256:")] = true
		}
	}
	for hex := range s.pinned {
		keep[hex] = true
	}
	s.snapshotLayersLocked(keep)
	var n int64
	for hex, l := range s.idx.Layers {
		if keep[hex] || inUse(s.layerDir(hex)) {
			n += l.Size
		}
	}
	return n
}

func (s *Store) imageInUseLocked(rec *imageRecord, inUse func(string) bool) bool {
	for _, id := range rec.DiffIDs {
		if inUse(s.layerDir(strings.TrimPrefix(id, "sha256:"))) {
			return true
		}
	}
	return false
}
