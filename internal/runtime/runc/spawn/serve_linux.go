package spawn

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// ServeArg is the helper's argument that makes it serve requests on fd 3.
const ServeArg = "serve-spawn"

// maxFiles bounds the descriptors one request passes: the reply socket,
// stdout, stderr and a few extra files.
const maxFiles = 16

// Serve answers requests on fd 3 until paddock closes it, then waits for
// the requests in flight. The containers it started keep running; their
// init processes, its children, are reaped by this process while it lives
// and by the host's init after.
func Serve() error {
	const ctl = 3
	// Inherited without close-on-exec: no container's init may get it.
	unix.CloseOnExec(ctl)
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFiles*4))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		n, oobn, _, _, err := unix.Recvmsg(ctl, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("spawn helper: receive: %w", err)
		}
		fds, ferr := parseRights(oob[:oobn])
		if n == 0 && len(fds) == 0 {
			return nil // paddock closed its end
		}
		if ferr != nil || len(fds) < 3 {
			closeAll(fds)
			continue // not from the driver's Client: no reply socket to answer on
		}
		data := append([]byte(nil), buf[:n]...)
		wg.Go(func() { handle(data, fds) })
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// handle creates and starts one container and answers on fds[0].
func handle(data []byte, fds []int) {
	reply := os.NewFile(uintptr(fds[0]), "reply")
	defer reply.Close()
	files := make([]*os.File, 0, len(fds)-1)
	for _, fd := range fds[1:] {
		files = append(files, os.NewFile(uintptr(fd), "stdio"))
	}
	// libcontainer hands copies to the init; ours go once it started.
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	answer := func(r Reply) {
		b, _ := json.Marshal(r)
		_, _ = reply.Write(b)
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		answer(Reply{Err: "spawn helper: request: " + err.Error()})
		return
	}
	c, err := libcontainer.Create(req.StateDir, req.ID, req.Config)
	if err != nil {
		answer(Reply{Err: "libcontainer: " + err.Error()})
		return
	}
	proc := &libcontainer.Process{
		Args: req.Args, Env: req.Env, Cwd: req.Cwd,
		Stdout: files[0], Stderr: files[1], ExtraFiles: files[2:],
		Init: true,
	}
	if err := c.Run(proc); err != nil {
		answer(Reply{Err: "start agent: " + err.Error()})
		return
	}
	pid, err := proc.Pid()
	if err != nil {
		answer(Reply{Err: "start agent: " + err.Error()})
		return
	}
	answer(Reply{PID: pid})
	// The init is this process's child: reap it when it ends. The
	// goroutine ends with the container (or with this process).
	go func() { _, _ = proc.Wait() }()
}
