package runc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/userns"
)

// roots is Config.RootfsDir, where every sandbox's root filesystem is
// mounted (<dir>/<id>/rootfs), and the ledger of the host id ranges
// sandboxes hold.
//
// Why a directory of its own: with a user namespace, libcontainer's init
// resolves the root filesystem's path as the sandbox's root, an
// unprivileged host uid, so every directory on the way must let others
// search it, which the data dir (0700) must not. So dir is 0711 (searched,
// never listed), and <id> is 0700 and owned by the sandbox's root: the
// sandbox's own root passes, other host users do not, and <id> can be
// reached only by a name nobody can list.
//
// The ledger: a sandbox's range starts at the owner of its <id> dir, and
// is claimed by a symlink .ranges/<first uid> -> ../<id>, made with
// symlink(2)'s own exclusivity, so two paddock processes on one host (two
// data dirs sharing RootfsDir) never hand out one range twice, and a
// restarted paddock finds the claims of the sandboxes it re-adopts. Claims
// are made after the <id> dir and removed before it, so a claim never
// names a missing dir; a crash in between leaves at most an unclaimed dir,
// which the next Create or Destroy of that id removes.
type roots struct {
	dir    string
	base   uint32 // first host id of range 0
	ranges int    // number of ranges; 0: no user namespaces

	mu   sync.Mutex
	next int // guarded by mu: where the next claim starts looking
}

const rangesName = ".ranges"

func (r *roots) rootfs(id string) string { return filepath.Join(r.dir, id, rootfsName) }

// init makes the directories with the modes the scheme needs (also when
// they exist: an operator's umask or a chmod must not break it).
func (r *roots) init() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{r.dir, 0o711}, {filepath.Join(r.dir, rangesName), 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("rootfs dir: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("rootfs dir: %w", err)
		}
	}
	// Every ancestor must let others search it too.
	for p := filepath.Dir(r.dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("rootfs dir: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("rootfs dir %s: %s is not searchable by other users (mode %v); sandboxes with a user namespace could not reach their root", r.dir, p, fi.Mode().Perm())
		}
		if p == "/" {
			return nil
		}
	}
}

// claim makes the sandbox's dir and mountpoint and, with user namespaces,
// gives it a free range. It returns the sandbox's mapping (nil without
// user namespaces).
func (r *roots) claim(id string) (*idMap, error) {
	dir := filepath.Join(r.dir, id)
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		// Left by a crash: the id is new to the data dir (Create made its
		// host dir), so nothing uses it.
		if err = r.release(id); err == nil {
			err = os.Mkdir(dir, 0o700)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("rootfs dir: %w", err)
	}
	m, err := r.claimRange(id, dir)
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, rootfsName), 0o755)
	}
	if err != nil {
		return nil, errors.Join(err, r.release(id))
	}
	return m, nil
}

func (r *roots) claimRange(id, dir string) (*idMap, error) {
	if r.ranges == 0 {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.ranges {
		slot := (r.next + i) % r.ranges
		m := &idMap{base: r.base + uint32(slot)*userns.Size}
		// Owner first: it is how release finds the claim.
		if err := os.Chown(dir, int(m.base), int(m.base)); err != nil {
			return nil, fmt.Errorf("rootfs dir: %w", err)
		}
		err := os.Symlink("../"+id, r.claimPath(m.base))
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("claim id range: %w", err)
		}
		r.next = slot + 1
		return m, nil
	}
	return nil, sandbox.Errorf(sandbox.ErrExhausted, "no_id_range",
		"all %d id ranges for sandboxes are in use on this host", r.ranges)
}

func (r *roots) claimPath(base uint32) string {
	return filepath.Join(r.dir, rangesName, strconv.FormatUint(uint64(base), 10))
}

// mapOf returns the range the sandbox holds, nil if none (no user
// namespace, or no dir).
func (r *roots) mapOf(id string) (*idMap, error) {
	fi, err := os.Lstat(filepath.Join(r.dir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rootfs dir: %w", err)
	}
	uid := fi.Sys().(*syscall.Stat_t).Uid
	if uid == 0 {
		return nil, nil
	}
	if target, err := os.Readlink(r.claimPath(uid)); err != nil || target != "../"+id {
		return nil, nil // owner set, claim not made (a crash in claimRange)
	}
	return &idMap{base: uid}, nil
}

// release gives back the sandbox's range and removes its dir. Its root
// filesystem must be unmounted. Idempotent.
func (r *roots) release(id string) error {
	m, err := r.mapOf(id)
	if err != nil {
		return err
	}
	if m != nil {
		if err := os.Remove(r.claimPath(m.base)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release id range: %w", err)
		}
	}
	dir := filepath.Join(r.dir, id)
	for _, p := range []string{filepath.Join(dir, rootfsName), dir} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rootfs dir: %w", err)
		}
	}
	return nil
}

// newRoots readies cfg.RootfsDir and, unless cfg.NoUserNS, checks that
// this kernel and the data dir's filesystem (probed in runDir) support
// what sandboxes with user namespaces need: without it the driver refuses
// to start rather than run sandboxes weaker than configured.
func newRoots(cfg Config, runDir string) (*roots, error) {
	r := &roots{dir: cfg.RootfsDir, base: cfg.IDBase, ranges: cfg.IDRanges}
	if cfg.NoUserNS {
		r.ranges = 0
	}
	if err := r.init(); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	if r.ranges == 0 {
		return r, nil
	}
	r.next = r.nextFree()
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	if err := userns.Probe(runDir, r.base); err != nil {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_userns",
			"runc driver: sandboxes need user namespaces with idmapped mounts, and this host fails: %v (see `paddock doctor`; --no-userns runs sandboxes without them, where root in a sandbox is root on the host)", err)
	}
	return r, nil
}

// nextFree is where claims should start looking: past the highest range
// claimed (by sandboxes this process will re-adopt, or another process's),
// so a restart next to many running sandboxes does not retry each of them.
func (r *roots) nextFree() int {
	ents, _ := os.ReadDir(filepath.Join(r.dir, rangesName))
	next := 0
	for _, e := range ents {
		first, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || first < uint64(r.base) {
			continue
		}
		if slot := int((first - uint64(r.base)) / userns.Size); slot < r.ranges {
			next = max(next, slot+1)
		}
	}
	return next % r.ranges
}
