package runc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroup manager
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // the C half of "runc init"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/hostimage"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/runtime/runc/spawn"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Init must be the first call in main (and TestMain) of every binary that
// uses the driver: libcontainer re-executes the binary as "<exe> init" to set
// up each container, and that child must do nothing else.
//
// Init must run on the main goroutine (main or TestMain). Outside "init" it
// pins that goroutine to the main thread for good: libcontainer joins each
// new container's mount namespace from a short-lived locked goroutine whose
// thread Go then discards, but Go cannot discard the main thread, so that
// goroutine landing there would leave the whole process's /proc/self view
// (and a reference to the container's mounts) inside the container.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	goruntime.LockOSThread()
}

// Names inside a sandbox's host dir.
const (
	// The sandbox's /etc/resolv.conf and /etc/hosts, when it has a network.
	resolvConfName = ocispec.ResolvConfName
	hostsName      = ocispec.HostsName
	rootfsName     = "rootfs"
	sockName       = "a.sock"
	stateName      = ".state" // under DataDir/runc; a dot so no sandbox id can collide
)

// createTimeout bounds Create when ctx has no earlier deadline.
const createTimeout = 30 * time.Second

// Driver runs sandboxes with libcontainer. See the package doc.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	runDir   string // DataDir/runc: one dir per sandbox
	stateDir string // libcontainer's state root
	img      *runtime.Rootfs
	disks    *layer.Disks // writable layers, capped or not
	memsw    bool
	cgroupV2 bool
	lowerOOM bool // may set the agent's oom_score_adj to -998
	roots    *roots
	spawner  *spawn.Client // nil: containers start from this process

	mu     sync.Mutex
	boxes  map[string]*box    // guarded by mu: sandboxes this process has handles for
	locks  map[string]*idLock // guarded by mu: serializes Create/Stop/Destroy per id
	closed bool               // guarded by mu
}

// box is this process's handle on one sandbox.
type box struct {
	// dir is an O_PATH fd of the host dir: the agent socket is reached as
	// /proc/self/fd/<dir>/a.sock, which fits sun_path however long DataDir is.
	dir    *os.File
	client *agent.Client
	// proc is the init process when this process started it (nil once
	// adopted): it must be reaped by whoever holds it.
	proc *libcontainer.Process
	// out reads the agent's stdout and stderr; nil for a sandbox whose
	// agent writes elsewhere (started by an older paddock).
	out *agentOutput
}

func (b *box) close() {
	if b.client != nil {
		b.client.Close()
	}
	b.out.close()
	if b.dir != nil {
		b.dir.Close()
	}
}

var _ runtime.Driver = (*Driver)(nil)

// New prepares the data dir and the host image, once, so that Create does
// only per-sandbox work.
func New(cfg Config) (*Driver, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if os.Geteuid() != 0 {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "needs_root", "runc driver: needs root (euid %d)", os.Geteuid())
	}
	if _, err := os.Stat(cfg.AgentPath); err != nil {
		return nil, fmt.Errorf("runc driver: agent binary: %w", err)
	}
	if cfg.InitPath != "" {
		if _, err := os.Stat(cfg.InitPath); err != nil {
			return nil, fmt.Errorf("runc driver: init binary: %w", err)
		}
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("runc driver: data dir: %w", err)
	}
	cfg.DataDir = dataDir
	d := &Driver{
		cfg:      cfg,
		log:      cfg.Logger.With("driver", "runc"),
		runDir:   filepath.Join(dataDir, "runc"),
		boxes:    map[string]*box{},
		locks:    map[string]*idLock{},
		cgroupV2: cgroups.IsCgroup2UnifiedMode(),
	}
	d.stateDir = filepath.Join(d.runDir, stateName)
	d.memsw = hasMemsw(d.cgroupV2)
	if d.lowerOOM = canLowerOOMScore(); !d.lowerOOM {
		d.log.Warn("no CAP_SYS_RESOURCE: sandbox agents keep paddock's oom_score_adj instead of -998")
	}
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	// The binary libcontainer re-executes as each container's init.
	exe, err := os.Executable()
	if cfg.InitPath != "" {
		exe, err = cfg.InitPath, nil
	}
	if err == nil && exeDirHolds(exe, d.stateDir) {
		d.log.Warn("the data dir is inside the directory of the binary sandboxes start from: every sandbox start copies the whole binary for runc init instead of sealing it with a read-only overlay; keep the binary outside the data dir",
			"binary", exe, "data_dir", dataDir)
	}
	if d.img, err = hostimage.Build(dataDir); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	if d.roots, err = newRoots(cfg, d.runDir); err != nil {
		return nil, err
	}
	d.disks, err = layer.OpenDisks(layer.DisksConfig{RunDir: d.runDir, Reserve: cfg.DiskReserve, PoolMB: cfg.PoolDiskMB, Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	if cfg.InitPath != "" {
		d.spawner = spawn.NewClient(cfg.InitPath)
	}
	return d, nil
}

// Capabilities implements runtime.Driver.
// ListIsCheap marks List as cheap enough for the node to poll for dead
// sandboxes: it reads each sandbox's state file and its init's status.
func (d *Driver) ListIsCheap() {}

func (d *Driver) Capabilities() runtime.Capabilities {
	v := 1
	if d.cgroupV2 {
		v = 2
	}
	// Seccomp: the agent installs its own filter before serving.
	return runtime.Capabilities{Name: "runc", CgroupVersion: v, Seccomp: true, Snapshot: true, UserNS: d.roots.ranges > 0, DiskCap: d.disks.Available()}
}

// idLock is a per-id mutex, dropped from the map when its last user leaves.
type idLock struct {
	mu    sync.Mutex
	users int // guarded by Driver.mu
}

func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l, ok := d.locks[id]
	if !ok {
		l = &idLock{}
		d.locks[id] = l
	}
	l.users++
	d.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.mu.Lock()
		if l.users--; l.users == 0 {
			delete(d.locks, id)
		}
		d.mu.Unlock()
	}
}

func (d *Driver) hostDir(id string) string { return filepath.Join(d.runDir, id) }

var checkID = ocispec.CheckID

// Create implements runtime.Driver.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (_ *agent.Client, retErr error) {
	if err := checkID(spec.ID); err != nil {
		return nil, err
	}
	img, err := ocispec.Rootfs(spec, d.img)
	if err != nil {
		return nil, err
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.ID
	}
	agentArgs := []string{agent.BinaryPath}
	if spec.User != "" {
		// An argument, not a shell word: only a NUL could not pass, and
		// the agent bounds and parses the rest.
		if strings.ContainsRune(spec.User, 0) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, agent.CodeUserInvalid, "image user %q is not a valid user", spec.User)
		}
		agentArgs = append(agentArgs, "--user="+spec.User)
	}
	id := spec.ID
	unlock := d.lock(id)
	defer unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, errors.New("runc driver: closed")
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
	start := time.Now()
	phases := sandbox.PhasesFrom(ctx)
	b := &box{}
	defer func() {
		if retErr != nil {
			// Nothing of a failed sandbox may stay behind.
			b.close()
			if err := d.teardown(context.WithoutCancel(ctx), id, b); err != nil {
				d.log.Error("cleanup after failed create", "sandbox", id, "err", err)
			} else if err := fstree.Remove(dir); err != nil {
				d.log.Error("cleanup after failed create", "sandbox", id, "err", err)
			}
		}
	}()

	// First, while dir is empty: a disk made ahead of time replaces it.
	step := time.Now()
	upper, work, err := d.disks.Prepare(ctx, dir, spec.Resources.DiskMB)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	ids, err := d.openIDs(id)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer ids.close()
	rootfs := d.roots.rootfs(id)
	lowers := []string{img.Lower}
	if len(img.Lowers) > 0 {
		lowers = img.Lowers
		if err := prepareUpper(upper, img.Lowers, spec.Network != nil); err != nil {
			return nil, fmt.Errorf("create sandbox %s: %w", id, err)
		}
	}
	root := overlay{lowers: lowers, upper: upper, work: work, flags: unix.MS_NODEV,
		stage: filepath.Join(dir, stagePrefix+rootfsName)}
	if err := ids.mountOverlay(root, rootfs); err != nil {
		return nil, fmt.Errorf("create sandbox %s: image %q: %w", id, spec.Image, err)
	}

	if b.dir, err = os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	sockPath := b.sockPath()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: agent socket: %w", id, err)
	}
	// The socket file must outlive this process's copy of the listener: the
	// agent keeps serving on it, and a restarted paddock reconnects to it.
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: agent socket: %w", id, err)
	}
	out, outW, err := newAgentOutput(dir, d.log.With("sandbox", id))
	if err != nil {
		lnFile.Close()
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	b.out = out
	phases.Layer = time.Since(step)
	step = time.Now()
	// Closed right after the start below; these cover the early returns.
	defer lnFile.Close()
	defer outW.Close()

	var nsPath string
	if nw := spec.Network; nw != nil {
		if nw.NSPath == "" || !nw.DNS.IsValid() {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network", "create sandbox %s: network needs a namespace path and a DNS address", id)
		}
		nsPath = nw.NSPath
		// The files live in the sandbox's host dir, which paddock just
		// created and the sandbox never sees, so the host never follows a
		// path the sandbox controls; the binds are read-only inside. The
		// hostname is in hosts so that looking it up (many servers do at
		// start) never goes to the upstream resolver.
		files := map[string]string{
			resolvConfName: "nameserver " + nw.DNS.String() + "\n",
			hostsName:      "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname + "\n",
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return nil, fmt.Errorf("create sandbox %s: %w", id, err)
			}
		}
		if err := ids.joinNetNS(nsPath, dir); err != nil {
			return nil, fmt.Errorf("create sandbox %s: %w", id, err)
		}
	}
	res := withDefaults(spec.Resources)
	oci := ociSpec(id, hostname, rootfs, d.cfg.AgentPath, img, res, d.memsw, d.lowerOOM, nsPath, dir)
	mounts, err := ids.copyOnWrite(dir, spec.Mounts)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	// Mountpoints are made in the sandbox's tree, as its root.
	if err := ids.as(func() error { return addMounts(oci, rootfs, mounts) }); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	ids.apply(oci)
	cfg, err := libcontainerConfig(oci)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	args := append(agentArgs, agentLogArgs(res)...)
	phases.Config = time.Since(step)
	step = time.Now()
	c, err := d.start(ctx, id, cfg, b, args, outW, lnFile)
	phases.Start = time.Since(step)
	step = time.Now()
	// Only the agent may hold the listener: if it dies, connecting fails at
	// once instead of queueing on a socket nobody accepts.
	lnFile.Close()
	outW.Close()
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w%s", id, err, b.out.tailText(outputWait))
	}
	b.client = agent.UnixClient(sockPath)

	info, err := d.waitAgent(ctx, id, c, b.client)
	phases.Agent = time.Since(step)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w%s", id, err, b.out.tailText(outputWait))
	}
	if err := info.UserErr(); err != nil {
		// The image names a user it does not have: the request's fault,
		// and the deferred clean-up removes the sandbox.
		return nil, err
	}
	d.mu.Lock()
	d.boxes[id] = b
	d.mu.Unlock()
	d.log.Debug("sandbox created", "sandbox", id, "took", time.Since(start))
	return b.client, nil
}

// start creates the container and starts its init, the agent with args,
// with out as its stdout and stderr and ln as fd 3 (agent.ListenFD): from
// paddock-init when the driver has it (then it returns no container), else
// from this process (then b keeps the init process, which this process
// must reap).
func (d *Driver) start(ctx context.Context, id string, cfg *configs.Config, b *box, args []string, out, ln *os.File) (*libcontainer.Container, error) {
	if d.spawner != nil {
		req := spawn.Request{StateDir: d.stateDir, ID: id, Config: cfg, Args: args, Env: []string{agentPATH}, Cwd: "/"}
		// The container's state is loaded only if the agent does not
		// answer (waitAgent): reading it back costs a create about 0.3 ms.
		_, err := d.spawner.Start(ctx, req, out, out, ln)
		return nil, err
	}
	c, err := libcontainer.Create(d.stateDir, id, cfg)
	if err != nil {
		return nil, fmt.Errorf("libcontainer: %w", err)
	}
	proc := &libcontainer.Process{
		Args:       args,
		Env:        []string{agentPATH},
		Cwd:        "/",
		Stdout:     out,
		Stderr:     out,
		ExtraFiles: []*os.File{ln}, // becomes fd 3 == agent.ListenFD
		Init:       true,
	}
	if err := c.Run(proc); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	b.proc = proc
	return c, nil
}

func (b *box) sockPath() string {
	return "/proc/self/fd/" + strconv.Itoa(int(b.dir.Fd())) + "/" + sockName
}

// waitAgent pings until the agent answers. The socket already listens (we
// created it), so a ping blocks until the agent accepts; retries only cover
// a connection the agent drops while starting. c is the container, or nil
// to load it from its state only if a ping fails.
func (d *Driver) waitAgent(ctx context.Context, id string, c *libcontainer.Container, cl *agent.Client) (agent.Info, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, createTimeout)
		defer cancel()
	}
	backoff := time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cl.Ping(pctx)
		cancel()
		if err == nil {
			return info, nil
		}
		if c == nil {
			lc, lerr := d.load(id)
			if lerr == nil && lc == nil {
				lerr = errors.New("paddock-init left no container state")
			}
			if lerr != nil {
				return agent.Info{}, fmt.Errorf("agent did not answer (%w) and its container: %w", err, lerr)
			}
			c = lc
		}
		if st, serr := c.Status(); serr != nil || st != libcontainer.Running {
			return agent.Info{}, fmt.Errorf("agent exited before answering: %w", err)
		}
		if ctx.Err() != nil {
			return agent.Info{}, fmt.Errorf("agent did not answer: %w", err)
		}
		select {
		case <-ctx.Done():
			return agent.Info{}, fmt.Errorf("agent did not answer: %w", ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

// outputWait bounds how long a failed Create waits for the agent's last
// output to reach its error message.
const outputWait = 500 * time.Millisecond

// load returns the libcontainer container, or nil if it has no state.
func (d *Driver) load(id string) (*libcontainer.Container, error) {
	c, err := libcontainer.Load(d.stateDir, id)
	if errors.Is(err, libcontainer.ErrNotExist) || errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load sandbox %s: %w", id, err)
	}
	return c, nil
}

// Agent implements runtime.Driver.
func (d *Driver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	c, err := d.load(id)
	if err != nil {
		return nil, err
	}
	if c == nil {
		if _, err := os.Stat(d.hostDir(id)); err == nil {
			return nil, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
		}
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	if st, err := c.Status(); err != nil || st != libcontainer.Running {
		return nil, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("runc driver: closed")
	}
	b := d.boxes[id]
	if b == nil {
		// Re-adoption: a sandbox started by an earlier paddock process.
		dir, err := os.OpenFile(d.hostDir(id), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("adopt sandbox %s: %w", id, err)
		}
		b = &box{dir: dir}
		b.client = agent.UnixClient(b.sockPath())
		// The agent still holds the FIFO's write end: read it again.
		if b.out, err = openAgentOutput(d.hostDir(id), d.log.With("sandbox", id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("adopt sandbox: agent output not read", "sandbox", id, "err", err)
		}
		d.boxes[id] = b
	}
	return b.client, nil
}

// Stats implements runtime.Driver.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	if err := checkID(id); err != nil {
		return runtime.Stats{}, err
	}
	c, err := d.load(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	if c == nil {
		return runtime.Stats{}, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
		return runtime.Stats{}, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
	}
	s, err := c.Stats()
	if err != nil {
		return runtime.Stats{}, fmt.Errorf("stats of sandbox %s: %w", id, err)
	}
	var out runtime.Stats
	if cs := s.CgroupStats; cs != nil {
		out.CPUUsage = time.Duration(cs.CpuStats.CpuUsage.TotalUsage)
		out.MemoryBytes = cs.MemoryStats.Usage.Usage
		out.MemoryPeak = cs.MemoryStats.Usage.MaxUsage
		out.MemoryLimit = cs.MemoryStats.Usage.Limit
		out.PIDs = cs.PidsStats.Current
	}
	cfg := c.Config()
	if r := cfg.Cgroups.Resources; r != nil && r.CpuPeriod > 0 && r.CpuQuota > 0 {
		out.CPUQuotaFrac = float64(r.CpuQuota) / float64(r.CpuPeriod)
	}
	if state, err := c.State(); err == nil {
		out.OOMKills = oomKills(state)
	}
	if u, ok := layer.DiskStats(d.hostDir(id)); ok {
		out.DiskBytes, out.DiskLimitBytes, out.DiskInodes, out.DiskInodesLimit = u.Bytes, u.BytesLimit, u.Inodes, u.InodesLimit
	}
	return out, nil
}

// oomKills reads the kernel's OOM-kill counter of the sandbox's memory
// cgroup (libcontainer does not parse it).
func oomKills(state *libcontainer.State) uint64 {
	file := ""
	if p := state.CgroupPaths["memory"]; p != "" {
		file = filepath.Join(p, "memory.oom_control") // v1
	} else if p := state.CgroupPaths[""]; p != "" {
		file = filepath.Join(p, "memory.events") // v2
	}
	if file == "" {
		return 0
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// Stop implements runtime.Driver.
func (d *Driver) Stop(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	unlock := d.lock(id)
	defer unlock()
	return d.stopLocked(ctx, id)
}

// stopLocked is Stop with the id's lock held.
func (d *Driver) stopLocked(ctx context.Context, id string) error {
	d.mu.Lock()
	b := d.boxes[id]
	delete(d.boxes, id)
	d.mu.Unlock()
	if b != nil {
		b.close()
	}
	return d.teardown(ctx, id, b)
}

// teardown kills every process of the sandbox, waits until they are gone,
// destroys the container (cgroups, state) and unmounts the overlay and the
// disk below it. b may be nil (adopted or unknown sandbox). It keeps the
// host dir.
func (d *Driver) teardown(ctx context.Context, id string, b *box) error {
	c, err := d.load(id)
	if err != nil {
		return err
	}
	if c != nil {
		if err := d.kill(ctx, id, c, b); err != nil {
			return err
		}
		if err := destroyExited(ctx, c); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
	}
	if err := d.unmountHostSide(id); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if err := layer.UnmountDisk(d.hostDir(id)); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	return nil
}

// kill SIGKILLs init (which takes its pid namespace with it) and anything
// still in the cgroup, reaps init if it is our child, and waits until the
// cgroup is empty.
func (d *Driver) kill(ctx context.Context, id string, c *libcontainer.Container, b *box) error {
	state, err := c.State()
	if err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	pid := state.InitProcessPid
	if st, _ := c.Status(); st != libcontainer.Stopped {
		if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			d.log.Debug("signal init", "sandbox", id, "err", err)
		}
	}
	if b != nil && b.proc != nil {
		_, _ = b.proc.Wait() // reap our child; its exit status is the agent's
		b.proc = nil
	} else if pid > 0 && parentOf(pid) == os.Getpid() {
		// Started by an earlier Driver in this same process and adopted
		// since: still our child, so still ours to reap.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; ; delay = min(delay*2, 20*time.Millisecond) {
		pids, err := c.Processes()
		if err != nil || len(pids) == 0 {
			return nil // no cgroup or empty cgroup: nothing left
		}
		for _, p := range pids {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stop sandbox %s: %d processes survive SIGKILL", id, len(pids))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop sandbox %s: %w", id, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// destroyExited destroys the container once its init has finished
// exiting. A killed task leaves its cgroup (where kill waits) a moment
// before it becomes a zombie, and libcontainer refuses to destroy while
// init is not one (ErrRunning): seen under load in the soak test, where a
// delete failed and left the sandbox's mounts and cgroups. So it retries
// for a few seconds, killing init again each time.
func destroyExited(ctx context.Context, c *libcontainer.Container) error {
	deadline := time.Now().Add(5 * time.Second)
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		err := c.Destroy()
		if !errors.Is(err, libcontainer.ErrRunning) || time.Now().After(deadline) {
			return err
		}
		_ = c.Signal(unix.SIGKILL)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// parentOf returns pid's parent pid, or 0.
func parentOf(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// Destroy implements runtime.Driver.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	// One critical section, so a Create of the same id cannot slip in
	// between the stop and the removal.
	unlock := d.lock(id)
	defer unlock()
	if err := d.stopLocked(ctx, id); err != nil {
		return err
	}
	// The upper dir is the sandbox's: any depth, any shape.
	if err := fstree.Remove(d.hostDir(id)); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return nil
}

// List implements runtime.Driver.
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	ids := map[string]bool{}
	for _, dir := range []string{d.runDir, d.stateDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() && sandbox.ValidID(e.Name()) {
				ids[e.Name()] = true
			}
		}
	}
	out := make([]runtime.Info, 0, len(ids))
	for id := range ids {
		info := runtime.Info{ID: id}
		if fi, err := os.Stat(d.hostDir(id)); err == nil {
			info.Created = fi.ModTime()
		}
		if c, err := d.load(id); err == nil && c != nil {
			if st, err := c.State(); err == nil {
				info.Created = st.Created
				s, err := c.Status()
				if err == nil && s == libcontainer.Paused {
					s, err = d.thawLeftover(id)
				}
				if err == nil && s == libcontainer.Running {
					info.Running, info.PID = true, st.InitProcessPid
				}
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// Close drops this process's handles; sandboxes keep running and a new
// Driver on the same DataDir adopts them.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	for id, b := range d.boxes {
		b.close()
		delete(d.boxes, id)
	}
	d.mu.Unlock()
	d.disks.Close()
	if d.spawner != nil {
		d.spawner.Close()
	}
	return nil
}

// exeDirHolds reports whether dir is inside (or is) the directory of the
// binary exe. libcontainer seals the binary it re-executes as "runc init"
// with an overlay whose layers are that directory and its state dir;
// overlayfs refuses nested layers (ELOOP), and libcontainer then copies the
// whole binary into memory for every sandbox start (about 8 ms and 30 MB
// each here).
func exeDirHolds(exe, dir string) bool {
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	rel, err := filepath.Rel(filepath.Dir(exe), dir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
