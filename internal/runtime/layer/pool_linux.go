package layer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/fstree"
)

// diskPool keeps a few disks of one size (DisksConfig.PoolMB) made ahead
// of time, each in a directory laid out as a sandbox's host dir holds its
// disk (disk.img mounted at disk/, with upper/ and work/), under the
// driver's run dir's .pool. A create with that cap renames one over its fresh,
// empty host dir (the mount goes with its parent directory) instead of
// copying, attaching and mounting an image while the caller waits; a
// goroutine makes the next one. OpenDisks starts it, Close stops it and removes
// the disks nobody took; a crash leaves them for the next OpenDisks to remove.
type diskPool struct {
	dir  string
	size int64
	make func(ctx context.Context, dir string, size int64) error
	log  *slog.Logger

	mu    sync.Mutex
	ready []string // guarded by mu: made disks' directories, oldest first
	seq   int      // guarded by mu: names the next directory
	kick  chan struct{}

	cancel context.CancelFunc
	done   chan struct{} // closed when the filling goroutine has returned
}

const (
	poolName = ".pool"
	// poolDisks is how many disks wait made: enough for a short burst of
	// creates; each holds a loop device and a mount while it waits.
	poolDisks = 2
	// poolRetry is how long the pool waits after a disk it could not make.
	poolRetry = time.Minute
)

// startPool removes what an earlier process left in the pool's directory
// and, with DisksConfig.PoolMB, starts filling it.
func (d *Disks) startPool() (*diskPool, error) {
	dir := filepath.Join(d.cfg.RunDir, poolName)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	for _, e := range ents {
		if err := removeDisk(filepath.Join(dir, e.Name())); err != nil {
			return nil, fmt.Errorf("disk pool: %w", err)
		}
	}
	if d.cfg.PoolMB == 0 || !d.ok {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &diskPool{dir: dir, size: d.cfg.PoolMB << 20, make: d.makeDisk, log: d.log,
		kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go p.fill(ctx)
	return p, nil
}

// removeDisk unmounts the disk in dir, if any, and removes dir.
func removeDisk(dir string) error {
	if err := UnmountDisk(dir); err != nil {
		return err
	}
	return fstree.Remove(dir)
}

// take renames a made disk of size bytes over dst, an empty directory,
// and reports whether it did.
func (p *diskPool) take(size int64, dst string) bool {
	if size != p.size {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.ready) > 0 {
		src := p.ready[0]
		p.ready = p.ready[1:]
		// rename(2) itself: os.Rename refuses an existing directory.
		err := unix.Rename(src, dst)
		select {
		case p.kick <- struct{}{}:
		default:
		}
		if err == nil {
			return true
		}
		p.log.Warn("disk pool: take a made disk", "err", err)
		_ = removeDisk(src)
	}
	return false
}

// fill keeps poolDisks disks made until ctx ends.
func (p *diskPool) fill(ctx context.Context) {
	defer close(p.done)
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		failed := false
		for ctx.Err() == nil && !failed {
			p.mu.Lock()
			full := len(p.ready) >= poolDisks
			p.seq++
			dir := filepath.Join(p.dir, strconv.Itoa(p.seq))
			p.mu.Unlock()
			if full {
				break
			}
			if err := p.makeOne(ctx, dir); err != nil {
				p.log.Warn("disk pool: make a disk", "err", err, "retryIn", poolRetry)
				failed = true
			}
		}
		// After a failure, the next try waits for a take or poolRetry.
		retry.Stop()
		var again <-chan time.Time
		if failed {
			retry.Reset(poolRetry)
			again = retry.C
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-again:
		}
	}
}

// makeOne makes a disk in dir and offers it, or leaves nothing.
func (p *diskPool) makeOne(ctx context.Context, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := p.make(ctx, dir, p.size); err != nil {
		_ = removeDisk(dir)
		return err
	}
	p.mu.Lock()
	p.ready = append(p.ready, dir)
	p.mu.Unlock()
	return nil
}

// close stops filling and removes the disks nobody took.
func (p *diskPool) close() {
	p.cancel()
	<-p.done
	p.mu.Lock()
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	for _, dir := range ready {
		if err := removeDisk(dir); err != nil {
			p.log.Warn("disk pool: remove a made disk", "err", err)
		}
	}
}
