//go:build linux

// Command paddock-init is the small helper the runc driver starts sandboxes
// from (see internal/runtime/runc/spawn): libcontainer re-executes it as
// each container's init, which costs far less than re-executing paddock.
// It links only libcontainer; keep it that way. paddock runs it; it is not
// for people to run.
package main

import (
	"fmt"
	"os"
	"runtime"

	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroup manager
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // the C half of "init"

	"github.com/paddock-dev/paddock/internal/runtime/runc/spawn"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "init":
			libcontainer.Init() // never returns
		case spawn.ServeArg:
			// As in runc.Init: libcontainer must never join a container's
			// mount namespace from the main thread, which Go cannot retire.
			runtime.LockOSThread()
			if err := spawn.Serve(); err != nil {
				fmt.Fprintln(os.Stderr, "paddock-init:", err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintln(os.Stderr, "paddock-init: paddock's sandbox helper; paddock runs it")
	os.Exit(2)
}
