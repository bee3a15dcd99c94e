package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/userns"
)

// Set at build time with -ldflags -X (see the package comment).
var (
	runcPath = ""
	stateDir = "/run/paddock-runc"
	// The node guard's exceptions (nodeGuard's lists): none by default.
	guardAllow   = ""
	guardNotNode = ""
)

// Names in a container's dir under stateDir.
const (
	userPin  = "user" // the pinned user namespace
	sysfsDir = "sys"  // sysfs of the container's network namespace
)

// run prepares what the command line needs and becomes runc; it returns
// only on failure.
func run(argv []string) error {
	runc, err := realRunc()
	if err != nil {
		return err
	}
	if c, ok := parseArgs(argv[1:]); ok {
		dir := filepath.Join(stateDir, c.id)
		switch c.command {
		case "create", "run":
			if err := prepare(c, dir); err != nil {
				return fmt.Errorf("%s %s: %w", c.command, c.id, err)
			}
		case "delete":
			// runc delete still runs: what is left here is reported, and
			// removed by the next delete or create of the id.
			if err := cleanup(dir); err != nil {
				slog.Warn("paddock-runc: delete: not all removed", "container", c.id, "err", err)
			}
		}
	}
	return syscall.Exec(runc, append([]string{runc}, argv[1:]...), os.Environ())
}

// realRunc is runcPath, else runc beside this binary, never this binary.
func realRunc() (string, error) {
	if runcPath != "" {
		return runcPath, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(self), "runc")
	si, err := os.Stat(self)
	if err != nil {
		return "", err
	}
	ri, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("runc beside the wrapper: %w", err)
	}
	if os.SameFile(si, ri) {
		return "", fmt.Errorf("%s is this wrapper, not runc", p)
	}
	return p, nil
}

// prepare reads the bundle's config.json and, if the container needs it
// (see the package comment), makes and pins its user namespace, readies
// its network namespace and rewrites config.json. On failure it leaves
// nothing.
func prepare(c call, dir string) (err error) {
	path := filepath.Join(c.bundle, "config.json")
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	cfg, err := parseConfig(f)
	if err != nil {
		return err
	}
	if err := guardNode(cfg); err != nil {
		return fmt.Errorf("node guard: %w", err)
	}
	user, ok := cfg.namespace(specs.UserNamespace)
	if !ok {
		return nil
	}
	// A dir left by a crash between this and runc's delete.
	if err := cleanup(dir); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, cleanup(dir))
		}
	}()
	made := false
	mkdir := func() error {
		if made {
			return nil
		}
		// Traversable (not listable) by every uid: runc reaches what is
		// here by path, partly from inside the user namespace.
		if err := os.MkdirAll(stateDir, 0o711); err != nil {
			return err
		}
		made = true
		return os.Mkdir(dir, 0o711)
	}

	changed := false
	if base, ok := cfg.rangeBase(); ok && (user.Path == "" || cfg.isSandbox() && ownedByRoot(user.Path)) {
		if err := mkdir(); err != nil {
			return err
		}
		pin := filepath.Join(dir, userPin)
		if err := pinUserNS(base, pin); err != nil {
			return err
		}
		cfg.setUserNS(pin)
		user.Path = pin
		changed = true
	}
	if net, ok := cfg.namespace(specs.NetworkNamespace); ok && net.Path != "" && user.Path != "" {
		foreign, err := ownerDiffers(net.Path, user.Path)
		if err != nil {
			return err
		}
		if foreign {
			if err := mkdir(); err != nil {
				return err
			}
			sysfs := filepath.Join(dir, sysfsDir)
			if err := netns.ForUserNS(net.Path, sysfs, cfg.moveNetSysctls()); err != nil {
				return err
			}
			if _, err := cfg.bindSysfs(sysfs); err != nil {
				return err
			}
			changed = true
		}
	}
	if !changed {
		return nil
	}
	data, err := cfg.marshal()
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, fi.Mode().Perm())
}

// guardNode installs the node guard (netns.GuardNode) in the container's
// network namespace when it joins one by path (a Pod's: every container of
// a Pod, each time, so the last one created sees the node's addresses of
// that moment; the table is replaced whole). Without a path the container
// has a new namespace with lo alone, or none of its own (the node's: a
// Pod on the host network has no network namespace in config.json), and
// there is nothing to guard. A path that is the node's own namespace is an
// error: such a container is refused rather than run unguarded.
//
// The guard holds because nothing in the Pod may change the namespace's
// rules: that needs CAP_NET_ADMIN in the user namespace that owns the
// network namespace. In a Pod the wrapper gives a user namespace (below),
// the containers run in that one, and the network namespace belongs to
// another (the runtime's, or the node's), so whatever capabilities they
// hold in theirs do not reach it: even their root's `nft flush ruleset`
// fails. Otherwise (hostUsers: true, a mapping the wrapper leaves alone)
// only the Pod's capabilities guard it: a container granted CAP_NET_ADMIN
// could remove the table; paddock's Pods are granted none.
func guardNode(cfg *config) error {
	net, ok := cfg.namespace(specs.NetworkNamespace)
	if !ok || net.Path == "" {
		return nil
	}
	g, err := nodeGuard(guardAllow, guardNotNode)
	if err != nil {
		return err
	}
	return netns.GuardNode(net.Path, g)
}

// pinUserNS makes a user namespace for the range from base, owned by
// base, and pins it with a bind mount at pin (made here).
func pinUserNS(base uint32, pin string) error {
	ns, err := userns.New(base)
	if err != nil {
		return err
	}
	defer ns.Close()
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_EXCL|os.O_RDONLY|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(ns.Path(), pin, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pin user namespace: %w", err)
	}
	return nil
}

// ownedByRoot reports whether path is a user namespace whose owner is
// host root; false on any error, so that the config is left as it came.
func ownedByRoot(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || t != unix.CLONE_NEWUSER {
		return false
	}
	var uid uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.NS_GET_OWNER_UID, uintptr(unsafe.Pointer(&uid))); e != 0 {
		return false
	}
	return uid == 0
}

// ownerDiffers reports whether the network namespace at netPath belongs
// to a user namespace other than the one at userPath.
func ownerDiffers(netPath, userPath string) (bool, error) {
	f, err := os.OpenFile(netPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return false, fmt.Errorf("owner of %s: %w", netPath, err)
	}
	defer unix.Close(fd)
	var owner, user unix.Stat_t
	if err := unix.Fstat(fd, &owner); err != nil {
		return false, err
	}
	if err := unix.Stat(userPath, &user); err != nil {
		return false, err
	}
	return owner.Dev != user.Dev || owner.Ino != user.Ino, nil
}

// cleanup removes a container's dir under stateDir: unmounts its pin and
// sysfs, then removes them. Missing parts are fine; nothing is removed
// while still mounted.
func cleanup(dir string) error {
	var errs []error
	for _, name := range []string{userPin, sysfsDir} {
		p := filepath.Join(dir, name)
		err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
