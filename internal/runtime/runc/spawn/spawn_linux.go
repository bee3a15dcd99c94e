// Package spawn starts libcontainer containers from a small helper process,
// paddock-init, instead of from paddock itself.
//
// libcontainer sets up every container by re-executing the binary of the
// process that calls it ("<exe> init"). From paddock that is a 30 MB binary
// whose Go runtime and package initialisation run again in every sandbox
// start (about 14 ms of CPU and 300 page faults more than a small binary
// here). The driver therefore keeps one paddock-init process (cmd/paddock-init,
// which links only libcontainer) and asks it to create and start each
// container: libcontainer then re-executes paddock-init. Everything else
// (state, signals, stats, destroy) the driver does itself from the state
// directory, as it does for sandboxes an earlier paddock started.
//
// The protocol runs over a SOCK_SEQPACKET socketpair that only paddock and
// its helper hold: one message per request (JSON, with the container's
// stdio and extra files as SCM_RIGHTS) and a socket of its own for the
// answer. The helper reaps the containers' init processes it started, and
// exits when paddock closes its end (or dies).
package spawn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// Request asks the helper to create container ID in StateDir with Config and
// run its init process.
type Request struct {
	StateDir string          `json:"stateDir"`
	ID       string          `json:"id"`
	Config   *configs.Config `json:"config"`
	Args     []string        `json:"args"`
	Env      []string        `json:"env"`
	Cwd      string          `json:"cwd"`
}

// Reply is the helper's answer: the init's host pid, or why it failed.
type Reply struct {
	PID int    `json:"pid,omitempty"`
	Err string `json:"err,omitempty"`
}

// maxMessage bounds one request (a container config is a few KiB).
const maxMessage = 1 << 20

// answerTimeout bounds one start in the helper (a start takes tens of
// milliseconds, seconds under a burst).
const answerTimeout = 2 * time.Minute

// Client is paddock's end of one helper process.
type Client struct {
	path string

	mu     sync.Mutex
	conn   *os.File  // guarded by mu: the control socket; nil until started
	cmd    *exec.Cmd // guarded by mu
	closed bool      // guarded by mu
}

// NewClient returns a client of the helper binary at path; the helper
// starts on the first Start.
func NewClient(path string) *Client { return &Client{path: path} }

// ensure starts the helper if it is not running (again, after it died).
func (c *Client) ensure() (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("spawn helper: closed")
	}
	if c.conn != nil {
		return c.conn, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spawn helper: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "spawn"), os.NewFile(uintptr(fds[1]), "spawn-helper")
	defer theirs.Close()
	cmd := exec.Command(c.path, ServeArg)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	// Nothing of paddock's environment. One P: the helper's Go code is
	// small and its threads mostly wait in syscalls, where idle Ps would
	// only spin; libcontainer hands the setting on to each container's
	// init, whose Go runtime then spins less too.
	cmd.Env = []string{"GOMAXPROCS=1"}
	// A session of its own: nothing aimed at paddock's process group
	// reaches it. No Pdeathsig: it is bound to the thread that forks, and
	// Go retires threads; the helper exits on its socket's EOF instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("spawn helper: start %s: %w", c.path, err)
	}
	c.conn, c.cmd = ours, cmd
	go func() { _ = cmd.Wait() }() // reaps it; Close or its death ends this
	return ours, nil
}

// drop forgets conn after an error and kills its helper, so the next
// Start begins a new one.
func (c *Client) drop(conn *os.File) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		c.conn.Close()
		_ = c.cmd.Process.Kill()
		c.conn, c.cmd = nil, nil
	}
}

// Start asks the helper to create and start the container; files become
// the init's stdout, stderr and extra files (fd 3 on) in that order.
func (c *Client) Start(ctx context.Context, req Request, stdout, stderr *os.File, extra ...*os.File) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	if len(data) > maxMessage {
		return 0, fmt.Errorf("spawn: request of %d bytes", len(data))
	}
	conn, err := c.ensure()
	if err != nil {
		return 0, err
	}
	// The answer comes on a socket of this request's own, so concurrent
	// requests need no dispatcher.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("spawn: socketpair: %w", err)
	}
	replyR := os.NewFile(uintptr(fds[0]), "spawn-reply")
	replyW := os.NewFile(uintptr(fds[1]), "spawn-reply-w")
	defer replyR.Close()
	send := []int{int(replyW.Fd()), int(stdout.Fd()), int(stderr.Fd())}
	for _, f := range extra {
		send = append(send, int(f.Fd()))
	}
	err = unix.Sendmsg(int(conn.Fd()), data, unix.UnixRights(send...), nil, 0)
	replyW.Close()
	if err != nil {
		c.drop(conn)
		return 0, fmt.Errorf("spawn: send request: %w", err)
	}
	rc, err := net.FileConn(replyR)
	if err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	defer rc.Close()
	// Not ctx's deadline: as with libcontainer in-process, a start runs to
	// its end, so the caller's clean-up never races a start still under
	// way. A helper that takes longer than answerTimeout is killed, which
	// ends its starts too.
	rc.SetReadDeadline(time.Now().Add(answerTimeout))
	buf := make([]byte, 64<<10)
	n, err := rc.Read(buf)
	if err != nil {
		c.drop(conn) // EOF: it died with the request; timeout: killed here
		return 0, fmt.Errorf("spawn: no answer from the helper: %w", err)
	}
	var rep Reply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		return 0, fmt.Errorf("spawn: answer: %w", err)
	}
	if rep.Err != "" {
		return 0, errors.New(rep.Err)
	}
	return rep.PID, nil
}

// Close ends the helper: it finishes the requests it has, then exits.
// Containers keep running.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.cmd = nil, nil
	return err
}
