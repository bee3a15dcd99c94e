package deathsig

import (
	"os/exec"
	"syscall"
)

// arm sets the parent-death signal on cmd, keeping its other attributes.
func arm(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
