//go:build !linux

package deathsig

import "os/exec"

// arm does nothing: only Linux has a parent-death signal that Go sets.
// Children there outlive this process if it dies.
func arm(*exec.Cmd) {}
