package gvisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/hostimage"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/userns"
)

// Config configures the driver.
type Config struct {
	// DataDir holds the host image, per-sandbox dirs (DataDir/gvisor/<id>)
	// and runsc's state (DataDir/gvisor/.state).
	DataDir string
	// AgentPath is the static paddock-agent binary (see agentbin.Path).
	AgentPath string
	// Runsc is the runsc binary; empty: Find.
	Runsc string
	// Platform is runsc's platform: "systrap" (default) or "ptrace".
	Platform string
	// DiskReserve is the free space, in bytes, the data dir's filesystem
	// keeps beyond a new sandbox's disk cap (see layer.DisksConfig): 0,
	// the larger of 1 GiB and 5% of it; negative, none.
	DiskReserve int64
	Logger      *slog.Logger
}

// Names inside a sandbox's host dir and inside the sandbox.
const (
	rootfsName = "rootfs"
	sockDir    = "sock" // bound at sockDest; the agent creates its socket in it
	sockName   = "a.sock"
	outName    = "agent.log" // the agent's (and runsc's) stdout and stderr
	stateName  = ".state"    // runsc --root, under DataDir/gvisor
	sockDest   = "/.paddock/sock"
	// hostPIDsExtra is added to the sandbox's pids limit on its host
	// cgroup: the sentry, the gofer and systrap's stub processes count
	// there too, and a sentry that meets the host limit panics.
	hostPIDsExtra = 1024
	// hostMemoryExtra is added to the sandbox's memory limit on its host
	// cgroup, which also holds the sentry's and the gofer's own memory: the
	// sandbox's processes meet the agent's limit (--memory-limit) first,
	// with room for the guard's polling interval, and the host limit stays
	// the outer bound.
	hostMemoryExtra = 128 << 20
	// memoryLimitAnnotation keeps the sandbox's own memory limit in its
	// bundle, for Stats.
	memoryLimitAnnotation = "dev.paddock.memory-limit"
	// agentSpareThreads are OS threads the agent holds idle from its start
	// (agent.SpareThreads): the sentry charges the agent's threads to the
	// sandbox's pids limit, and under a fork bomb that fills it, the
	// agent's Go runtime died about one run in fifteen for want of a new
	// thread (it had 9). Sentry tasks, not host threads: cheap here.
	agentSpareThreads = 8
)

// createTimeout bounds Create when ctx has no earlier deadline.
const createTimeout = 60 * time.Second

// Driver runs sandboxes with runsc. See the package doc.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	runDir   string
	stateDir string
	img      *runtime.Rootfs
	disks    *layer.Disks // writable layers, capped or not (layer_linux.go)

	mu    sync.Mutex
	locks map[string]*sync.Mutex // guarded by mu; per id: Create, Stop and Destroy
	socks map[string]*os.File    // guarded by mu; per id: the agent's socket, pinned (see pinSocket)
}

var _ runtime.Driver = (*Driver)(nil)

// New checks runsc and prepares the data dir and the host image.
func New(cfg Config) (*Driver, error) {
	if cfg.DataDir == "" || cfg.AgentPath == "" {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "gvisor driver: DataDir and AgentPath are required")
	}
	switch cfg.Platform {
	case "":
		cfg.Platform = "systrap"
	case "systrap", "ptrace":
	default:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "gvisor driver: platform %q is neither systrap nor ptrace", cfg.Platform)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if os.Geteuid() != 0 {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "needs_root", "gvisor driver: needs root (euid %d)", os.Geteuid())
	}
	if cfg.Runsc == "" {
		p, err := Find()
		if err != nil {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_runsc", "gvisor driver: %v", err)
		}
		cfg.Runsc = p
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("gvisor driver: data dir: %w", err)
	}
	cfg.DataDir = dataDir
	d := &Driver{cfg: cfg, log: cfg.Logger.With("driver", "gvisor"), runDir: filepath.Join(dataDir, "gvisor"), locks: map[string]*sync.Mutex{}, socks: map[string]*os.File{}}
	d.stateDir = filepath.Join(d.runDir, stateName)
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("gvisor driver: %w", err)
	}
	if d.img, err = hostimage.Build(dataDir); err != nil {
		return nil, fmt.Errorf("gvisor driver: %w", err)
	}
	if d.disks, err = layer.OpenDisks(layer.DisksConfig{RunDir: d.runDir, Reserve: cfg.DiskReserve, Logger: d.log}); err != nil {
		return nil, fmt.Errorf("gvisor driver: %w", err)
	}
	return d, nil
}

// Capabilities implements runtime.Driver.
func (d *Driver) Capabilities() runtime.Capabilities {
	v := 1
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		v = 2
	}
	return runtime.Capabilities{Name: "gvisor", CgroupVersion: v, Seccomp: true, Snapshot: true, DiskCap: d.disks.Available()}
}

func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l, ok := d.locks[id]
	if !ok {
		l = &sync.Mutex{}
		d.locks[id] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (d *Driver) hostDir(id string) string { return filepath.Join(d.runDir, id) }

var checkID = ocispec.CheckID

// runsc runs one runsc command with the driver's global flags and returns
// its stdout; its stderr is in the error.
func (d *Driver) runsc(ctx context.Context, extra []string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := d.command(ctx, extra, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("runsc %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (d *Driver) command(ctx context.Context, extra []string, args ...string) *exec.Cmd {
	global := []string{"--root=" + d.stateDir}
	cmd := exec.CommandContext(ctx, d.cfg.Runsc, append(append(global, extra...), args...)...)
	// A new session: nothing of the sandbox shares paddock's process group
	// (a kill(0) inside must never reach the host's processes).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// runFlags are runsc's flags for running (or restoring) a sandbox with
// the given --network: see the package doc. The sentry's own cgroup tree
// is v2 (--in-sandbox-cgroup=v2): one cgroup2 mount, which the sentry
// mounts read-only as the spec asks (its v1 tree binds each controller in
// writable, whatever the spec says), holding the container's cgroup, whose
// pids.max the sentry enforces (limitPIDs).
func (d *Driver) runFlags(network string) []string {
	return []string{"--platform=" + d.cfg.Platform, "--network=" + network, "--oci-seccomp", "--host-uds=create", "--overlay2=none",
		"--in-sandbox-cgroup=v2"}
}

// Create implements runtime.Driver.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (_ *agent.Client, retErr error) {
	if err := checkID(spec.ID); err != nil {
		return nil, err
	}
	img, err := ocispec.Rootfs(spec, d.img)
	if err != nil {
		return nil, err
	}
	for _, m := range spec.Mounts {
		if m.Claim != "" {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "claim_mount_unsupported", "a volume claim mounts only in a Pod (the kubernetes runtime)")
		}
		if err := checkDest(m.Dest); err != nil {
			return nil, err
		}
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.ID
	}
	args := []string{agent.BinaryPath, "--listen=" + sockDest + "/" + sockName}
	if spec.User != "" {
		if strings.ContainsRune(spec.User, 0) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, agent.CodeUserInvalid, "image user %q is not a valid user", spec.User)
		}
		args = append(args, "--user="+spec.User)
	}
	id := spec.ID
	defer d.lock(id)()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, createTimeout)
		defer cancel()
	}
	if err := d.disks.CheckHostSpace(spec.Resources.DiskMB << 20); err != nil {
		return nil, err
	}
	dir := d.hostDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, sandbox.Errorf(sandbox.ErrConflict, "exists", "sandbox %s already exists", id)
		}
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer func() {
		if retErr != nil {
			// Nothing of a failed sandbox may stay behind.
			if err := d.teardown(context.WithoutCancel(ctx), id); err != nil {
				d.log.Error("cleanup after failed create", "sandbox", id, "err", err)
			} else if err := fstree.Remove(dir); err != nil {
				d.log.Error("cleanup after failed create", "sandbox", id, "err", err)
			}
		}
	}()
	// First, while dir is empty: a disk made ahead of time replaces it.
	upper, work, err := d.disks.Prepare(ctx, dir, spec.Resources.DiskMB)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	for _, name := range []string{rootfsName, sockDir} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			return nil, fmt.Errorf("create sandbox %s: %w", id, err)
		}
	}
	rootfs := filepath.Join(dir, rootfsName)
	lowers := img.Lowers
	if len(lowers) == 0 {
		lowers = []string{img.Lower}
	}
	opts, err := userns.OverlayOptions(lowers, upper, work)
	if err != nil {
		return nil, err
	}
	if err := unix.Mount("overlay", rootfs, "overlay", unix.MS_NODEV, opts); err != nil {
		return nil, fmt.Errorf("create sandbox %s: image %q: mount overlay: %w", id, spec.Image, err)
	}

	network := "none"
	var nsPath string
	if nw := spec.Network; nw != nil {
		if nw.NSPath == "" || !nw.DNS.IsValid() {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network", "create sandbox %s: network needs a namespace path and a DNS address", id)
		}
		network, nsPath = "sandbox", nw.NSPath
		files := map[string]string{
			ocispec.ResolvConfName: "nameserver " + nw.DNS.String() + "\n",
			ocispec.HostsName:      "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname + "\n",
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return nil, fmt.Errorf("create sandbox %s: %w", id, err)
			}
		}
	}
	res := ocispec.WithDefaults(spec.Resources)
	oci := ocispec.Sandbox(id, hostname, rootfs, d.cfg.AgentPath, img, res, hasMemsw(), false, nsPath, dir)
	mounts, err := copyOnWrite(dir, spec.Mounts)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	adapt(oci, filepath.Join(dir, sockDir), mounts)
	oci.Process.Args = append(append(args, ocispec.AgentLogArgs(res)...), "--memory-limit="+strconv.FormatInt(res.MemoryMB<<20, 10),
		"--spare-threads="+strconv.Itoa(agentSpareThreads))
	data, err := json.Marshal(oci)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}

	out, err := os.OpenFile(filepath.Join(dir, outName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer out.Close()
	cmd := d.command(ctx, d.runFlags(network), "run", "--detach", "--bundle="+dir, id)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("create sandbox %s: runsc run: %w%s", id, err, d.outputTail(id))
	}
	if err := d.limitPIDs(ctx, id, res.PIDs); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	sock, err := d.waitSocket(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w%s", id, err, d.outputTail(id))
	}
	cl := sockClient(sock)
	info, err := d.waitAgent(ctx, id, cl)
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("create sandbox %s: %w%s", id, err, d.outputTail(id))
	}
	if err := info.UserErr(); err != nil {
		cl.Close()
		sock.Close()
		return nil, err
	}
	d.mu.Lock()
	d.socks[id] = sock
	d.mu.Unlock()
	return cl, nil
}

// limitPIDs sets the pids.max of the container's cgroup in the sentry,
// before any command runs. runsc applies the spec's pids limit only to the
// host cgroup, which also holds the sentry, the gofer and systrap's stubs
// (hostPIDsExtra over the limit) and whose exhaustion kills the whole
// sandbox; in the sentry a fork past the limit fails with EAGAIN, as it
// does under runc, and the host cgroup stays the outer bound. Root in the
// sandbox cannot raise it: the cgroup mount is read-only.
func (d *Driver) limitPIDs(ctx context.Context, id string, limit int64) error {
	if _, err := d.runsc(ctx, nil, "write-control", id, "pids", "/"+id, "pids.max", strconv.FormatInt(limit, 10)); err != nil {
		return fmt.Errorf("set the sentry's pids limit: %w", err)
	}
	return nil
}

// pinSocket opens the agent's socket file without following anything (an
// O_PATH fd of a socket, not a symlink, in the sandbox's socket dir).
//
// The socket's directory is bound into the sandbox, so root inside could
// swap the file for a symlink to a host socket. Pinned at create, before
// anything but the agent has run, the fd keeps reaching the agent's own
// socket (a unix socket is found by its inode) whatever happens to the
// name later; the host connects through /proc/self/fd/<fd>.
func (d *Driver) pinSocket(id string) (*os.File, error) {
	dir := filepath.Join(d.hostDir(id), sockDir)
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, sockName, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV})
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a socket (mode %o)", sockName, st.Mode)
	}
	return os.NewFile(uintptr(fd), sockName), nil
}

// sockClient is an agent client that connects through the pinned socket.
func sockClient(sock *os.File) *agent.Client {
	return agent.UnixClient("/proc/self/fd/" + strconv.Itoa(int(sock.Fd())))
}

// waitSocket waits until the agent has made its socket and pins it.
func (d *Driver) waitSocket(ctx context.Context, id string) (*os.File, error) {
	backoff := 5 * time.Millisecond
	for {
		sock, err := d.pinSocket(id)
		if err == nil {
			return sock, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("agent socket: %w", err)
		}
		if st, serr := d.state(ctx, id); serr != nil || st.Status != "running" {
			return nil, fmt.Errorf("agent exited before listening (%v)", serr)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent did not listen: %w", ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// reservedDests are paths the driver or the agent own inside every
// sandbox: a volume may be neither at, below nor above one of them.
var reservedDests = []string{"/proc", "/sys", "/dev", "/tmp", "/.paddock", agent.BinaryPath, agent.StateDir,
	"/etc/" + ocispec.ResolvConfName, "/etc/" + ocispec.HostsName}

// checkDest refuses a volume's mountpoint that is not absolute and clean,
// is "/", or meets a reserved path. runsc resolves it inside the sandbox's
// root (its gofer is chrooted there), so a symlink in an image cannot lead
// it onto the host.
func checkDest(dest string) error {
	if !path.IsAbs(dest) || path.Clean(dest) != dest || dest == "/" {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount", "mount destination %q must be an absolute, clean path other than /", dest)
	}
	for _, r := range reservedDests {
		if dest == r || strings.HasPrefix(dest, r+"/") || strings.HasPrefix(r, dest+"/") {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount", "mount destination %q meets %s, which the sandbox needs", dest, r)
		}
	}
	return nil
}

// adapt fits the shared OCI spec to runsc: the agent's socket directory,
// the volumes, and the mount options runsc does not know.
func adapt(oci *specs.Spec, sock string, mounts []runtime.Mount) {
	oci.Mounts = append(oci.Mounts, specs.Mount{Destination: sockDest, Type: "bind", Source: sock,
		Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}})
	for _, m := range mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		oci.Mounts = append(oci.Mounts, specs.Mount{Destination: m.Dest, Type: "bind", Source: m.Source,
			Options: []string{"rbind", mode, "nosuid", "nodev"}})
	}
	for i, m := range oci.Mounts {
		// rro (recursive read-only) is runc's; the sentry's binds of the
		// host image are read-only through the gofer already.
		oci.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "rro" })
	}
	// The host cgroup also counts the sentry, the gofer and systrap's stubs.
	if p := oci.Linux.Resources.Pids; p != nil && p.Limit != nil {
		limit := *p.Limit + hostPIDsExtra
		p.Limit = &limit
	}
	// And their memory: the sandbox's own limit is the agent's to keep
	// (the sentry enforces none), the host's is above it.
	if m := oci.Linux.Resources.Memory; m != nil && m.Limit != nil {
		if oci.Annotations == nil {
			oci.Annotations = map[string]string{}
		}
		oci.Annotations[memoryLimitAnnotation] = strconv.FormatInt(*m.Limit, 10)
		limit := *m.Limit + hostMemoryExtra
		m.Limit = &limit
		if m.Swap != nil {
			m.Swap = &limit
		}
	}
	// The sandbox joins the namespace by path; the sentry owns the rest.
	oci.Linux.Namespaces = slices.DeleteFunc(oci.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.CgroupNamespace
	})
}

// waitAgent pings until the agent answers; the socket appears once the
// agent listens.
func (d *Driver) waitAgent(ctx context.Context, id string, cl *agent.Client) (agent.Info, error) {
	backoff := 5 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cl.Ping(pctx)
		cancel()
		if err == nil {
			return info, nil
		}
		if st, serr := d.state(ctx, id); serr != nil || st.Status != "running" {
			return agent.Info{}, fmt.Errorf("agent exited before answering: %w", err)
		}
		select {
		case <-ctx.Done():
			return agent.Info{}, fmt.Errorf("agent did not answer: %w (%w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// outputTail is the end of the agent's and runsc's output, for errors.
func (d *Driver) outputTail(id string) string {
	data, err := os.ReadFile(filepath.Join(d.hostDir(id), outName))
	if err != nil || len(data) == 0 {
		return ""
	}
	if len(data) > 2048 {
		data = data[len(data)-2048:]
	}
	return "; output: " + strings.TrimSpace(string(data))
}

// containerState is what `runsc state` prints (the OCI state).
type containerState struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
}

// state returns the container's state; ErrNotFound when runsc has none.
func (d *Driver) state(ctx context.Context, id string) (containerState, error) {
	var st containerState
	if !d.hasState(id) {
		return st, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	out, err := d.runsc(ctx, nil, "state", id)
	if err != nil {
		if !d.hasState(id) {
			return st, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
		}
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("runsc state %s: %w", id, err)
	}
	return st, nil
}

// hasState reports whether runsc keeps state for id under its root: it
// names its files "<container id>_sandbox:<sandbox id>.state" (and .lock),
// and each sandbox here is one container of the same id.
func (d *Driver) hasState(id string) bool {
	entries, err := os.ReadDir(d.stateDir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id+"_sandbox:") {
			return true
		}
	}
	return false
}

// Agent implements runtime.Driver.
func (d *Driver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	st, err := d.state(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		if _, serr := os.Stat(d.hostDir(id)); serr == nil {
			return nil, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
		}
		return nil, err
	}
	if err != nil || st.Status != "running" {
		return nil, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	sock := d.socks[id]
	if sock == nil {
		// Re-adoption: pinned again, from a name the sandbox may have
		// replaced by now, but never through a symlink.
		if sock, err = d.pinSocket(id); err != nil {
			return nil, fmt.Errorf("adopt sandbox %s: %w", id, err)
		}
		d.socks[id] = sock
	}
	return sockClient(sock), nil
}

// events is the part of `runsc events --stats` the driver reads.
type events struct {
	Data struct {
		CPU struct {
			Usage struct {
				Total uint64 `json:"total"`
			} `json:"usage"`
		} `json:"cpu"`
		Memory struct {
			Usage struct {
				Usage uint64 `json:"usage"`
				Max   uint64 `json:"max"`
				Limit uint64 `json:"limit"`
			} `json:"usage"`
		} `json:"memory"`
		// Pids.Current counts zombies too: Stats reads sentryPIDs.
		Pids struct {
			Current uint64 `json:"current"`
		} `json:"pids"`
	} `json:"data"`
}

// Stats implements runtime.Driver: the sentry's own accounting, with
// PIDs from the container's cgroup in the sentry (sentryPIDs), the count
// its limit applies to, as under runc.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	if err := checkID(id); err != nil {
		return runtime.Stats{}, err
	}
	st, err := d.state(ctx, id)
	if err != nil {
		return runtime.Stats{}, err
	}
	if st.Status != "running" {
		return runtime.Stats{}, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
	}
	out, err := d.runsc(ctx, nil, "events", "--stats", id)
	if err != nil {
		return runtime.Stats{}, err
	}
	var ev events
	if err := json.Unmarshal(out, &ev); err != nil {
		return runtime.Stats{}, fmt.Errorf("runsc events %s: %w", id, err)
	}
	s := runtime.Stats{
		CPUUsage:    time.Duration(ev.Data.CPU.Usage.Total),
		MemoryBytes: ev.Data.Memory.Usage.Usage,
		MemoryPeak:  ev.Data.Memory.Usage.Max,
		MemoryLimit: ev.Data.Memory.Usage.Limit,
		PIDs:        ev.Data.Pids.Current,
	}
	if n, err := d.sentryPIDs(ctx, id); err == nil {
		s.PIDs = n
	} else {
		d.log.Debug("sentry pids.current not read, the task count includes zombies", "sandbox", id, "err", err)
	}
	if u, ok := layer.DiskStats(d.hostDir(id)); ok {
		s.DiskBytes, s.DiskLimitBytes, s.DiskInodes, s.DiskInodesLimit = u.Bytes, u.BytesLimit, u.Inodes, u.InodesLimit
	}
	if cfg, err := d.bundleSpec(id); err == nil && cfg.Linux != nil && cfg.Linux.Resources != nil {
		if c := cfg.Linux.Resources.CPU; c != nil && c.Quota != nil && c.Period != nil && *c.Period > 0 {
			s.CPUQuotaFrac = float64(*c.Quota) / float64(*c.Period)
		}
		// The sandbox's limit, not the host cgroup's (hostMemoryExtra).
		if v, err := strconv.ParseUint(cfg.Annotations[memoryLimitAnnotation], 10, 64); err == nil {
			s.MemoryLimit = v
		}
	}
	// OOM kills are the agent's (memGuard): the sentry makes none.
	if cl, err := d.Agent(ctx, id); err == nil {
		if info, err := cl.Ping(ctx); err == nil {
			s.OOMKills = uint64(info.OOMKills)
		}
	}
	return s, nil
}

// sentryPIDs is the pids.current of the container's cgroup in the sentry,
// the count its pids.max (limitPIDs) applies to. runsc events counts
// every task the sentry still holds, zombies included, but the sentry's
// pids controller drops a task's charge when it exits, not when it is
// reaped (unlike Linux), so under a fork bomb events reads over the
// limit while the limit holds. A runsc call of about 10 ms.
func (d *Driver) sentryPIDs(ctx context.Context, id string) (uint64, error) {
	out, err := d.runsc(ctx, nil, "read-control", id, "pids", "/"+id, "pids.current")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("runsc read-control %s pids.current: %q: %w", id, out, err)
	}
	return n, nil
}

func (d *Driver) bundleSpec(id string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(d.hostDir(id), "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	return &s, json.Unmarshal(data, &s)
}

// Stop implements runtime.Driver.
func (d *Driver) Stop(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	return d.teardown(ctx, id)
}

// unpin closes the pinned socket of id, if any.
func (d *Driver) unpin(id string) {
	d.mu.Lock()
	sock := d.socks[id]
	delete(d.socks, id)
	d.mu.Unlock()
	if sock != nil {
		sock.Close()
	}
}

// teardown destroys the runsc sandbox (its sentry, gofer and cgroups) and
// unmounts the root filesystem, the copy-on-write overlays and the disk
// below them; the host dir stays.
func (d *Driver) teardown(ctx context.Context, id string) error {
	d.unpin(id)
	if d.hasState(id) {
		// delete --force kills the sandbox and waits for it.
		if _, err := d.runsc(ctx, nil, "delete", "--force", id); err != nil && d.hasState(id) {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
	}
	dir := d.hostDir(id)
	if err := errors.Join(unmountAll(filepath.Join(dir, rootfsName)), unmountCopyOnWrite(dir)); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if err := layer.UnmountDisk(dir); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	return nil
}

// Destroy implements runtime.Driver.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	if err := d.teardown(ctx, id); err != nil {
		return err
	}
	if err := fstree.Remove(d.hostDir(id)); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return nil
}

// List implements runtime.Driver.
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	entries, err := os.ReadDir(d.runDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []runtime.Info
	for _, e := range entries {
		if !e.IsDir() || !sandbox.ValidID(e.Name()) {
			continue
		}
		info := runtime.Info{ID: e.Name()}
		if fi, err := e.Info(); err == nil {
			info.Created = fi.ModTime()
		}
		if st, err := d.state(ctx, e.Name()); err == nil {
			if !st.Created.IsZero() {
				info.Created = st.Created
			}
			info.Running, info.PID = st.Status == "running", st.PID
			if st.Status == "paused" {
				info.Running = d.resumeLeftover(ctx, e.Name())
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// Close implements runtime.Driver. Sandboxes keep running. runsc pins an
// nsfs at <root>/null-netns for --network=none sandboxes; it is released so
// that the data dir holds no mount.
func (d *Driver) Close() error {
	d.mu.Lock()
	for id, sock := range d.socks {
		sock.Close()
		delete(d.socks, id)
	}
	d.mu.Unlock()
	d.disks.Close()
	p := filepath.Join(d.stateDir, "null-netns")
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("gvisor driver: unmount %s: %w", p, err)
	}
	return nil
}

// hasMemsw reports whether cgroup v1 swap accounting exists here.
func hasMemsw() bool {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}
