// Package agent is the protocol between paddock and paddock-agent, the
// process that runs as PID 1 in every sandbox: the server half (run inside
// the sandbox by cmd/paddock-agent) and the host-side Client. The protocol is
// HTTP/1.1 over a unix socket whose listening fd the driver hands to the
// agent, so no path inside the sandbox leads to it; or, in a Pod, over TCP
// at the Pod IP, where every request carries the sandbox's credential
// (ServerConfig.Token, TCPClient).
package agent

import (
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Paths inside every sandbox that the driver and the agent agree on.
const (
	// BinaryPath is where the driver bind-mounts the agent binary read-only.
	BinaryPath = "/.paddock/agent"
	// StateDir holds the agent's private state (command logs); mode 0700,
	// root. The runc driver mounts a size-capped tmpfs there.
	StateDir = "/run/paddock"
	// ListenFD is the file descriptor of the listening unix socket the driver passes in.
	ListenFD = 3
	// WarmArg, as the agent binary's first argument, makes it exit at once:
	// the program a warm-up (POST /v1/warm) runs.
	WarmArg = "warm-up"
)

// The default unprivileged user that commands run as unless they ask for
// sudo or the image names another (see ResolveUser).
const (
	UserName = "user"
	UserUID  = sandbox.DefaultUID
	UserGID  = sandbox.DefaultGID
	UserHome = sandbox.DefaultHome
)

// CommandRequest starts a command.
type CommandRequest struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Cwd  string            `json:"cwd,omitempty"` // default: the user's home (/root with sudo)
	Env  map[string]string `json:"env,omitempty"` // merged over the default environment
	Sudo bool              `json:"sudo,omitempty"`
	// TimeoutMs kills the command's process group after this long; 0 = none.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	// Stdin keeps a pipe to the command's stdin open until the client closes
	// it; without it stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// PTY starts the command on a new pseudo-terminal of this size, its
	// controlling terminal and its stdin, stdout and stderr: the output
	// comes as FrameStdout, input goes through the stdin route, and the
	// size changes through the resize route. An empty Cmd runs the user's
	// login shell. TERM defaults to xterm-256color.
	PTY *PTYSize `json:"pty,omitempty"`
	// Tag is the caller's name for the command (at most MaxTagBytes),
	// shown in Command, so a client that lost the id finds it again.
	Tag string `json:"tag,omitempty"`
}

// PTYSize is a terminal's size in character cells.
type PTYSize = sandbox.PTYSize

// Bounds of a terminal's size and a command's tag.
const (
	MaxPTYCells = sandbox.MaxPTYCells
	MaxTagBytes = sandbox.MaxTagBytes
)

// Command status values.
const (
	StatusRunning  = "running"
	StatusExited   = "exited"   // exited on its own; ExitCode set
	StatusKilled   = "killed"   // ended by a signal; Signal set, ExitCode = 128+signal
	StatusTimedOut = "timedout" // killed by its TimeoutMs
	StatusFailed   = "failed"   // could not start (ENOENT, bad cwd...): Error set, ExitCode 127/126
)

// Command describes a command known to the agent.
type Command struct {
	ID   string   `json:"id"`
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
	Cwd  string   `json:"cwd"`
	Sudo bool     `json:"sudo,omitempty"`
	Tag  string   `json:"tag,omitempty"`
	// PTY is the terminal's current size for a command started on one.
	PTY        *PTYSize  `json:"pty,omitempty"`
	PID        int       `json:"pid,omitempty"`
	Status     string    `json:"status"`
	ExitCode   *int      `json:"exitCode,omitempty"`
	Signal     string    `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Done reports whether the command has finished.
func (c Command) Done() bool { return c.Status != StatusRunning }

// Output frame kinds. The output of a command is a sequence of frames: a
// 1-byte kind, a 4-byte big-endian payload length, the payload. The last
// frame of a finished command is FrameExit with the final Command as JSON.
//
// The agent keeps a capped log of each command (see ServerConfig): output
// it dropped, the oldest first, is never sent; in its place a reader gets
// one FrameGap whose 8-byte big-endian payload is the offset where the
// stream resumes. A gap frame takes no room in the log: offsets count only
// the log's own frames, so they stay the same whatever was dropped.
const (
	FrameStdout byte = 1
	FrameStderr byte = 2
	FrameExit   byte = 3
	FrameGap    byte = 4
)

// Frame is one decoded output frame. Offset is the byte offset just past the
// frame in the command's log, which a client passes back to resume; for a
// FrameGap, the offset the stream resumes at, Dropped the bytes of log
// (output and its framing) skipped to get there.
type Frame struct {
	Kind    byte
	Data    []byte
	Offset  int64
	Dropped int64
}

// OffsetEnd, as the output route's offset, starts a reader at the end of
// the output written so far: it gets only what comes next, then the exit
// frame (at once for a finished command). The answer's HeaderOutputOffset
// says which offset that was.
const OffsetEnd = "end"

// HeaderOutputOffset carries the offset an output stream starts at.
const HeaderOutputOffset = "X-Paddock-Output-Offset"

// MkdirRequest creates a directory and its parents, like mkdir -p.
// Without Sudo it is done as the sandbox's user, who owns what it makes.
type MkdirRequest struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode,omitempty"` // default 0755
	Sudo bool   `json:"sudo,omitempty"` // as root, who owns what it makes
	// ForUser, with Sudo, has root make the missing directories and give
	// them to the user: for paths the user needs but may not create (a
	// project's persistent /data). No symlink on the path is followed, so
	// nothing the user made can lead root elsewhere.
	ForUser bool `json:"forUser,omitempty"`
}

// WriteResult reports what a tar write did.
type WriteResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Entry types: what Entry.Type says a directory entry is.
const (
	EntryFile    = "file"
	EntryDir     = "dir"
	EntrySymlink = "symlink"
	EntryOther   = "other" // a fifo, socket or device node
)

// Entry describes one file, directory or symlink in the sandbox, as stat
// (GET /v1/stat) and a directory listing (GET /v1/list) report it. A
// symlink is described itself, never its target.
type Entry struct {
	Name string `json:"name"`
	// Path is the entry's absolute path in the sandbox, as asked for (a
	// listing's entries are below the path asked for).
	Path string `json:"path"`
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is the permission bits plus setuid, setgid and sticky, and
	// Permissions the whole mode as Go's fs.FileMode prints it
	// ("-rw-r--r--", "drwxr-xr-x", "Lrwxrwxrwx").
	Mode        uint32 `json:"mode"`
	Permissions string `json:"permissions"`
	// Owner and Group are names from the sandbox's etc/passwd and
	// etc/group, or the numeric id when it names none.
	Owner   string    `json:"owner"`
	Group   string    `json:"group"`
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	ModTime time.Time `json:"modTime"`
	// SymlinkTarget is a symlink's target made absolute against the
	// link's directory (lexically: links on the way are not resolved).
	SymlinkTarget string `json:"symlinkTarget,omitempty"`
}

// MaxListEntries bounds one directory listing (GET /v1/list): a larger one
// is refused (too_many_entries), asking for a smaller depth.
const MaxListEntries = 50000

// MaxListDepth bounds how deep a listing descends.
const MaxListDepth = 256

// MoveRequest renames Source to Destination (rename(2): an existing file
// at Destination is replaced, a symlink is moved itself), creating
// Destination's missing parents.
type MoveRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Sudo        bool   `json:"sudo,omitempty"`
}

// RemoveRequest removes a file, a symlink (not its target) or a directory
// with everything below it.
type RemoveRequest struct {
	Path string `json:"path"`
	Sudo bool   `json:"sudo,omitempty"`
}

// FileInfo describes a file read through the agent (sent in headers).
type FileInfo struct {
	Size int64
	Mode uint32 // permission bits plus setuid/setgid/sticky
}

// Watch event types. A watch (GET /v1/watch) streams one WatchEvent per
// line. Create also stands for an entry moved in, and rename for one moved
// away (named by its old name), as inotify reports them; overflow says
// events were lost (the queue was full or a directory could not be
// watched) and the client should look again.
const (
	WatchCreate   = "create"
	WatchWrite    = "write"
	WatchRemove   = "remove"
	WatchRename   = "rename"
	WatchChmod    = "chmod"
	WatchOverflow = "overflow"
)

// WatchEvent is one change below a watched directory.
type WatchEvent struct {
	Type string `json:"type"`
	// Name is the entry's path relative to the watched directory; "" is
	// the directory itself.
	Name string `json:"name,omitempty"`
	Dir  bool   `json:"dir,omitempty"`
}

// ListeningPort is a TCP socket listening inside the sandbox.
type ListeningPort struct {
	Port    int    `json:"port"`
	Address string `json:"address"` // "0.0.0.0", "::", "127.0.0.1"...
}

// CgroupStats are the sandbox's own cgroup figures as the agent reads them
// (GET /v1/stats), and its network namespace's byte counts, for a driver
// that cannot read them itself (its sandboxes run on another machine). A
// figure the cgroup does not have is zero.
type CgroupStats struct {
	CPUUsageNs  uint64 `json:"cpuUsageNs"`
	MemoryBytes uint64 `json:"memoryBytes"`
	MemoryPeak  uint64 `json:"memoryPeakBytes"`
	PIDs        uint64 `json:"pids"`
	OOMKills    uint64 `json:"oomKills"`
	// NetworkRxBytes and NetworkTxBytes are what the sandbox's network
	// namespace received and sent on every interface but loopback, as
	// the kernel counts them (from the sandbox's side: tx is its egress),
	// less the payload of the agent's own TCP connections; zero from an
	// agent older than these fields.
	NetworkRxBytes uint64 `json:"networkRxBytes"`
	NetworkTxBytes uint64 `json:"networkTxBytes"`
}

// Info is the agent's answer to a ping.
type Info struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	Seccomp bool   `json:"seccomp"`
	// User is who commands run as without sudo, resolved by the agent at
	// start; nil from an agent older than user resolution (the default
	// user) or when UserError is set.
	User *User `json:"user,omitempty"`
	// UserError says why the image's User could not be resolved. Such an
	// agent refuses every command and write: the sandbox is unusable.
	UserError *UserError `json:"userError,omitempty"`
	// OOMKills counts the processes the agent's own memory limit killed
	// (ServerConfig.MemoryLimit); 0 without one.
	OOMKills int64 `json:"oomKills,omitempty"`
}

// UserError is a failed resolution of the image's User.
type UserError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// UserErr returns the resolution failure as an ErrInvalid *sandbox.Error
// (the image names a user it lacks: the create request's fault), or nil.
func (i Info) UserErr() error {
	if i.UserError == nil {
		return nil
	}
	code := i.UserError.Code
	if code == "" {
		code = CodeUserInvalid
	}
	return sandbox.Errorf(sandbox.ErrInvalid, code, "%s", i.UserError.Message)
}

// RunAs is who commands run as without sudo: Info.User, or the default
// user for an agent that does not report one.
func (i Info) RunAs() User {
	if i.User != nil {
		return *i.User
	}
	return DefaultUser(UserHome)
}

// ErrorBody is the agent's error shape, the same as the public API's.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// The changes stream (GET /v1/changes, Client.Changes) is a PAX tar of
// what the sandbox changed in its root filesystem since the agent started:
// every entry whose ctime is at or after the agent's start mark (files
// with their contents, directories, symlinks, fifos, hard links to a file
// sent before), each preceded by its unchanged ancestor directories so
// that every entry's parent comes first. Names are relative to the root,
// directories end in "/". For each directory whose own ctime moved (an
// entry of it was created, removed or renamed), an entry of type
// TypeDirNames follows its children: named like the directory without
// its "/" ("." for the root), its data the names the directory holds now,
// each ended by a NUL byte; what a lower layer has there and the list
// lacks was deleted. Entries on other mounts (/proc, /sys, /dev, /tmp,
// the agent's own dirs, volumes) are left out, their names listed.
const (
	// TypeDirNames is the tar type flag of a directory's name list: a
	// vendor extension type ('A'-'Z' are reserved for those).
	TypeDirNames byte = 'P'
	// TypeBaseNames is the tar type flag of the names a changed directory
	// has in the sandbox's image, from an agent that has the image's
	// pristine tree (ServerConfig.BaseRoot): sent right before the
	// directory's TypeDirNames entry, named and laid out as it is. What it
	// has and the TypeDirNames list lacks was deleted. A driver without
	// the image's layers on its own host (the host image on Kubernetes)
	// tells deletions by it.
	TypeBaseNames byte = 'Q'
	// ChangesMark is the file in the state dir whose ctime is the start
	// mark: created when the agent first starts, kept across restarts of
	// the agent in the same sandbox.
	ChangesMark = ".changes-mark"
)
