package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// install unpacks img's missing layers and records it under ref in scope (a
// team, or Published). Pull and Import share it, so an imported image goes
// through the same checks.
func (s *Store) install(ctx context.Context, scope, ref string, img v1.Image, progress func(LayerProgress)) (*Image, error) {
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	// Checked before any download, and again once the image is in: in
	// this store's index below, or, with a Directory, once the caller has
	// recorded the ref there (record).
	if err := s.checkImageQuota(ctx, scope, ref); err != nil {
		return nil, err
	}
	diffIDs, unpin, err := s.installLayers(ctx, img, progress)
	// The layers stay pinned until the image record names them, so a GC
	// running meanwhile cannot sweep a layer this pull has just unpacked.
	defer unpin()
	if err != nil {
		return nil, err
	}

	c := cf.Config
	rec := &imageRecord{
		Digest:  digest.String(),
		DiffIDs: diffIDs,
		Config: ImageConfig{
			Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
			Entrypoint: c.Entrypoint, Cmd: c.Cmd,
		},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only scope's ref moves: every other team's ref of the same name, and
	// the published one, keep naming what they named.
	if s.dirRefs == nil {
		if err := s.checkImageQuotaLocked(scope, ref); err != nil {
			return nil, err
		}
	}
	refs := s.scopeLocked(scope)
	prev, moved := refs[ref]
	refs[ref] = rec.Digest
	if moved && prev != rec.Digest {
		s.dropUnreferencedLocked(prev)
	}
	rec.LastUsed = s.now()
	s.idx.Images[rec.Digest] = rec
	if err := s.saveLocked(); err != nil {
		return nil, fmt.Errorf("save index: %w", err)
	}
	return s.imageLocked(scope, ref, rec), nil
}

// layer makes sure the layer with diff ID hex h is unpacked, sharing the work
// with any concurrent pull of the same layer. cached is true when this call
// did not unpack it.
func (s *Store) layer(ctx context.Context, h string, l v1.Layer) (size int64, cached bool, err error) {
	for {
		s.mu.Lock()
		if rec, ok := s.idx.Layers[h]; ok {
			s.mu.Unlock()
			return rec.Size, true, nil
		}
		if f := s.flights[h]; f != nil {
			s.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return 0, false, ctx.Err()
			}
			// The leader's caller gave up: this caller has not, so it tries
			// again (and probably leads).
			if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			return f.size, true, f.err
		}
		f := &flight{done: make(chan struct{})}
		s.flights[h] = f
		s.mu.Unlock()

		size, err := s.unpack(ctx, h, l)
		s.mu.Lock()
		delete(s.flights, h)
		if err == nil {
			s.idx.Layers[h] = layerRecord{Size: size}
		}
		s.mu.Unlock()
		f.size, f.err = size, err
		close(f.done)
		return size, false, err
	}
}

// unpack writes the layer into a temp dir and renames it into place whole,
// so layers/<hex> exists only once it is complete.
func (s *Store) unpack(ctx context.Context, h string, l v1.Layer) (int64, error) {
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), h[:12]+"-")
	if err != nil {
		return 0, err
	}
	defer fstree.Remove(tmp) // no-op once renamed
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	sum := sha256.New()
	log := s.log.With("layer", h)
	size, err := unpackLayer(ctx, tmp, io.TeeReader(rc, sum), s.opts.MaxLayerBytes, log)
	if err != nil {
		return 0, err
	}
	// The diff ID names the directory other images reuse: a layer whose
	// content does not hash to it could poison every later image that
	// claims the same diff ID, so the name is checked, not trusted.
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_layer", "layer content hashes to sha256:%s, not its diff ID sha256:%s", got, h)
	}
	final := s.layerDir(h)
	// A directory with no index record is left by a crash before the index
	// was saved; nothing can use it.
	if err := fstree.Remove(final); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return 0, err
	}
	crashpoint.Hit("image/layer/installed")
	s.unpacks.Add(1)
	log.DebugContext(ctx, "image store: layer unpacked", "bytes", size)
	return size, nil
}

func isHex64(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// installLayers unpacks the layers of img the store does not have yet and
// returns their diff IDs, lowest first. They stay pinned (GC leaves them)
// until the caller, having recorded what names them, calls unpin, which
// it must call whatever the error.
func (s *Store) installLayers(ctx context.Context, img v1.Image, progress func(LayerProgress)) (diffIDs []string, unpin func(), err error) {
	if progress == nil {
		progress = func(LayerProgress) {}
	}
	unpin = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, id := range diffIDs {
			h := id[len("sha256:"):]
			if s.pinned[h]--; s.pinned[h] <= 0 {
				delete(s.pinned, h)
			}
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, unpin, err
	}
	var total int64
	for i, l := range layers {
		id, err := l.DiffID()
		if err != nil {
			return diffIDs, unpin, err
		}
		if id.Algorithm != "sha256" || !isHex64(id.Hex) {
			return diffIDs, unpin, sandbox.Errorf(sandbox.ErrInvalid, "invalid_layer", "layer %d has an unsupported diff ID %q", i, id)
		}
		s.mu.Lock()
		s.pinned[id.Hex]++
		s.mu.Unlock()
		diffIDs = append(diffIDs, id.String())

		progress(LayerProgress{Digest: id.String(), Index: i, Count: len(layers)})
		size, cached, err := s.layer(ctx, id.Hex, l)
		if err != nil {
			return diffIDs, unpin, fmt.Errorf("layer %s: %w", id, err)
		}
		total += size
		if total > s.opts.MaxImageBytes {
			// The layers unpacked so far stay for GC to sweep: another image
			// may share them.
			return diffIDs, unpin, sandbox.Errorf(sandbox.ErrTooLarge, "image_too_large",
				"image is larger than the %d-byte limit", s.opts.MaxImageBytes)
		}
		progress(LayerProgress{Digest: id.String(), Index: i, Count: len(layers), Bytes: size, Cached: cached, Done: true})
	}
	return diffIDs, unpin, nil
}
