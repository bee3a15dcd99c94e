//go:build linux && !amd64

package main

import "github.com/paddock-dev/paddock/internal/escape/wire"

// checkIOPort: port I/O exists only on x86.
func checkIOPort(cfg *config) wire.Result {
	return wire.Result{Check: "ioport", Status: wire.Skipped, Detail: "no I/O ports on this architecture"}
}

// checkX32: the x32 ABI exists only on amd64.
func checkX32(cfg *config) wire.Result {
	return wire.Result{Check: "seccomp-x32", Status: wire.Skipped, Detail: "no x32 ABI on this architecture"}
}
