package e2e

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/deathsig"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/sdk"
)

// crashPool is the sandbox network of the crash tests' servers, apart from
// the other tests' pools.
const crashPool = "10.213.244.0/24"

// crashCase is one operation cut short by a SIGKILL of `paddock serve`.
type crashCase struct {
	name string
	// point is the crash point the server is armed at ("name" or
	// "name@N"); "" means the test kills it itself once crash has put it
	// in the state to be cut short.
	point string
	// setup prepares, on the armed server, what the operation works on.
	setup func(t *testing.T, e *crashEnv)
	// crash starts the operation that the crash cuts short; its request
	// fails with the server.
	crash func(t *testing.T, e *crashEnv, p *armedProc)
	// after checks what this operation must have left, once the restarted
	// server passed the checks every case shares.
	after func(t *testing.T, e *crashEnv)
}

// TestCrashRecovery kills `paddock serve` with SIGKILL in the middle of
// each operation that changes the host or the store (a crash point armed
// through PADDOCK_CRASHPOINT, or a kill once the operation is observably
// under way), starts it again on the same data dir, and checks that it
// reconciled: it is ready, every sandbox is either re-adopted and working
// or ended with its mounts, cgroups, processes, namespace and veth gone;
// no half-written image, snapshot, layer or temp file remains; no
// activation is stuck in a live state and no project points at a dead
// one; command history reads. Then it deletes everything through the API
// and checks that nothing is left on the host.
func TestCrashRecovery(t *testing.T) {
	requireSandboxes(t)
	bin := buildPaddock(t)

	for _, tc := range crashCases() {
		t.Run(tc.name, func(t *testing.T) {
			e := newCrashEnv(t, bin)
			p := e.startArmed(t, tc.point)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			tc.crash(t, e, p)
			p.waitKilled(t, tc.point)

			e.restart(t)
			e.checkRecovered(t)
			if tc.after != nil {
				tc.after(t, e)
			}
		})
	}
}

// on adapts a crashEnv method to a case's setup.
func on(m func(*crashEnv, *testing.T)) func(*testing.T, *crashEnv) {
	return func(t *testing.T, e *crashEnv) { m(e, t) }
}

func crashCases() []crashCase {
	createFails := func(t *testing.T, e *crashEnv, _ *armedProc) {
		if sb, err := e.c.Create(ctxFor(t, time.Minute), api.CreateSandboxRequest{}); err == nil {
			t.Fatalf("create answered %s through a crash", sb.ID)
		}
	}
	// lostCreate: the sandbox the crashed create left is failed, and
	// checkRecovered has found its resources released.
	lostCreate := func(t *testing.T, e *crashEnv) {
		recs := e.records(t)
		if len(recs) != 1 || recs[0].State != sandbox.Failed || !strings.Contains(recs[0].Error, "lost after restart") {
			t.Fatalf("after a crash mid-create: %+v, want one failed sandbox", recs)
		}
	}
	stopCrash := func(t *testing.T, e *crashEnv, _ *armedProc) {
		if err := e.sb.Stop(ctxFor(t, time.Minute)); err == nil {
			t.Fatal("stop answered through a crash")
		}
	}
	stopped := func(t *testing.T, e *crashEnv) {
		if st := e.record(t, e.sb.ID).State; st != sandbox.Stopped {
			t.Fatalf("sandbox stopped through a crash is %s, want stopped", st)
		}
	}
	snapshotCrash := func(t *testing.T, e *crashEnv, _ *armedProc) {
		if snap, err := e.sb.Snapshot(ctxFor(t, 2*time.Minute)); err == nil {
			t.Fatalf("snapshot answered %s through a crash", snap.ID)
		}
	}
	// snapshotGone: the sandbox runs on, unfrozen, no snapshot exists, and
	// the next one works.
	snapshotGone := func(t *testing.T, e *crashEnv) {
		e.mustRun(t, e.sb, "test $(ls /home/user/data | wc -l) = 300")
		if snaps, err := e.c.ListSnapshots(ctxFor(t, time.Minute)); err != nil || len(snaps) != 0 {
			t.Fatalf("snapshots after a crashed snapshot: %+v %v", snaps, err)
		}
		if _, err := e.sb.Snapshot(ctxFor(t, 2*time.Minute)); err != nil {
			t.Fatalf("snapshot after the restart: %v", err)
		}
	}
	importCrash := func(t *testing.T, e *crashEnv, _ *armedProc) {
		if img, err := e.importStandin(t); err == nil {
			t.Fatalf("import answered %s through a crash", img.Ref)
		}
	}
	importAgain := func(t *testing.T, e *crashEnv) {
		if imgs, err := e.c.ListImages(ctxFor(t, time.Minute)); err != nil || len(imgs) != 0 {
			t.Fatalf("images after a crashed import: %+v %v", imgs, err)
		}
		if _, err := e.importStandin(t); err != nil {
			t.Fatalf("import after the restart: %v", err)
		}
	}
	activateCrash := func(t *testing.T, e *crashEnv, _ *armedProc) {
		a, err := e.c.ActivateAndWait(ctxFor(t, 3*time.Minute), e.project, nil)
		if err == nil {
			t.Fatalf("activation %s ended %s through a crash", a.ID, a.State)
		}
	}
	// interrupted: the activation the crash cut short failed, and the
	// project activates again.
	interrupted := func(t *testing.T, e *crashEnv) {
		acts := e.activations(t)
		if len(acts) != 1 || acts[0].State != string(control.StateFailed) || !strings.Contains(acts[0].Error, "interrupted by restart") {
			t.Fatalf("activations after a crash mid-activation: %+v", acts)
		}
		e.mustActivate(t)
	}
	deactivateCrash := func(t *testing.T, e *crashEnv, _ *armedProc) {
		if _, err := e.c.Deactivate(ctxFor(t, 2*time.Minute), e.project); err == nil {
			t.Fatal("deactivate answered through a crash")
		}
	}
	// saved: the deactivation the crash cut short finished after the
	// restart, saving the state whole, which the next activation restores.
	saved := func(t *testing.T, e *crashEnv) {
		acts := e.activations(t)
		if len(acts) != 1 || acts[0].State != string(control.StateStopped) {
			t.Fatalf("activations after a crash mid-deactivation: %+v", acts)
		}
		a := e.mustActivate(t)
		for _, i := range []int{1, 20} {
			if got := e.readFile(t, e.c.Sandbox(a.SandboxID), fmt.Sprintf("%s/kept/f%d", gooseRoot, i)); got != fmt.Sprint(i) {
				t.Errorf("restored f%d = %q", i, got)
			}
		}
	}

	return []crashCase{
		{name: "create/recorded", point: "node/create/recorded", crash: createFails, after: lostCreate},
		{name: "create/network", point: "node/create/after-network", crash: createFails, after: lostCreate},
		{name: "create/driver", point: "node/create/after-driver", crash: createFails, after: func(t *testing.T, e *crashEnv) {
			// The driver finished: the sandbox is re-adopted and works.
			recs := e.records(t)
			if len(recs) != 1 || recs[0].State != sandbox.Running {
				t.Fatalf("after a crash right after the driver's create: %+v, want one running sandbox", recs)
			}
		}},
		{name: "exec/detached", point: "server/exec/started", setup: on((*crashEnv).createSandbox),
			crash: func(t *testing.T, e *crashEnv, _ *armedProc) {
				_, err := e.sb.RunCommand(ctxFor(t, time.Minute), api.CommandRequest{Cmd: "sh", Detached: true,
					Args: []string{"-c", "touch /home/user/ran; exec sleep 600"}})
				if err == nil {
					t.Fatal("a detached command's start answered through a crash")
				}
			},
			after: func(t *testing.T, e *crashEnv) {
				// The command outlives the crash in the re-adopted sandbox.
				e.mustRun(t, e.sb, "test -e /home/user/ran")
				e.runningCommand(t, "exec sleep 600")
			}},
		{name: "exec/waited", setup: on((*crashEnv).createSandbox),
			crash: func(t *testing.T, e *crashEnv, p *armedProc) {
				done := make(chan error, 1)
				go func() {
					_, err := e.sb.RunCommand(ctxFor(t, 2*time.Minute), api.CommandRequest{Cmd: "sh",
						Args: []string{"-c", "echo waiting; exec sleep 600"}})
					done <- err
				}()
				e.runningCommand(t, "exec sleep 600") // the server is in the middle of the wait
				p.kill(t)
				if err := <-done; err == nil {
					t.Fatal("a waited command answered through a crash")
				}
			},
			after: func(t *testing.T, e *crashEnv) { e.runningCommand(t, "exec sleep 600") }},
		{name: "upload", point: "server/upload/read@16", setup: on((*crashEnv).createSandbox),
			crash: func(t *testing.T, e *crashEnv, _ *armedProc) {
				if _, err := e.sb.WriteTar(ctxFor(t, time.Minute), "/home/user", bigTar(t, "big", 64<<20)); err == nil {
					t.Fatal("an upload answered through a crash")
				}
			},
			after: func(t *testing.T, e *crashEnv) {
				// Files go in whole again; the cut one is the sandbox's to clean.
				if _, err := e.sb.WriteFiles(ctxFor(t, time.Minute), "/home/user", []sdk.File{{Path: "small", Content: []byte("whole\n")}}); err != nil {
					t.Fatalf("upload after the restart: %v", err)
				}
				e.mustRun(t, e.sb, "test \"$(cat /home/user/small)\" = whole")
			}},
		{name: "stop/recorded", point: "node/stop/stopping", setup: on((*crashEnv).createSandbox), crash: stopCrash, after: stopped},
		{name: "stop/driver", point: "node/stop/after-driver", setup: on((*crashEnv).createSandbox), crash: stopCrash, after: stopped},
		{name: "stop/volume", point: "node/stop/after-driver", setup: on((*crashEnv).createVolumeSandbox), crash: stopCrash,
			after: func(t *testing.T, e *crashEnv) {
				stopped(t, e)
				// The stopped sandbox's volume is free again (rw volumes have
				// one user at a time), with what it was given.
				sb, err := e.c.Create(ctxFor(t, time.Minute), api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "data", Path: "/data"}}})
				if err != nil {
					t.Fatalf("create with the volume after the restart: %v", err)
				}
				e.mustRun(t, sb, "test \"$(cat /data/f)\" = kept")
			}},
		{name: "delete/driver", point: "node/delete/after-driver", setup: on((*crashEnv).createSandbox),
			crash: func(t *testing.T, e *crashEnv, _ *armedProc) {
				if err := e.sb.Delete(ctxFor(t, time.Minute)); err == nil {
					t.Fatal("delete answered through a crash")
				}
			},
			after: stopped}, // removeAll deletes it again
		{name: "snapshot/copying", point: "runc/snapshot/entry@100", setup: on((*crashEnv).createDataSandbox), crash: snapshotCrash, after: snapshotGone},
		{name: "snapshot/copied", point: "image/snapshot/copied", setup: on((*crashEnv).createDataSandbox), crash: snapshotCrash, after: snapshotGone},
		{name: "snapshot/installed", point: "image/snapshot/installed", setup: on((*crashEnv).createDataSandbox), crash: snapshotCrash, after: snapshotGone},
		{name: "import/unpacking", point: "image/layer/entry@2", crash: importCrash, after: importAgain},
		{name: "import/installed", point: "image/layer/installed", crash: importCrash, after: importAgain},
		{name: "activate/queued", point: "control/activate/queued", setup: on((*crashEnv).createProject),
			crash: func(t *testing.T, e *crashEnv, _ *armedProc) {
				if a, err := e.c.Activate(ctxFor(t, time.Minute), e.project); err == nil {
					t.Fatalf("activate answered %s through a crash", a.ID)
				}
			},
			after: interrupted},
		{name: "activate/provisioned", point: "control/activate/provisioned", setup: on((*crashEnv).createProject), crash: activateCrash, after: interrupted},
		{name: "activate/starting", point: "control/activate/starting", setup: on((*crashEnv).createProject), crash: activateCrash, after: interrupted},
		{name: "deactivate/saving", point: "control/state/entry@5", setup: on((*crashEnv).activeProject), crash: deactivateCrash, after: saved},
		{name: "deactivate/saved", point: "control/state/renamed", setup: on((*crashEnv).activeProject), crash: deactivateCrash, after: saved},
	}
}

// crashEnv is one data dir taken through a crash and a restart.
type crashEnv struct {
	bin, dataDir, addr string
	url, token         string
	c                  *sdk.Client
	srv                *serveProc // the restarted server
	// What setup made, for crash and after.
	sb      *sdk.Sandbox
	project string
	// tmpImports are paddock's import files in the host's temp dir before
	// the test: an interrupted import must not add any.
	tmpImports []string
	// hostBefore is every sandbox's and this data dir's veths' host
	// resources before the test.
	hostBefore leakcheck.State
}

func (e *crashEnv) hostScope() leakcheck.Scope {
	return leakcheck.Scope{IDs: []string{"sb-*"}, LinkPrefix: e.hostIf("")[:6]}
}

func newCrashEnv(t *testing.T, bin string) *crashEnv {
	t.Helper()
	e := &crashEnv{bin: bin, dataDir: newDataDir(t), addr: freeAddr(t), tmpImports: tmpImports()}
	e.hostBefore = leakcheck.Snapshot(e.hostScope())
	// A case that failed before its restart still removes what it made,
	// through a server started for that (after the armed one is gone).
	t.Cleanup(func() {
		if e.srv == nil && e.url != "" {
			e.restart(t)
		}
	})
	return e
}

// crashServeFlags are the crash tests' serve flags beside the data dir
// and the listen address.
var crashServeFlags = []string{"--network-pool", crashPool, "--health-timeout", "30s"}

// armedProc is a `paddock serve` process expected to die of SIGKILL.
type armedProc struct {
	cmd       *exec.Cmd
	out, log  *lockedBuffer
	done      <-chan struct{}
	crashedAt string
}

// startArmed runs `paddock serve` armed at point ("": unarmed, for the
// test to kill) and waits until it serves.
func (e *crashEnv) startArmed(t *testing.T, point string) *armedProc {
	t.Helper()
	p := startKillable(t, e.bin, point, append([]string{"--data-dir", e.dataDir, "--listen", e.addr}, crashServeFlags...)...)
	srv := &serveProc{out: p.out, log: p.log}
	e.url, e.token = srv.clientConfig(t, e.dataDir)
	e.c = sdk.New(e.url, e.token)
	return p
}

// startKillable runs `paddock serve args...` armed at point ("": unarmed),
// for a test that kills it (by its pid) rather than stops it: it dies with
// the test binary, and the test's cleanup kills it if it still runs and
// waits for it.
func startKillable(t *testing.T, bin, point string, args ...string) *armedProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), crashpoint.EnvVar+"="+point)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p := &armedProc{cmd: cmd, out: &lockedBuffer{}, log: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.log
	child, err := deathsig.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	p.done = child.Done() // the cleanup below waits for it
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// kill SIGKILLs the server, for a crash no point marks.
func (p *armedProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
}

// waitKilled waits for the server to die and checks that SIGKILL killed
// it, at point when it was armed.
func (p *armedProc) waitKilled(t *testing.T, point string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("serve never reached crash point %q\n%s", point, p.log.String())
	}
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("serve ended with %v, want SIGKILL\n%s", p.cmd.ProcessState, p.log.String())
	}
	name, _, _ := strings.Cut(point, "@")
	if point != "" && !strings.Contains(p.log.String(), "crashpoint: "+name+" (hit ") {
		t.Fatalf("serve was killed, but not at crash point %q\n%s", point, p.log.String())
	}
}

// restart starts serve again on the data dir and waits until it is ready.
func (e *crashEnv) restart(t *testing.T) {
	t.Helper()
	e.srv = startServe(t, e.bin, e.dataDir, e.addr, crashServeFlags...)
	// Before the server stops (cleanups run last first), whether the
	// checks passed or not: a sandbox left running would take its
	// addresses from the next case.
	t.Cleanup(func() { e.removeAll(t) })
	for deadline := time.Now().Add(2 * time.Minute); ; {
		resp, err := http.Get(e.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted server is not ready (%v)\n%s", err, e.srv.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := http.Get(e.url + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after the restart: %v %v", resp, err)
	}
}

// The setups.

func (e *crashEnv) createSandbox(t *testing.T) {
	t.Helper()
	sb, err := e.c.Create(ctxFor(t, time.Minute), api.CreateSandboxRequest{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	e.sb = sb
}

// createVolumeSandbox makes a sandbox with a volume that holds a file.
func (e *crashEnv) createVolumeSandbox(t *testing.T) {
	t.Helper()
	if _, err := e.c.CreateVolume(ctxFor(t, time.Minute), "data", 64<<20); err != nil {
		if sdk.IsCode(err, "volumes_unsupported") {
			t.Skip("this host runs no volumes")
		}
		t.Fatalf("create volume: %v", err)
	}
	sb, err := e.c.Create(ctxFor(t, time.Minute), api.CreateSandboxRequest{Volumes: []api.VolumeMount{{Volume: "data", Path: "/data"}}})
	if err != nil {
		t.Fatalf("create with a volume: %v", err)
	}
	e.sb = sb
	e.mustRun(t, sb, "echo kept > /data/f")
}

// createDataSandbox makes a sandbox with 300 files in its writable layer,
// so a snapshot has a while to copy.
func (e *crashEnv) createDataSandbox(t *testing.T) {
	t.Helper()
	e.createSandbox(t)
	e.mustRun(t, e.sb, "mkdir -p /home/user/data && for i in $(seq 300); do head -c 8192 /dev/urandom > /home/user/data/f$i; done")
}

func (e *crashEnv) importStandin(t *testing.T) (api.Image, error) {
	t.Helper()
	f, err := os.Open(standinArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return e.c.ImportImage(ctxFor(t, 2*time.Minute), f, sdk.Published())
}

// createProject imports the goose stand-in and makes a project of it
// that keeps its data dir across activations.
func (e *crashEnv) createProject(t *testing.T) {
	t.Helper()
	if _, err := e.importStandin(t); err != nil {
		t.Fatalf("import the stand-in: %v", err)
	}
	p, err := e.c.CreateProject(ctxFor(t, time.Minute), api.ProjectRequest{Name: "crash",
		Source: api.ProjectSource{Image: standinimage.DefaultRef}, Env: map[string]string{"GOOSE_PATH_ROOT": gooseRoot},
		PersistentPaths: []string{gooseRoot}, Resources: api.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128},
		MaxLifetimeMs: e2eLifetime.Milliseconds()})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	e.project = p.ID
}

// activeProject activates the project and gives it 20 files of state
// (through the files API: the stand-in's image has no shell).
func (e *crashEnv) activeProject(t *testing.T) {
	t.Helper()
	e.createProject(t)
	a := e.mustActivate(t)
	var files []sdk.File
	for i := 1; i <= 20; i++ {
		files = append(files, sdk.File{Path: fmt.Sprintf("kept/f%d", i), Content: []byte(fmt.Sprint(i))})
	}
	if _, err := e.c.Sandbox(a.SandboxID).WriteFiles(ctxFor(t, time.Minute), gooseRoot, files); err != nil {
		t.Fatalf("write the project's state: %v", err)
	}
}

// readFile reads a file of sb through the API.
func (e *crashEnv) readFile(t *testing.T, sb *sdk.Sandbox, path string) string {
	t.Helper()
	f, err := sb.ReadFile(ctxFor(t, time.Minute), path)
	if err != nil {
		t.Fatalf("read %s in %s: %v", path, sb.ID, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *crashEnv) mustActivate(t *testing.T) api.Activation {
	t.Helper()
	a, err := e.c.ActivateAndWait(ctxFor(t, 3*time.Minute), e.project, nil)
	if err != nil || a.State != api.ActivationReady {
		t.Fatalf("activate: %+v %v", a, err)
	}
	return a
}

// mustRun runs a shell script in sb and fails the test unless it exits 0.
func (e *crashEnv) mustRun(t *testing.T, sb *sdk.Sandbox, script string) {
	t.Helper()
	if _, code := sh(t, sb, script); code != 0 {
		t.Fatalf("%q in %s exited %d", script, sb.ID, code)
	}
}

// runningCommand waits until the agent of e.sb lists a running command
// whose arguments contain arg.
func (e *crashEnv) runningCommand(t *testing.T, arg string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		cmds, err := e.sb.Commands(ctxFor(t, time.Minute))
		if err == nil {
			for _, c := range cmds {
				if c.Status == api.CommandRunning && slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, arg) }) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running command %q in %s (%v)", arg, e.sb.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bigTar streams a tar of one file of size zero bytes.
func bigTar(t *testing.T, name string, size int64) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { // ends when the reader is closed or read to the end
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
		if err == nil {
			_, err = io.CopyN(tw, zeros{}, size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	t.Cleanup(func() { pr.Close() })
	return pr
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// The checks.

// openStore opens the data dir's store beside the server (SQLite in WAL
// mode takes a second process).
func (e *crashEnv) openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(e.dataDir, "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// records returns every sandbox record in the store.
func (e *crashEnv) records(t *testing.T) []sandbox.Sandbox {
	t.Helper()
	recs, err := e.openStore(t).ListSandboxes(ctxFor(t, time.Minute), "")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]sandbox.Sandbox, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Sandbox)
	}
	return out
}

func (e *crashEnv) record(t *testing.T, id string) sandbox.Sandbox {
	t.Helper()
	for _, sb := range e.records(t) {
		if sb.ID == id {
			return sb
		}
	}
	t.Fatalf("no record of sandbox %s", id)
	return sandbox.Sandbox{}
}

// activations returns every activation in the store.
func (e *crashEnv) activations(t *testing.T) []store.Activation {
	t.Helper()
	acts, _, err := e.openStore(t).ListActivations(ctxFor(t, time.Minute), store.ActivationFilter{}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	return acts
}

// waitSettled waits until the restarted server has finished what the
// crash interrupted: no sandbox pending or stopping, every activation
// ended or ready.
func (e *crashEnv) waitSettled(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var busy []string
		for _, sb := range e.records(t) {
			if sb.State == sandbox.Pending || sb.State == sandbox.Stopping {
				busy = append(busy, "sandbox "+sb.ID+" "+string(sb.State))
			}
		}
		for _, a := range e.activations(t) {
			if st := control.State(a.State); !st.Terminal() && st != control.StateReady {
				busy = append(busy, "activation "+a.ID+" "+a.State)
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still busy after the restart: %v\n%s", busy, e.srv.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRecovered checks what every crash must leave after the restart.
func (e *crashEnv) checkRecovered(t *testing.T) {
	t.Helper()
	e.waitSettled(t)
	recs := e.records(t)
	for _, sb := range recs {
		switch sb.State {
		case sandbox.Running:
			// A round trip through its agent; an image without a shell
			// (the stand-in's) answers 127, the host image 0.
			_, _, code := run(t, e.c.Sandbox(sb.ID), api.CommandRequest{Cmd: "sh", Args: []string{"-c", "true"}})
			if code != 0 && (sb.ImageDigest == "" || code != 127) {
				t.Errorf("a command in re-adopted sandbox %s exited %d", sb.ID, code)
			}
			if _, err := os.Stat(filepath.Join("/sys/class/net", e.hostIf(sb.ID))); err != nil {
				t.Errorf("running sandbox %s has no veth: %v", sb.ID, err)
			}
		case sandbox.Stopped, sandbox.Failed:
			e.released(t, sb.ID)
		default:
			t.Errorf("sandbox %s is %s after the restart", sb.ID, sb.State)
		}
		if status, body := apiGet(t, e.url, e.token, "/api/v1/sandboxes/"+sb.ID+"/commands"); status != http.StatusOK {
			t.Errorf("command history of %s (%s): %d %s", sb.ID, sb.State, status, body)
		}
	}
	e.checkDataDir(t, recs)
	e.checkProjects(t, recs)
}

// released checks that nothing of an ended sandbox is left on the host
// but its record and its writable layer (kept until it is deleted).
func (e *crashEnv) released(t *testing.T, id string) {
	t.Helper()
	if left := leakcheck.Snapshot(leakcheck.Scope{IDs: []string{id}}).Entries; len(left) > 0 {
		t.Errorf("ended sandbox %s left %v", id, left)
	}
	for _, p := range []string{filepath.Join(e.dataDir, "netns", id), filepath.Join("/sys/class/net", e.hostIf(id))} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("ended sandbox %s left %s", id, p)
		}
	}
}

// hostIf is the host end of a sandbox's veth (internal/netns's naming).
func (e *crashEnv) hostIf(id string) string {
	tag := sha256.Sum256([]byte(filepath.Clean(e.dataDir)))
	sum := sha256.Sum256([]byte(id))
	return "pd" + hex.EncodeToString(tag[:2]) + hex.EncodeToString(sum[:4])
}

// imageIndex is what the checks read of the image store's index.json.
type imageIndex struct {
	Images map[string]struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"images"`
	Layers    map[string]json.RawMessage `json:"layers"`
	Snapshots map[string]struct {
		Layers []string `json:"layers"`
	} `json:"snapshots"`
}

// checkDataDir checks that the data dir holds nothing half-made: temp
// dirs empty, every layer dir in the image index and every indexed layer
// on disk, driver and network state only for sandboxes that have a record.
func (e *crashEnv) checkDataDir(t *testing.T, recs []sandbox.Sandbox) {
	t.Helper()
	known := map[string]sandbox.State{}
	for _, sb := range recs {
		known[sb.ID] = sb.State
	}
	// Temp dirs: whatever a crash left there is removed at start.
	for _, dir := range []string{filepath.Join(e.dataDir, "images", "tmp")} {
		if names := dirNames(t, dir); len(names) > 0 {
			t.Errorf("%s holds %v after the restart", dir, names)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(e.dataDir, "tmp")); err == nil {
		for _, d := range ents {
			if names := dirNames(t, filepath.Join(e.dataDir, "tmp", d.Name())); len(names) > 0 {
				t.Errorf("tmp/%s holds %v after the restart", d.Name(), names)
			}
		}
	}
	if now := tmpImports(); len(now) > len(e.tmpImports) {
		t.Errorf("import files left in %s: %v (before: %v)", os.TempDir(), now, e.tmpImports)
	}

	var idx imageIndex
	if data, err := os.ReadFile(filepath.Join(e.dataDir, "images", "index.json")); err == nil {
		if err := json.Unmarshal(data, &idx); err != nil {
			t.Fatalf("images/index.json: %v", err)
		}
	}
	onDisk := dirNames(t, filepath.Join(e.dataDir, "images", "layers"))
	for _, l := range onDisk {
		if _, ok := idx.Layers[l]; !ok {
			t.Errorf("layer dir %s is in no index record", l)
		}
	}
	need := map[string]string{}
	for d, img := range idx.Images {
		for _, id := range img.DiffIDs {
			need[strings.TrimPrefix(id, "sha256:")] = "image " + d
		}
	}
	for id, snap := range idx.Snapshots {
		for _, l := range snap.Layers {
			need[l] = "snapshot " + id
		}
	}
	for l := range idx.Layers {
		need[l] = "the index"
	}
	for l, who := range need {
		if !slices.Contains(onDisk, l) {
			t.Errorf("layer %s of %s is not on disk", l, who)
		}
	}

	// The driver's and the network's state: only for sandboxes with a
	// record; a network only while its sandbox runs.
	for _, dir := range []string{filepath.Join(e.dataDir, "runc"), filepath.Join(e.dataDir, "runc", ".state")} {
		for _, id := range dirNames(t, dir) {
			if _, ok := known[id]; !ok && sandbox.ValidID(id) {
				t.Errorf("%s/%s belongs to no sandbox record", dir, id)
			}
		}
	}
	for _, id := range dirNames(t, filepath.Join(e.dataDir, "netns")) {
		if st, ok := known[id]; sandbox.ValidID(id) && (!ok || st != sandbox.Running) {
			t.Errorf("netns/%s belongs to no running sandbox (%q)", id, st)
		}
	}
}

// checkProjects checks the control plane's records: an activation is
// ended, or ready and its project's active one, on a running sandbox; a
// project points only at such an activation; an ended activation's
// sandbox is gone; every running sandbox of a project is its active
// activation's; saved state is one whole file the project names.
func (e *crashEnv) checkProjects(t *testing.T, recs []sandbox.Sandbox) {
	t.Helper()
	st := e.openStore(t)
	ctx := ctxFor(t, time.Minute)
	byID := map[string]sandbox.Sandbox{}
	for _, sb := range recs {
		byID[sb.ID] = sb
	}
	projects, _, err := st.ListProjects(ctx, "", store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	active := map[string]string{} // project -> its active activation's sandbox
	for _, p := range projects {
		if p.ActiveActivation != "" {
			a, err := st.GetActivation(ctx, p.ActiveActivation)
			switch {
			case err != nil:
				t.Errorf("project %s points at activation %s: %v", p.ID, p.ActiveActivation, err)
			case a.State != string(control.StateReady):
				t.Errorf("project %s points at activation %s, which is %s", p.ID, a.ID, a.State)
			case byID[a.SandboxID].State != sandbox.Running:
				t.Errorf("project %s's ready activation %s runs on sandbox %q, which is %q", p.ID, a.ID, a.SandboxID, byID[a.SandboxID].State)
			default:
				active[p.ID] = a.SandboxID
			}
		}
		dir := filepath.Join(e.dataDir, "state", p.ID)
		for _, name := range dirNames(t, dir) {
			if name != p.StateRef {
				t.Errorf("state/%s/%s is not the project's saved state (%q)", p.ID, name, p.StateRef)
			}
		}
		if p.StateRef != "" {
			if _, err := os.Stat(filepath.Join(dir, p.StateRef)); err != nil {
				t.Errorf("project %s's saved state: %v", p.ID, err)
			}
		}
	}
	for _, a := range e.activations(t) {
		if _, err := st.ListEvents(ctx, store.EventFilter{ActivationID: a.ID, Limit: store.MaxEventLimit}); err != nil {
			t.Errorf("events of activation %s: %v", a.ID, err)
		}
		if control.State(a.State).Terminal() {
			if sb, ok := byID[a.SandboxID]; ok {
				t.Errorf("ended activation %s (%s) left its sandbox %s (%s)", a.ID, a.State, sb.ID, sb.State)
			}
		}
	}
	for _, sb := range recs {
		if sb.ProjectID != "" && sb.State == sandbox.Running && active[sb.ProjectID] != sb.ID {
			t.Errorf("sandbox %s of project %s runs, but no live activation has it", sb.ID, sb.ProjectID)
		}
	}
}

// removeAll deletes every project, sandbox and snapshot through the API
// and checks that the host keeps nothing of them; the server stops next,
// and the data dir's leak check runs last.
func (e *crashEnv) removeAll(t *testing.T) {
	t.Helper()
	ctx := ctxFor(t, 3*time.Minute)
	for p, err := range e.c.ListProjects(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if err := e.c.DeleteProject(ctx, p.ID); err != nil {
			t.Errorf("delete project %s: %v", p.ID, err)
		}
	}
	for sb, err := range e.c.List(ctx, sdk.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Delete(ctx); err != nil {
			t.Errorf("delete sandbox %s: %v", sb.ID, err)
		}
	}
	snaps, err := e.c.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if status, body := apiDo(t, e.url, e.token, "DELETE", "/api/v1/snapshots/"+s.ID); status != http.StatusNoContent {
			t.Errorf("delete snapshot %s: %d %s", s.ID, status, body)
		}
	}
	vols, err := e.c.ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if err := e.c.DeleteVolume(ctx, v.Name); err != nil {
			t.Errorf("delete volume %s: %v", v.Name, err)
		}
	}
	if recs := e.records(t); len(recs) > 0 {
		t.Errorf("sandbox records left: %+v", recs)
	}
	for _, dir := range []string{"runc", "netns"} {
		for _, id := range dirNames(t, filepath.Join(e.dataDir, dir)) {
			if sandbox.ValidID(id) {
				t.Errorf("%s/%s left after every sandbox was deleted", dir, id)
			}
		}
	}
	if left := e.hostBefore.Leaks(leakcheck.Snapshot(e.hostScope())); len(left) > 0 {
		t.Errorf("left after every sandbox was deleted: %v", left)
	}
}

// dirNames lists a directory's entries; a missing directory has none.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

// tmpImports lists the image import files the server stages in the host's
// temp dir.
func tmpImports() []string {
	m, _ := filepath.Glob(filepath.Join(os.TempDir(), "paddock-import-*"))
	return m
}

// apiDo is an authenticated request without a body.
func apiDo(t *testing.T, base, token, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
