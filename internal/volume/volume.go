// Package volume keeps named persistent volumes on one host: directories
// that outlive sandboxes (a dependency cache, a build cache) and that
// sandboxes mount at a path, read-write or copy-on-write.
//
// Each volume is a sparse image file formatted ext4 (internal/diskimg; mkfs.ext4 from
// e2fsprogs) whose size is the volume's cap: the cap is the size of a real
// filesystem, so a write past it fails with ENOSPC at once instead of being
// found by a scan afterwards. The image is loop-mounted on the host (nosuid,
// nodev) while at least one sandbox uses it, and unmounted, which frees the
// loop device (LO_FLAGS_AUTOCLEAR), when the last user goes. The image's
// bytes are written only by the kernel's ext4 driver, never by a sandbox, so
// mounting it is not mounting untrusted filesystem metadata.
//
// Names are per team: two teams may each have a volume "cache", and
// neither learns of the other's. Layout of Config.Dir:
//
//	_teams/<team>/<name>/volume.json   metadata, written atomically
//	_teams/<team>/<name>/disk.img      the sparse ext4 image
//	_teams/<team>/<name>/mnt/          where the image is mounted while in use
//	_teams/<team>/.tmp-*               a create or delete under way (swept at load,
//	                                   as are .tmp-* beside legacy volumes)
//	<name>/...                         a legacy volume (below)
//
// and inside the image: data/ (what sandboxes see, owned by uid 1000 until
// the first sandbox's user takes it while it is empty, see SetUser) and
// .cow/<sandbox>/{upper,work} (a copy-on-write user's private changes, so
// they count against the cap too and vanish with the user).
//
// "_teams" cannot be a volume's name (names start with a letter or digit)
// and a team id is one path component of [a-z0-9-], so neither a team
// directory nor a team's volume can meet a legacy volume's directory.
//
// Legacy volumes are those older versions made at <name>/, when names
// were unique on the host. At load one with no team is adopted by
// Config.LegacyTeam (its volume.json rewritten), so that no volume is
// mountable by every team; then one that nothing mounts and no sandbox
// holds is moved to its team's directory. One in use stays where it is,
// since the mounts of the running sandboxes that paddock re-adopts are made
// from its path, and is moved once its last user has been released.
//
// Modes: a read-write user binds data/ itself and must be alone; any number
// of copy-on-write users may share a volume, each seeing data/ under an
// overlay of its own, which the sandbox's driver mounts from the dirs
// Acquire returns (with a user namespace its layers must be mapped through
// the sandbox's ids, which only the driver knows). They exclude each other
// because overlayfs leaves the result undefined when its lower layer
// changes under it.
//
// Ownership inside the image is what sandboxes see (uid 1000 is 1000 on
// disk, whatever host ids a sandbox's user namespace maps it to), so a
// volume written by one sandbox reads right in the next.
//
// Users are recorded in volume.json before anything is mounted, so after a
// restart the Manager knows who holds what: mounts it finds in
// /proc/self/mountinfo are kept for recorded users and removed otherwise,
// and the node releases the users whose sandboxes did not survive.
package volume

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Size defaults and bounds.
const (
	DefaultSize    = 10 << 30  // a volume created without a size
	DefaultMaxSize = 100 << 30 // Config.MaxSize when zero
	// Per-team caps when Config leaves them zero: volumes a team owns and
	// the sum of their sizes. Images are sparse, so sizes promise more
	// than they take; the sum bounds what a team's volumes can ever take.
	DefaultTeamMaxVolumes = 20
	DefaultTeamMaxBytes   = 200 << 30
	// MinSize leaves room for ext4's own metadata and journal.
	MinSize = 16 << 20
	// sizeAlign: sizes are rounded up to whole MiB.
	sizeAlign = 1 << 20
)

// Names inside a volume's directory and inside its filesystem.
const (
	metaName  = "volume.json"
	imageName = "disk.img"
	mntName   = "mnt"
	cowName   = "cow"  // where overlays were mounted before drivers mounted them; swept at load
	dataName  = "data" // in the image: what sandboxes see
	cowInner  = ".cow" // in the image: copy-on-write users' upper and work dirs
	tmpPrefix = ".tmp-"
	teamsName = "_teams" // holds a directory per team; not a valid volume name
)

// Config configures a Manager.
type Config struct {
	Dir         string // required; usually <data-dir>/volumes
	DefaultSize int64  // default DefaultSize
	MaxSize     int64  // default DefaultMaxSize
	Logger      *slog.Logger
	Now         func() time.Time
	// TeamMaxVolumes and TeamMaxBytes cap a team's volumes and the sum of
	// their sizes: DefaultTeamMaxVolumes and DefaultTeamMaxBytes if 0, no
	// cap if negative.
	TeamMaxVolumes int
	TeamMaxBytes   int64
	// LegacyTeam adopts the volumes older versions made without a team
	// (the daemon passes the host admin's team). Required only when such a
	// volume exists: Open refuses to guess an owner.
	LegacyTeam string
}

func (c *Config) setDefaults() {
	if c.DefaultSize == 0 {
		c.DefaultSize = DefaultSize
	}
	if c.MaxSize == 0 {
		c.MaxSize = max(DefaultMaxSize, c.DefaultSize)
	}
	if c.TeamMaxVolumes == 0 {
		c.TeamMaxVolumes = DefaultTeamMaxVolumes
	}
	if c.TeamMaxBytes == 0 {
		c.TeamMaxBytes = DefaultTeamMaxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports an impossible setting, after defaults.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "volume: Dir is required")
	case c.DefaultSize < MinSize || c.MaxSize < c.DefaultSize:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "volume: want %d <= DefaultSize (%d) <= MaxSize (%d)", MinSize, c.DefaultSize, c.MaxSize)
	case c.LegacyTeam != "" && !validTeam(c.LegacyTeam):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "volume: LegacyTeam %q is not a valid team id", c.LegacyTeam)
	}
	return nil
}

// Volume is one volume as the Manager reports it.
type Volume struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"sizeBytes"` // the cap: the filesystem's size
	// TeamID owns the volume: the name is unique within it, and only its
	// members see the volume and its sandboxes mount it. Empty only in a
	// legacy volume's metadata before its adoption (see the package doc).
	TeamID     string    `json:"teamId,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
	// Users maps the sandboxes that mount the volume to their mode.
	Users map[string]string `json:"users,omitempty"`
	// UsedBytes is what the image takes on the host's disk (its allocated
	// blocks, filesystem metadata included); not stored.
	UsedBytes int64 `json:"-"`
}

// InUseBy returns the ids of the sandboxes that mount the volume, sorted.
func (v Volume) InUseBy() []string { return slices.Sorted(maps.Keys(v.Users)) }

// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var namePattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`) })

// ValidName reports whether name is a well-formed volume name. Names become
// directory names, so they are kept to a small alphabet that cannot start
// with a dot.
func ValidName(name string) bool { return namePattern().MatchString(name) }

func invalidName(name string) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_name",
		"invalid volume name %q: want 1-63 of [a-z0-9_.-], starting with a letter or digit", name)
}

// validTeam reports whether id can own volumes: a team id is one path
// component (sandbox.ValidID's alphabet), so it can name a directory.
func validTeam(id string) bool { return sandbox.ValidID(id) }

func notFound(name string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "volume_not_found", "volume %q not found", name)
}

// Manager owns the volumes under Config.Dir. It is safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	sys system

	// mu guards vols and serialises every change, mounts included: they
	// take milliseconds, and one order of operations per host keeps the
	// refcounts and the mounts in step.
	mu   sync.Mutex
	vols map[key]*vol
}

// key names a volume: a name is unique within its team.
type key struct{ team, name string }

// vol is one volume's in-memory state.
type vol struct {
	meta Volume
	// dir is the volume's directory: <Dir>/_teams/<team>/<name>, or
	// <Dir>/<name> for a legacy volume not yet moved (see the package doc).
	dir     string
	mounted bool // the image is mounted at mnt/
}

func (v *vol) image() string { return filepath.Join(v.dir, imageName) }
func (v *vol) mnt() string   { return filepath.Join(v.dir, mntName) }
func (v *vol) cowDir(id string) string {
	return filepath.Join(v.dir, mntName, cowInner, id)
}

// system is the host side of volumes: formatting, loop devices and
// mounts. Linux has the real one; tests on other systems see
// ErrUnsupported.
type system interface {
	format(ctx context.Context, image string, size int64, label string) error
	// mount attaches image to a loop device and mounts it at dir.
	mount(image, dir string) error
	unmount(dir string) error
	// mounted returns the mountpoints in mountinfo at or below dir.
	mounted(dir string) (map[string]bool, error)
	// emptyDir reports whether the directory name in parent has no
	// entries; chownDir gives it to uid:gid. Neither follows a symlink at
	// name: parent is paddock's, name may be the sandbox's.
	emptyDir(parent, name string) (bool, error)
	chownDir(parent, name string, uid, gid int) error
}

// Open loads the volumes under cfg.Dir, adopts and moves legacy ones (see
// the package doc) and reconciles their mounts with the users they record.
func Open(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	if err := makeDir(filepath.Join(dir, teamsName)); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "volume"), sys: newSystem(), vols: map[key]*vol{}}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

// teamDir is where a team's volumes live; teamID is valid.
func (m *Manager) teamDir(teamID string) string {
	return filepath.Join(m.cfg.Dir, teamsName, teamID)
}

// load reads every volume and puts the host's mounts in agreement with
// the recorded users: a mount nobody records is removed (a crash between
// mounting and recording, or before unmounting); recorded users whose
// mount is gone (a reboot) stay recorded until the node releases them.
// Team volumes are read first, so that a legacy volume that would take a
// name its team already has (paddock downgraded and upgraded again) is
// found and refused rather than shadowing it.
func (m *Manager) load() error {
	mounts, err := m.sys.mounted(m.cfg.Dir)
	if err != nil {
		return err
	}
	root := filepath.Join(m.cfg.Dir, teamsName)
	teams, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("volume: read %s: %w", root, err)
	}
	for _, t := range teams {
		team := t.Name()
		if !t.IsDir() || !validTeam(team) {
			m.log.Warn("ignoring an entry that is not a team's directory", "dir", filepath.Join(root, team))
			continue
		}
		names, err := m.volumeDirs(m.teamDir(team))
		if err != nil {
			return err
		}
		for _, name := range names {
			dir := filepath.Join(m.teamDir(team), name)
			meta, err := readMeta(dir, name)
			if err != nil {
				return err
			}
			if meta.TeamID != team {
				return fmt.Errorf("volume: %s/%s is damaged: team %q in a directory of team %q", dir, metaName, meta.TeamID, team)
			}
			v := &vol{meta: meta, dir: dir, mounted: mounts[filepath.Join(dir, mntName)]}
			m.vols[key{team, name}] = v
			m.reconcileMounts(v, mounts)
		}
	}
	names, err := m.volumeDirs(m.cfg.Dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := m.loadLegacy(name, mounts); err != nil {
			return err
		}
	}
	return nil
}

// volumeDirs returns the names of the volume directories in parent, and
// removes what a create or delete that crashed left there (never mounted).
func (m *Manager) volumeDirs(parent string) ([]string, error) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("volume: read %s: %w", parent, err)
	}
	var out []string
	for _, ent := range ents {
		name := ent.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			if err := fstree.Remove(filepath.Join(parent, name)); err != nil {
				m.log.Warn("remove half-created or half-deleted volume", "dir", filepath.Join(parent, name), "err", err)
			}
			continue
		}
		if ent.IsDir() && ValidName(name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// loadLegacy loads the legacy volume at <Dir>/<name>: adopted by
// Config.LegacyTeam if it has no team, then moved into its team's
// directory if nothing uses it.
func (m *Manager) loadLegacy(name string, mounts map[string]bool) error {
	dir := filepath.Join(m.cfg.Dir, name)
	meta, err := readMeta(dir, name)
	if err != nil {
		return err
	}
	team := meta.TeamID
	switch {
	case team == "" && m.cfg.LegacyTeam == "":
		return fmt.Errorf("volume: %s has no team and no team is configured to adopt it (volume.Config.LegacyTeam)", dir)
	case team == "":
		team = m.cfg.LegacyTeam
	case !validTeam(team):
		return fmt.Errorf("volume: %s/%s is damaged: team %q", dir, metaName, team)
	}
	k := key{team, name}
	if _, dup := m.vols[k]; dup {
		return fmt.Errorf("volume: team %s has a volume %q at both %s and %s: remove or rename the one to drop",
			team, name, m.vols[k].dir, dir)
	}
	if meta.TeamID == "" {
		// Before anything else: from here on only this team mounts it.
		meta.TeamID = team
		if err := writeMeta(dir, meta); err != nil {
			return fmt.Errorf("volume: adopt %s: %w", dir, err)
		}
		m.log.Info("legacy volume adopted", "volume", name, "team", team)
	}
	v := &vol{meta: meta, dir: dir, mounted: mounts[filepath.Join(dir, mntName)]}
	m.vols[k] = v
	m.reconcileMounts(v, mounts)
	m.moveLegacy(v)
	return nil
}

// moveLegacy moves a legacy volume into its team's directory once nothing
// mounts it and no sandbox holds it: a running sandbox's mounts were made
// from its old path, and a restart re-adopts them from there. A failure
// leaves it where it is, which works as well; the next load tries again.
// The caller holds m.mu, or is load.
func (m *Manager) moveLegacy(v *vol) {
	dst := filepath.Join(m.teamDir(v.meta.TeamID), v.meta.Name)
	if v.dir == dst || v.mounted || len(v.meta.Users) > 0 {
		return
	}
	log := m.log.With("volume", v.meta.Name, "team", v.meta.TeamID)
	if err := m.makeTeamDir(v.meta.TeamID); err != nil {
		log.Warn("move legacy volume into its team's directory", "err", err)
		return
	}
	if err := os.Rename(v.dir, dst); err != nil {
		log.Warn("move legacy volume into its team's directory", "err", err)
		return
	}
	old := v.dir
	v.dir = dst
	if err := errors.Join(atomicfile.SyncDir(filepath.Dir(old)), atomicfile.SyncDir(filepath.Dir(dst))); err != nil {
		log.Warn("move legacy volume into its team's directory", "err", err)
	}
	log.Info("legacy volume moved into its team's directory", "from", old, "to", dst)
}

// makeTeamDir makes the team's directory if it is not there yet.
func (m *Manager) makeTeamDir(teamID string) error { return makeDir(m.teamDir(teamID)) }

// makeDir makes dir (0700) if it is not there yet, durably: its parent is
// synced, or a crash could lose it with every volume below it. What is
// there already must be a directory, not a symlink to one.
func makeDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		return atomicfile.SyncDir(filepath.Dir(dir))
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("volume: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("volume: %s is not a directory (mode %v): not followed", dir, fi.Mode())
	}
	return nil
}

// readMeta reads the metadata of the volume name in dir.
func readMeta(dir, name string) (Volume, error) {
	data, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		return Volume{}, fmt.Errorf("volume: read %s: %w", dir, err)
	}
	var meta Volume
	if err := json.Unmarshal(data, &meta); err != nil || meta.Name != name {
		return Volume{}, fmt.Errorf("volume: %s/%s is damaged (name %q): %v", dir, metaName, meta.Name, err)
	}
	return meta, nil
}

// reconcileMounts is load's work for one volume.
func (m *Manager) reconcileMounts(v *vol, mounts map[string]bool) {
	log := m.log.With("volume", v.meta.Name, "team", v.meta.TeamID)
	// Overlays an older paddock mounted here: sandboxes that still run
	// keep their own bind of theirs, so the host's copy can go.
	legacy := filepath.Join(v.dir, cowName)
	cows, _ := os.ReadDir(legacy)
	for _, c := range cows {
		if err := m.sys.unmount(filepath.Join(legacy, c.Name())); err != nil {
			log.Error("unmount copy-on-write overlay", "sandbox", c.Name(), "err", err)
		}
	}
	if len(cows) > 0 {
		_ = os.RemoveAll(legacy) // empty dirs by now
	}
	if v.mounted {
		if err := dropStrayCows(v.mnt(), v.meta.Users); err != nil {
			log.Error("remove copy-on-write changes of no recorded user", "err", err)
		}
	}
	if v.mounted && len(v.meta.Users) == 0 {
		log.Warn("unmounting volume no sandbox uses")
		if err := m.sys.unmount(v.mnt()); err != nil {
			log.Error("unmount volume", "err", err)
		} else {
			v.mounted = false
		}
	}
}

// Create makes an empty volume named name in team teamID, capped at size
// bytes (0: the default) rounded up to a whole MiB. Names are unique
// within a team; another team's volumes do not count, nor show.
func (m *Manager) Create(ctx context.Context, teamID, name string, size int64) (Volume, error) {
	size, err := CheckCreate(teamID, name, size, m.cfg.DefaultSize, m.cfg.MaxSize)
	if err != nil {
		return Volume{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := key{teamID, name}
	if _, ok := m.vols[k]; ok {
		return Volume{}, sandbox.Errorf(sandbox.ErrConflict, "volume_exists", "volume %q already exists", name)
	}
	if err := m.checkQuotaLocked(teamID, size); err != nil {
		return Volume{}, err
	}
	if err := m.makeTeamDir(teamID); err != nil {
		return Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
	}
	parent := m.teamDir(teamID)
	tmp, err := os.MkdirTemp(parent, tmpPrefix+name+"-")
	if err != nil {
		return Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := m.sys.format(ctx, filepath.Join(tmp, imageName), size, name); err != nil {
		return Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
	}
	meta := Volume{Name: name, SizeBytes: size, TeamID: teamID, CreatedAt: m.cfg.Now().UTC()}
	if err := writeMeta(tmp, meta); err != nil {
		return Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
	}
	dir := filepath.Join(parent, name)
	if err := os.Rename(tmp, dir); err != nil {
		return Volume{}, fmt.Errorf("volume: create %s: %w", name, err)
	}
	ok = true
	if err := atomicfile.SyncDir(parent); err != nil {
		return Volume{}, err
	}
	v := &vol{meta: meta, dir: dir}
	m.vols[k] = v
	m.log.Info("volume created", "volume", name, "team", teamID, "sizeBytes", size)
	return m.view(v), nil
}

// checkQuotaLocked refuses a new volume of size bytes that would take the
// team past its count or size cap. The caller holds m.mu.
func (m *Manager) checkQuotaLocked(teamID string, size int64) error {
	n, total := 0, int64(0)
	for _, v := range m.vols {
		if v.meta.TeamID == teamID {
			n++
			total += v.meta.SizeBytes
		}
	}
	return CheckTeamQuota(n, total, size, m.cfg.TeamMaxVolumes, m.cfg.TeamMaxBytes)
}

// CheckCreate checks a new volume's name, team and size as every volume
// backend does (this package's, and the claims of internal/volume/claim),
// and returns the size to make: defaultSize for 0, rounded up to whole MiB.
func CheckCreate(teamID, name string, size, defaultSize, maxSize int64) (int64, error) {
	if !ValidName(name) {
		return 0, invalidName(name)
	}
	if !validTeam(teamID) {
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_team", "volumes belong to a team: invalid team id %q", teamID)
	}
	if size == 0 {
		size = defaultSize
	}
	if size < MinSize || size > maxSize {
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_size",
			"volume size must be in [%d, %d] bytes, got %d", int64(MinSize), maxSize, size)
	}
	return (size + sizeAlign - 1) / sizeAlign * sizeAlign, nil
}

// CheckTeamQuota refuses a new volume of size bytes for a team that has n
// volumes of total bytes, past maxVolumes or maxBytes (0: no cap): every
// backend's one rule.
func CheckTeamQuota(n int, total, size int64, maxVolumes int, maxBytes int64) error {
	if maxVolumes > 0 && n >= maxVolumes {
		return sandbox.Errorf(sandbox.ErrForbidden, "volume_quota_exceeded",
			"the team has %d volumes, the most this server allows a team: delete one first", n)
	}
	if maxBytes > 0 && total+size > maxBytes {
		return sandbox.Errorf(sandbox.ErrForbidden, "volume_quota_exceeded",
			"the team's volumes are capped at %d MiB in all, of %d MiB this server allows a team: a %d MiB volume does not fit",
			total>>20, maxBytes>>20, size>>20)
	}
	return nil
}

// Get returns team teamID's volume name; another team's is not found.
func (m *Manager) Get(_ context.Context, teamID, name string) (Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vols[key{teamID, name}]
	if !ok {
		return Volume{}, notFound(name)
	}
	return m.view(v), nil
}

// List returns team teamID's volumes, sorted by name. It never fails:
// the error is that of the interface it shares with claim.Manager.
func (m *Manager) List(_ context.Context, teamID string) ([]Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Volume{}
	for k, v := range m.vols {
		if k.team == teamID {
			out = append(out, m.view(v))
		}
	}
	slices.SortFunc(out, func(a, b Volume) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// ListAll returns every team's volumes, sorted by team and then name: for
// the host admin. It never fails.
func (m *Manager) ListAll(context.Context) ([]Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Volume, 0, len(m.vols))
	for _, v := range m.vols {
		out = append(out, m.view(v))
	}
	slices.SortFunc(out, func(a, b Volume) int {
		return cmp.Or(cmp.Compare(a.TeamID, b.TeamID), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// view copies a volume for a caller. The caller holds m.mu.
func (m *Manager) view(v *vol) Volume {
	out := v.meta
	out.Users = maps.Clone(v.meta.Users)
	if fi, err := os.Stat(v.image()); err == nil {
		out.UsedBytes = allocated(fi)
	}
	return out
}

// Delete removes team teamID's volume name and its content; another team's
// is not found. It is refused with ErrConflict "volume_in_use" while a
// sandbox mounts it.
func (m *Manager) Delete(ctx context.Context, teamID, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := key{teamID, name}
	v, ok := m.vols[k]
	if !ok {
		return notFound(name)
	}
	if len(v.meta.Users) > 0 {
		return sandbox.Errorf(sandbox.ErrConflict, "volume_in_use", "volume %q is mounted by sandbox %s",
			name, strings.Join(v.meta.InUseBy(), ", "))
	}
	if v.mounted {
		// Only after a failed unmount at release; try again now.
		if err := m.sys.unmount(v.mnt()); err != nil {
			return fmt.Errorf("volume: delete %s: %w", name, err)
		}
		v.mounted = false
	}
	// Renamed first so that a crash mid-removal leaves a temp dir that
	// Open sweeps, not a volume without its metadata. The temp name is
	// fresh, so that a removal that failed earlier is no obstacle; the
	// placeholder goes first because os.Rename refuses a directory target.
	parent := filepath.Dir(v.dir)
	gone, err := os.MkdirTemp(parent, tmpPrefix+name+"-deleted-")
	if err == nil {
		err = os.Remove(gone)
	}
	if err == nil {
		err = os.Rename(v.dir, gone)
	}
	if err != nil {
		return fmt.Errorf("volume: delete %s: %w", name, err)
	}
	delete(m.vols, k)
	// Durable before the answer: a crash must not bring back a volume
	// whose delete succeeded.
	if err := atomicfile.SyncDir(parent); err != nil {
		m.log.Warn("sync after deleting volume", "volume", name, "team", teamID, "err", err)
	}
	if err := fstree.Remove(gone); err != nil {
		m.log.Warn("remove deleted volume", "volume", name, "team", teamID, "err", err)
	}
	if parent == m.teamDir(teamID) {
		_ = os.Remove(parent) // the team's last volume; fails, as it should, otherwise
	}
	m.log.Info("volume deleted", "volume", name, "team", teamID)
	return nil
}

// Dirs are the host directories a sandbox's mount of a volume is made of.
type Dirs struct {
	// Source is the volume's data: bound as it is (read-write), or the
	// lower layer of the user's overlay (copy-on-write).
	Source string
	// Upper and Work are a copy-on-write user's own changes and
	// overlayfs's work dir, siblings in the volume's filesystem; empty for
	// a read-write user. The driver mounts the overlay, and unmounts it
	// when it stops the sandbox, before Release.
	Upper, Work string
	// Claim is the PersistentVolumeClaim a Pod mounts, instead of host
	// directories (internal/volume/claim); empty here.
	Claim string
}

// Acquire mounts a volume for a sandbox of team teamID and returns the
// host directories of the sandbox's mount at the mount's path: the
// volume's data itself (read-write), or the data and a private upper dir
// for an overlay (copy-on-write). A read-write user must be alone:
// otherwise ErrConflict "volume_busy". Another team's volume is not found.
func (m *Manager) Acquire(ctx context.Context, sandboxID, teamID string, mnt sandbox.VolumeMount) (Dirs, error) {
	if !sandbox.ValidID(sandboxID) {
		return Dirs{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "invalid sandbox id %q", sandboxID)
	}
	mode := cmp.Or(mnt.Mode, sandbox.VolumeReadWrite)
	if mode != sandbox.VolumeReadWrite && mode != sandbox.VolumeCopyOnWrite {
		return Dirs{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_mode", "volume mode must be %q or %q, got %q",
			sandbox.VolumeReadWrite, sandbox.VolumeCopyOnWrite, mnt.Mode)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// The name is looked up in the sandbox's team only: there is no
	// volume every team may mount.
	v, ok := m.vols[key{teamID, mnt.Volume}]
	if !ok {
		return Dirs{}, notFound(mnt.Volume)
	}
	name := v.meta.Name
	if _, ok := v.meta.Users[sandboxID]; ok {
		return Dirs{}, sandbox.Errorf(sandbox.ErrConflict, "volume_already_mounted", "sandbox %s already mounts volume %q", sandboxID, name)
	}
	for id, um := range v.meta.Users {
		if mode == sandbox.VolumeReadWrite || um == sandbox.VolumeReadWrite {
			return Dirs{}, sandbox.Errorf(sandbox.ErrConflict, "volume_busy",
				"volume %q is mounted %s by sandbox %s; a read-write mount needs the volume alone, copy-on-write mounts share it", name, um, id)
		}
	}

	// Recorded before mounting, so a crash in between leaves a user that
	// the node releases, never a mount nobody accounts for.
	prev := v.meta
	v.meta.Users = maps.Clone(v.meta.Users)
	if v.meta.Users == nil {
		v.meta.Users = map[string]string{}
	}
	v.meta.Users[sandboxID] = mode
	v.meta.LastUsedAt = m.cfg.Now().UTC()
	if err := writeMeta(v.dir, v.meta); err != nil {
		v.meta = prev
		return Dirs{}, fmt.Errorf("volume: acquire %s: %w", name, err)
	}
	dirs, err := m.mountFor(v, sandboxID, mode)
	if err != nil {
		if rerr := m.releaseLocked(v, sandboxID); rerr != nil {
			m.log.Error("undo failed acquire", "volume", name, "sandbox", sandboxID, "err", rerr)
		}
		return Dirs{}, fmt.Errorf("volume: mount %s for sandbox %s: %w", name, sandboxID, err)
	}
	m.log.Info("volume acquired", "volume", name, "team", teamID, "sandbox", sandboxID, "mode", mode)
	return dirs, nil
}

// mountFor mounts the volume if needed and returns the user's dirs.
func (m *Manager) mountFor(v *vol, id, mode string) (Dirs, error) {
	if v.mounted {
		// Unmounted behind paddock's back, the mountpoint would be a plain
		// host directory: uncapped. Trust mountinfo, not memory.
		mounts, err := m.sys.mounted(v.mnt())
		if err != nil {
			return Dirs{}, err
		}
		v.mounted = mounts[v.mnt()]
	}
	if !v.mounted {
		if err := os.MkdirAll(v.mnt(), 0o700); err != nil {
			return Dirs{}, err
		}
		if err := m.sys.mount(v.image(), v.mnt()); err != nil {
			return Dirs{}, err
		}
		v.mounted = true
		if err := initFS(v.mnt(), v.meta.Users); err != nil {
			return Dirs{}, err
		}
	}
	data := filepath.Join(v.mnt(), dataName)
	if mode == sandbox.VolumeReadWrite {
		return Dirs{Source: data}, nil
	}
	inner := v.cowDir(id)
	// Left by a user whose release found the volume unmounted.
	if err := fstree.Remove(inner); err != nil {
		return Dirs{}, err
	}
	upper, work := filepath.Join(inner, "upper"), filepath.Join(inner, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return Dirs{}, err
	}
	// overlayfs shows the upper dir's own owner and mode at the root of
	// the merged view: give it data's, so the sandbox user may write there.
	fi, err := os.Stat(data)
	if err != nil {
		return Dirs{}, err
	}
	if err := os.Mkdir(upper, fi.Mode().Perm()); err != nil {
		return Dirs{}, err
	}
	if uid, gid, ok := owner(fi); ok {
		if err := os.Chown(upper, uid, gid); err != nil {
			return Dirs{}, err
		}
	}
	return Dirs{Source: data, Upper: upper, Work: work}, nil
}

// Release unmounts every volume the sandbox mounts: its copy-on-write
// changes are discarded, and a volume left without users is unmounted.
// Releasing a sandbox that holds nothing is not an error. The sandbox's
// processes must be gone: the driver stopped it.
func (m *Manager) Release(ctx context.Context, sandboxID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, v := range m.vols {
		if _, ok := v.meta.Users[sandboxID]; ok {
			errs = append(errs, m.releaseLocked(v, sandboxID))
		}
	}
	return errors.Join(errs...)
}

// releaseLocked drops one user of v. The caller holds m.mu.
func (m *Manager) releaseLocked(v *vol, id string) error {
	name := v.meta.Name
	var errs []error
	if v.meta.Users[id] == sandbox.VolumeCopyOnWrite {
		errs = append(errs, m.dropCow(v, id))
	}
	users := maps.Clone(v.meta.Users)
	delete(users, id)
	if len(users) == 0 && v.mounted {
		if err := m.sys.unmount(v.mnt()); err != nil {
			errs = append(errs, err)
		} else {
			v.mounted = false
		}
	}
	meta := v.meta
	meta.Users = users
	meta.LastUsedAt = m.cfg.Now().UTC()
	if err := writeMeta(v.dir, meta); err != nil {
		errs = append(errs, err)
	} else {
		v.meta = meta
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("volume: release %s from sandbox %s: %w", name, id, err)
	}
	m.log.Info("volume released", "volume", name, "team", v.meta.TeamID, "sandbox", id, "mounted", v.mounted)
	m.moveLegacy(v) // a legacy volume's last user gone: its old path is free
	return nil
}

// dropCow removes a copy-on-write user's changes (fstree.Remove never
// follows a symlink the sandbox left in them, and holds a bounded number
// of descriptors whatever their depth). The driver has unmounted the
// user's overlay when it stopped the sandbox.
func (m *Manager) dropCow(v *vol, id string) error {
	if v.mounted {
		return fstree.Remove(v.cowDir(id))
	}
	return nil
}

// SetUser gives the sandbox's user (uid:gid, which its agent resolved from
// the image's User once the sandbox started) the root of every volume the
// sandbox mounts that is still empty: a fresh volume belongs to whoever
// first uses it, not to the default sandbox user. A read-write user gets
// the volume's own root; a copy-on-write user the root of its private
// overlay, the only one it sees, while the volume's stays as it is. A
// volume with content keeps its owner. Both roots are made by paddock and
// opened without following a symlink.
func (m *Manager) SetUser(ctx context.Context, sandboxID string, uid, gid uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, v := range m.vols {
		mode, ok := v.meta.Users[sandboxID]
		if !ok || !v.mounted {
			continue
		}
		name := v.meta.Name
		empty, err := m.sys.emptyDir(v.mnt(), dataName)
		if err == nil && empty {
			parent, dir := v.mnt(), dataName
			if mode == sandbox.VolumeCopyOnWrite {
				parent, dir = v.cowDir(sandboxID), "upper"
			}
			err = m.sys.chownDir(parent, dir, int(uid), int(gid))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("volume: give %s to %d:%d: %w", name, uid, gid, err))
		}
	}
	return errors.Join(errs...)
}

// Holders returns the ids of the sandboxes that hold a volume, sorted, so
// that the node can release those it no longer runs.
func (m *Manager) Holders() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := map[string]bool{}
	for _, v := range m.vols {
		for id := range v.meta.Users {
			set[id] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// initFS readies a freshly mounted volume: data/ owned by the sandbox user
// on first use, and no copy-on-write changes left by sandboxes that are no
// longer users.
func initFS(mnt string, users map[string]string) error {
	data := filepath.Join(mnt, dataName)
	switch err := os.Mkdir(data, 0o755); {
	case err == nil:
		if err := os.Chown(data, sandboxUID, sandboxGID); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrExist):
		return err
	}
	return dropStrayCows(mnt, users)
}

// dropStrayCows removes the copy-on-write changes of sandboxes that are
// not users of the volume mounted at mnt (a crash or reboot before their
// release).
func dropStrayCows(mnt string, users map[string]string) error {
	ents, err := os.ReadDir(filepath.Join(mnt, cowInner))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if users[e.Name()] != sandbox.VolumeCopyOnWrite {
			if err := fstree.Remove(filepath.Join(mnt, cowInner, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// The default sandbox user (sandbox.DefaultUID/DefaultGID), who owns a new
// volume's data until SetUser gives it to another.
const (
	sandboxUID = 1000
	sandboxGID = 1000
)

// writeMeta replaces dir/volume.json atomically (internal/atomicfile).
func writeMeta(dir string, meta Volume) error {
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, metaName), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write volume metadata: %w", err)
	}
	return nil
}
