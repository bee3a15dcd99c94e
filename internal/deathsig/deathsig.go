// Package deathsig runs child processes that are SIGKILLed when paddock
// (or a test binary) dies, without being killed while it lives.
//
// Linux's parent-death signal (PR_SET_PDEATHSIG, Go's
// SysProcAttr.Pdeathsig) fires when the thread that forked the child
// exits, not the process. Go retires a thread whenever a goroutine that
// locked it returns without unlocking, which the namespace helpers do on
// purpose (a thread left in another namespace must not run other
// goroutines): a child forked on such a thread is killed mid-run. Here the
// fork runs on a locked thread held until the child is reaped, so that
// thread outlives the child.
package deathsig

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Run runs cmd to its end, as cmd.Run, and the child gets SIGKILL if this
// process dies first.
func Run(cmd *exec.Cmd) error {
	arm(cmd)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Run()
}

// Child is a started process; Wait returns its end.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd, which gets SIGKILL if this process dies first. A
// goroutine holds the forking thread until the child is reaped: the
// caller must not call cmd.Wait, and ends the goroutine by ending the
// child (kill it, or let it exit) and then waiting on Done or Wait.
func Start(cmd *exec.Cmd) (*Child, error) {
	arm(cmd)
	c := &Child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", cmd.Path, err)
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for the child to exit and returns cmd.Wait's error.
func (c *Child) Wait() error {
	<-c.done
	return c.err
}
