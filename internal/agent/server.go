package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"
)

// ServerConfig configures the in-sandbox agent server.
type ServerConfig struct {
	// StateDir holds the command logs; created 0700. Default StateDir.
	StateDir string
	// Root is where request paths resolve for files and mkdir. Default "/";
	// tests point it at a temp dir.
	Root string
	// CgroupRoot is the sandbox's cgroup fs, read for the OOM kill count.
	// Default /sys/fs/cgroup.
	CgroupRoot string
	// ProcNet is where listening sockets are read (the sandbox's own
	// network namespace); default /proc/net.
	ProcNet string
	// UserHome is the default user's home and default cwd. Default UserHome.
	UserHome string
	// ImageUser is the image config's User, resolved at start against
	// Root's etc/passwd and etc/group (see ResolveUser); "" is the
	// default user.
	ImageUser string
	// MaxWriteBytes caps the (decompressed) tar stream of one file write.
	// Default 2 GiB.
	MaxWriteBytes int64
	// ReapAll makes the reaper collect every child (wait4(-1)), as PID 1
	// must. Off, it waits only for the commands' pids, so a test process
	// can host the server without stealing its other children.
	ReapAll bool
	// Version and Seccomp are reported by ping.
	Version string
	Seccomp bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

const defaultMaxWriteBytes = 2 << 30

// Validate checks the config and fills in defaults.
func (c *ServerConfig) Validate() error {
	if c.StateDir == "" {
		c.StateDir = StateDir
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if c.ProcNet == "" {
		c.ProcNet = "/proc/net"
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.UserHome == "" {
		c.UserHome = UserHome
	}
	if c.MaxWriteBytes == 0 {
		c.MaxWriteBytes = defaultMaxWriteBytes
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for name, p := range map[string]string{"state dir": c.StateDir, "root": c.Root, "user home": c.UserHome} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("agent config: %s %q is not absolute", name, p)
		}
	}
	if c.MaxWriteBytes < 0 {
		return fmt.Errorf("agent config: negative MaxWriteBytes")
	}
	return nil
}
