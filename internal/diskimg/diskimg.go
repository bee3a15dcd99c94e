// Package diskimg makes, copies and mounts sized ext4 images: the one way
// paddock caps a directory's disk use on a kernel without usable quotas.
// Named volumes (internal/volume) and each sandbox's writable layer
// (internal/runtime/runc) live in such images.
//
// An image is a sparse file holding an ext4 filesystem (mkfs.ext4 from
// e2fsprogs) whose size is the cap: a write past it fails with ENOSPC at
// once, and the image never takes more of the host's disk than its size.
// Its inode count (BytesPerInode) caps the number of files the same way.
// It is loop-mounted on the host (nosuid, nodev) through a loop device
// configured with ioctls (no losetup) with LO_FLAGS_AUTOCLEAR, so the
// device detaches by itself when the last mount goes. The image's bytes
// are written only by the kernel's ext4 driver, never by a sandbox, so
// mounting it is not mounting untrusted filesystem metadata.
//
// Formatting costs tens of milliseconds, copying a formatted image by its
// data extents about one: Templates keeps one formatted image per size and
// makes each new image a copy of it.
package diskimg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mkfs is the formatter's name; its absence is reported by Available.
const Mkfs = "mkfs.ext4"

// FormatOptions shape a new filesystem.
type FormatOptions struct {
	// Label is the filesystem's label (at most 16 bytes are kept).
	Label string
	// BytesPerInode gives the filesystem one inode per this many bytes
	// (mkfs.ext4 -i): the image's inode count is its cap on files. 0
	// takes mkfs's default for the size.
	BytesPerInode int
	// NoJournal leaves the journal out, for scratch space that a host
	// crash loses anyway (a running sandbox's layer): it mounts faster and
	// writes metadata once. Anything meant to outlive a crash keeps it.
	NoJournal bool
}

// Usage is what a mounted image holds, from statfs.
type Usage struct {
	Bytes       uint64 // blocks in use (ext4's own metadata included)
	BytesLimit  uint64 // the filesystem's size
	Inodes      uint64 // inodes in use
	InodesLimit uint64 // the filesystem's inode count
	// Available is what is left to an unprivileged writer (reserved
	// blocks, none in an image paddock formats, excluded).
	Available uint64
}

// ErrNoMkfs is wrapped by Format's error when mkfs.ext4 is missing.
var ErrNoMkfs = errors.New(Mkfs + " not found (install e2fsprogs)")

// Templates makes images of a given size as copies of a formatted image
// kept per size under a directory of its own. The first image of a size
// formats its template (concurrent first uses share one mkfs); the Keep
// most recently used sizes stay, older templates are removed. Safe for
// concurrent use.
type Templates struct {
	dir  string
	opts FormatOptions
	keep int

	mu      sync.Mutex
	used    map[int64]time.Time // guarded by mu: templates on disk, by last use
	flights map[int64]*flight   // guarded by mu: templates being formatted
}

// flight is one template being formatted; done closes when err is set.
type flight struct {
	done chan struct{}
	err  error
}

// DefaultKeep is how many template sizes Templates keeps when asked for 0.
const DefaultKeep = 8

const (
	templateExt = ".img"
	tmpPrefix   = ".tmp-"
)

// NewTemplates keeps templates formatted with opts in dir (made if
// missing), removing what an interrupted format left there.
func NewTemplates(dir string, opts FormatOptions, keep int) (*Templates, error) {
	if keep <= 0 {
		keep = DefaultKeep
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk templates: %w", err)
	}
	t := &Templates{dir: dir, opts: opts, keep: keep, used: map[int64]time.Time{}, flights: map[int64]*flight{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disk templates: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		size, err := strconv.ParseInt(strings.TrimSuffix(name, templateExt), 10, 64)
		if err != nil || !strings.HasSuffix(name, templateExt) {
			continue
		}
		if fi, err := e.Info(); err == nil {
			t.used[size] = fi.ModTime()
		}
	}
	return t, nil
}

func (t *Templates) path(size int64) string {
	return filepath.Join(t.dir, strconv.FormatInt(size, 10)+templateExt)
}

// Make writes a new image of size bytes at dst, which must not exist: a
// copy of the size's template by data extents, so it is as sparse as the
// template (well under a MiB of data for gigabytes of filesystem).
func (t *Templates) Make(ctx context.Context, dst string, size int64) error {
	src, err := t.open(ctx, size)
	if err != nil {
		return err
	}
	defer src.Close()
	return clone(src, dst)
}

// open returns the template of size, open, formatting it first if needed.
// Opened under mu, so an eviction cannot remove it in between; once open
// it may be evicted (unlinked) and still be read.
func (t *Templates) open(ctx context.Context, size int64) (*os.File, error) {
	for {
		t.mu.Lock()
		if _, ok := t.used[size]; ok {
			f, err := os.Open(t.path(size))
			if err == nil {
				t.used[size] = time.Now()
				t.mu.Unlock()
				return f, nil
			}
			delete(t.used, size) // removed behind our back: make it again
		}
		fl, ok := t.flights[size]
		if !ok {
			fl = &flight{done: make(chan struct{})}
			t.flights[size] = fl
			t.mu.Unlock()
			// Detached from the caller: the template serves everyone
			// waiting for it, and Format bounds its own time.
			fl.err = t.format(context.WithoutCancel(ctx), size)
			t.mu.Lock()
			delete(t.flights, size)
			if fl.err == nil {
				t.used[size] = time.Now()
				t.evictLocked()
			}
			close(fl.done)
			t.mu.Unlock()
		} else {
			t.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-fl.done:
		}
		if fl.err != nil {
			return nil, fl.err
		}
	}
}

// format makes the template of size through a temp file and a rename, so a
// template on disk is always whole.
func (t *Templates) format(ctx context.Context, size int64) error {
	tmp := filepath.Join(t.dir, tmpPrefix+strconv.FormatInt(size, 10)+templateExt)
	_ = os.Remove(tmp)
	if err := Format(ctx, tmp, size, t.opts); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, t.path(size)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("disk template: %w", err)
	}
	return nil
}

// evictLocked removes the least recently used templates beyond keep. The
// caller holds mu.
func (t *Templates) evictLocked() {
	if len(t.used) <= t.keep {
		return
	}
	sizes := make([]int64, 0, len(t.used))
	for s := range t.used {
		sizes = append(sizes, s)
	}
	slices.SortFunc(sizes, func(a, b int64) int { return t.used[a].Compare(t.used[b]) })
	for _, s := range sizes[:len(sizes)-t.keep] {
		_ = os.Remove(t.path(s))
		delete(t.used, s)
	}
}

// Sizes returns the sizes that have a template, smallest first.
func (t *Templates) Sizes() []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int64, 0, len(t.used))
	for s := range t.used {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
