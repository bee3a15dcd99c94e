// Command pause is the sandbox ("pause") container of the test cluster's
// Pods: it holds the Pod's namespaces open, reaps the zombies it inherits as
// PID 1 of a shared PID namespace, and exits on SIGINT or SIGTERM. It is
// built static and packed into an image by hack/k8s/up.sh, because the
// cluster has no registry to pull the usual one from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
