package netns

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ForUserNS readies a network namespace made outside a container's user
// namespace (the node made it, or a Pod's runtime in a namespace of its
// own) for a container whose user namespace has no power over it: it
// mounts, at sysfs (made here; it must not exist), a read-only sysfs of
// the namespace (sysfs shows the network devices of the namespace it is
// mounted from, and only the namespace's owner may mount it), for the
// container to bind, and writes the network sysctls (dotted names,
// ValidSysctl) the container would otherwise fail to write from inside.
func ForUserNS(nsPath, sysfs string, sysctls map[string]string) error {
	for k := range sysctls {
		if !ValidSysctl(k) {
			return fmt.Errorf("sysctl %q: not a network sysctl", k)
		}
	}
	ns, err := os.OpenFile(nsPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := os.Mkdir(sysfs, 0o755); err != nil {
		return err
	}
	return inNS(int(ns.Fd()), func() error {
		if err := unix.Mount("sysfs", sysfs, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount sysfs: %w", err)
		}
		for k, v := range sysctls {
			// /proc/sys/net is the opener's network namespace: this thread's.
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil {
				_, err = f.WriteString(v)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return fmt.Errorf("sysctl %s: %w", k, err)
			}
		}
		return nil
	})
}
