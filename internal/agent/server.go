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
	// MemoryLimit, when positive, is a memory limit in bytes the agent
	// enforces itself (see memGuard): for a kernel whose cgroup does not
	// (gVisor's sentry). It needs CgroupRoot's memory.current.
	MemoryLimit int64
	// ProcNet is where listening sockets are read (the sandbox's own
	// network namespace); default /proc/net.
	ProcNet string
	// UserHome is the default user's home and default cwd. Default UserHome.
	UserHome string
	// BaseRoot, when set, is the sandbox's image as it was, mounted
	// read-only (a Pod's image volume of its own image): the changes
	// stream then says what each changed directory held there
	// (TypeBaseNames). Opened component by component, never following a
	// symlink: the image is as hostile as the sandbox.
	BaseRoot string
	// ImageUser is the image config's User, resolved at start against
	// Root's etc/passwd and etc/group (see ResolveUser); "" is the
	// default user.
	ImageUser string
	// OwnIfEmpty are directories (volume claims a Pod mounts) that the
	// resolved user is given at start while they hold nothing (a new
	// filesystem's lost+found aside): a new volume belongs to whoever
	// first uses it, as on the host (internal/volume's SetUser), and only
	// the agent, root inside the Pod, can give it.
	OwnIfEmpty []string
	// MaxLogBytes caps what is kept of one command's output log; past it
	// the oldest output is dropped. Default DefaultMaxLogBytes.
	MaxLogBytes int64
	// MaxLogTotalBytes caps the logs of all commands together, counted in
	// pages as tmpfs counts them; past it the oldest output of the oldest
	// commands is dropped. The driver passes the size of the tmpfs it
	// mounts on StateDir. Default DefaultMaxLogTotalBytes.
	MaxLogTotalBytes int64
	// MaxLogFiles caps the log files (at least one per command with
	// output). Default DefaultMaxLogFiles.
	MaxLogFiles int
	// MaxWatches caps the watches open at once (DefaultMaxWatches), and
	// MaxWatchDirs the directories they watch together
	// (DefaultMaxWatchDirs); MaxWatchQueue is the events one watch holds
	// for a slow reader before it drops them for an overflow event
	// (DefaultMaxWatchQueue).
	MaxWatches    int
	MaxWatchDirs  int
	MaxWatchQueue int
	// MaxWriteBytes caps the (decompressed) tar stream of one file write.
	// Default 2 GiB.
	MaxWriteBytes int64
	// ReapAll makes the reaper collect every child (wait4(-1)), as PID 1
	// must. Off, it waits only for the commands' pids, so a test process
	// can host the server without stealing its other children.
	ReapAll bool
	// Token, when set, is the credential every request must carry as a
	// bearer token; the agent answers 401 to any other. An agent reached
	// over TCP (a Pod) has one, since anything on the network, the
	// sandbox's own commands included, can connect to it. At least 32
	// characters.
	Token string
	// OwnPort is the TCP port the agent itself listens on, left out of
	// the sandbox's listening ports; 0 for a unix socket.
	OwnPort int
	// WarmArgs is the program and arguments a warm-up (POST /v1/warm)
	// runs. Default: BinaryPath WarmArg, the agent itself, which exits at
	// once; tests point it at a host program.
	WarmArgs []string
	// Version and Seccomp are reported by ping.
	Version string
	Seccomp bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

const defaultMaxWriteBytes = 2 << 30

// Default log caps. 32 MiB per command keeps the whole output of most
// builds and test runs for replay; the sandbox-wide cap (normally set by
// the driver from the sandbox's memory, which the logs are charged to)
// then decides how many such logs stay.
const (
	DefaultMaxLogBytes      = 32 << 20
	DefaultMaxLogTotalBytes = 128 << 20
	DefaultMaxLogFiles      = 4096
	DefaultMaxWatches       = 16
	DefaultMaxWatchDirs     = 8192
	DefaultMaxWatchQueue    = 1024
	// minLogBytes keeps a command's log at least eight 32 KiB segments.
	minLogBytes = 256 << 10
)

// Validate checks the config and fills in defaults.
func (c *ServerConfig) Validate() error {
	if c.StateDir == "" {
		c.StateDir = StateDir
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if len(c.WarmArgs) == 0 {
		c.WarmArgs = []string{BinaryPath, WarmArg}
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
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.MaxLogTotalBytes == 0 {
		c.MaxLogTotalBytes = DefaultMaxLogTotalBytes
	}
	if c.MaxLogFiles == 0 {
		c.MaxLogFiles = DefaultMaxLogFiles
	}
	if c.MaxWatches == 0 {
		c.MaxWatches = DefaultMaxWatches
	}
	if c.MaxWatchDirs == 0 {
		c.MaxWatchDirs = DefaultMaxWatchDirs
	}
	if c.MaxWatchQueue == 0 {
		c.MaxWatchQueue = DefaultMaxWatchQueue
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
	if c.MaxWatches < 0 || c.MaxWatchDirs < 0 || c.MaxWatchQueue < 0 {
		return fmt.Errorf("agent config: negative watch limits")
	}
	if c.Token != "" && len(c.Token) < minTokenLen {
		return fmt.Errorf("agent config: token shorter than %d characters", minTokenLen)
	}
	if c.MaxWriteBytes < 0 {
		return fmt.Errorf("agent config: negative MaxWriteBytes")
	}
	if c.MaxLogBytes < minLogBytes || c.MaxLogTotalBytes < minLogBytes || c.MaxLogFiles < 1 {
		return fmt.Errorf("agent config: log caps must be at least %d bytes and one file", minLogBytes)
	}
	return nil
}
