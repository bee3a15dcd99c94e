package runc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/userns"
)

// idMap is one sandbox's share of host ids: ids n < userns.Size inside
// are host ids base+n. A nil *idMap means no user namespace.
type idMap struct {
	base uint32
}

// Names of the driver's own host-side mounts in a sandbox's host dir.
const (
	sysfsName = "sys"  // sysfs of a joined network namespace
	cowPrefix = "cow-" // cow-<n>: the overlay of copy-on-write mount n
)

// ids is what one Create needs of the sandbox's user namespace.
type ids struct {
	m  *idMap     // nil: the sandbox runs in the host's user namespace
	ns *userns.NS // the sandbox's user namespace, with m's mapping
	// plain are bind sources that must not be idmapped again (mounts
	// the driver made with idmapped layers already, sysfs).
	plain map[string]bool
	sysfs string // see withUserNS
}

// openIDs claims the sandbox's rootfs dir and, with user namespaces, its
// id range and its user namespace. The caller closes ids and, on failure,
// releases the claim (teardown does).
func (d *Driver) openIDs(id string) (*ids, error) {
	m, err := d.roots.claim(id)
	if err != nil {
		return nil, err
	}
	out := &ids{m: m, plain: map[string]bool{}}
	if m == nil {
		return out, nil
	}
	if out.ns, err = userns.New(m.base); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *ids) close() {
	if s != nil && s.ns != nil {
		s.ns.Close()
	}
}

// as runs fn as the sandbox's root where the sandbox's files are concerned
// (see userns.As); without a user namespace it just runs fn.
func (s *ids) as(fn func() error) error {
	if s.m == nil {
		return fn()
	}
	return userns.As(s.m.base, fn)
}

// mountOverlay mounts o at target, with idmapped layers when the sandbox
// has a user namespace.
func (s *ids) mountOverlay(o overlay, target string) error {
	return o.mount(target, s.ns)
}

// joinNetNS readies a joined network namespace for a sandbox with a user
// namespace (see joinedNetNS); dir is the sandbox's host dir.
func (s *ids) joinNetNS(nsPath, dir string) error {
	if s.m == nil || nsPath == "" {
		return nil
	}
	s.sysfs = filepath.Join(dir, sysfsName)
	s.plain[s.sysfs] = true
	return joinedNetNS(nsPath, s.sysfs)
}

// copyOnWrite mounts, in the sandbox's host dir, an overlay for each
// copy-on-write mount (Upper set) and returns the mounts with those
// overlays as plain bind sources. The driver mounts them, not the caller:
// with a user namespace their layers must be idmapped through the
// sandbox's mapping, and an overlay cannot be idmapped afterwards.
func (s *ids) copyOnWrite(dir string, mounts []runtime.Mount) ([]runtime.Mount, error) {
	out := make([]runtime.Mount, 0, len(mounts))
	for i, m := range mounts {
		if m.Upper == "" {
			out = append(out, m)
			continue
		}
		target := filepath.Join(dir, cowPrefix+strconv.Itoa(i))
		if err := os.Mkdir(target, 0o700); err != nil {
			return nil, err
		}
		o := overlay{lowers: []string{m.Source}, upper: m.Upper, work: m.Work, flags: unix.MS_NOSUID | unix.MS_NODEV,
			stage: filepath.Join(dir, stagePrefix+cowPrefix+strconv.Itoa(i))}
		if err := s.mountOverlay(o, target); err != nil {
			return nil, fmt.Errorf("copy-on-write mount at %s: %w", m.Dest, err)
		}
		s.plain[target] = true
		out = append(out, runtime.Mount{Source: target, Dest: m.Dest, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

// apply puts the user namespace into the OCI spec. The sandbox joins
// s.ns, which lives until Create returns, after the container started.
func (s *ids) apply(oci *specs.Spec) {
	if s.m != nil {
		withUserNS(oci, s.ns.Path(), s.sysfs, s.plain)
	}
}

// unmountHostSide unmounts the host-side mounts Create made for a
// sandbox: its root filesystem (and where it was before RootfsDir
// existed), its joined network namespace's sysfs, its copy-on-write
// overlays and any idmapped layers a crash left attached, then gives back
// its rootfs dir and id range.
func (d *Driver) unmountHostSide(id string) error {
	dir := d.hostDir(id)
	targets := []string{d.roots.rootfs(id), filepath.Join(dir, rootfsName), filepath.Join(dir, sysfsName)}
	var stages []string
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			switch name := e.Name(); {
			case strings.HasPrefix(name, cowPrefix):
				targets = append(targets, filepath.Join(dir, name))
			case strings.HasPrefix(name, stagePrefix):
				stages = append(stages, filepath.Join(dir, name))
			}
		}
	}
	var errs []error
	for _, t := range targets {
		errs = append(errs, unmount(t))
	}
	for _, s := range stages {
		errs = append(errs, userns.Unstage(s))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return d.roots.release(id)
}

// unmount unmounts target if it is a mountpoint; busy (a host process has
// its cwd there?), it is detached so it goes as soon as it is unused,
// rather than left mounted.
func unmount(target string) error {
	err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err2 := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err2 != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// joinedNetNS readies a network namespace the node made (it belongs to the
// host's user namespace) for a sandbox with a user namespace of its own,
// which has no power over it: it mounts sysfs for it at sysfs (read-only;
// sysfs shows the network devices of the namespace it is mounted from,
// and only the namespace's owner may mount it), and lets every uid of the
// sandbox bind ports below 1024 there, which the sandbox's root could
// otherwise not do (CAP_NET_BIND_SERVICE counts in the owner's user
// namespace). The namespace is the sandbox's alone, so who binds which of
// its ports is the sandbox's business.
func joinedNetNS(nsPath, sysfs string) error {
	return netns.ForUserNS(nsPath, sysfs, map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"})
}
