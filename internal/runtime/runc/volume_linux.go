package runc

import (
	"errors"
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// reservedDests are paths the driver or the agent own inside every
// sandbox: a mount may be neither at, below nor above one of them. The
// spec's own mount destinations are added to these at check time; the
// files bound over /etc's with a network are here too, so that what a
// sandbox may mount does not depend on whether it has a network.
var reservedDests = []string{"/proc", "/sys", "/dev", "/tmp", "/.paddock", agent.BinaryPath, agent.StateDir,
	"/etc/" + resolvConfName, "/etc/" + hostsName}

// addMounts checks spec.Mounts against the OCI spec's own mounts, makes
// their mountpoints in rootfs (the sandbox's merged overlay, mounted on the
// host) and appends the binds to oci. Nothing runs in the sandbox yet, but
// its image or snapshot layers may hold anything, so the mountpoints are
// made one component at a time, refusing symlinks and other filesystems:
// libcontainer, which resolves the same paths inside the rootfs later,
// then finds plain directories where it mounts.
func addMounts(oci *specs.Spec, rootfs string, mounts []runtime.Mount) error {
	if len(mounts) == 0 {
		return nil
	}
	taken := append([]string(nil), reservedDests...)
	for _, m := range oci.Mounts {
		taken = append(taken, m.Destination)
	}
	var dests []string
	for _, m := range mounts {
		if err := checkDest(m.Dest, taken, dests); err != nil {
			return err
		}
		if m.Claim != "" {
			return errClaimMount
		}
		if !path.IsAbs(m.Source) {
			return fmt.Errorf("mount source %q is not an absolute host path", m.Source)
		}
		dests = append(dests, m.Dest)
	}
	for _, m := range mounts {
		if err := mkMountpoint(rootfs, m.Dest); err != nil {
			return err
		}
		opts := []string{"rbind", "nosuid", "nodev", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro", "rro")
		}
		oci.Mounts = append(oci.Mounts, specs.Mount{Destination: m.Dest, Type: "bind", Source: m.Source, Options: opts})
	}
	return nil
}

// errClaimMount refuses a PersistentVolumeClaim: only a Pod mounts one.
var errClaimMount = sandbox.Errorf(sandbox.ErrUnsupported, "claim_mount_unsupported", "a volume claim mounts only in a Pod (the kubernetes runtime)")

func invalidDest(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount_path", format, args...)
}

// checkDest refuses a destination that is not absolute and clean, is the
// root, or overlaps (equals, contains or lies inside) a reserved path or
// another mount of the same sandbox.
func checkDest(dest string, reserved, others []string) error {
	switch {
	case !path.IsAbs(dest) || path.Clean(dest) != dest || strings.ContainsRune(dest, 0):
		return invalidDest("mount path %q must be absolute and clean", dest)
	case dest == "/":
		return invalidDest("mount path must not be /")
	}
	for _, r := range reserved {
		if overlaps(dest, r) {
			return invalidDest("mount path %s meets %s, which paddock mounts itself", dest, r)
		}
	}
	for _, o := range others {
		if overlaps(dest, o) {
			return invalidDest("mount paths %s and %s overlap", dest, o)
		}
	}
	return nil
}

// overlaps reports whether a and b are equal or one lies below the other.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/") || strings.HasPrefix(b, strings.TrimSuffix(a, "/")+"/")
}

// mkMountpoint makes dest (absolute and clean) as a directory below rootfs
// through openat2 with no symlink and no mount crossing allowed. A missing
// directory is made 0755 and owned by its parent's owner, so a mount below
// the user's home leaves the directories on the way writable by the user.
func mkMountpoint(rootfs, dest string) error {
	fd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	defer func() { unix.Close(fd) }()
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for _, comp := range strings.Split(strings.TrimPrefix(dest, "/"), "/") {
		next, err := unix.Openat2(fd, comp, &how)
		if errors.Is(err, unix.ENOENT) {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return fmt.Errorf("mountpoint %s: %w", dest, err)
			}
			if err := unix.Mkdirat(fd, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("mountpoint %s: %w", dest, err)
			}
			if err := unix.Fchownat(fd, comp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("mountpoint %s: %w", dest, err)
			}
			next, err = unix.Openat2(fd, comp, &how)
		}
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EXDEV) {
				return invalidDest("mount path %s: %s is a symlink or not a directory in the sandbox's filesystem", dest, comp)
			}
			return fmt.Errorf("mountpoint %s: %w", dest, err)
		}
		unix.Close(fd)
		fd = next
	}
	return nil
}
