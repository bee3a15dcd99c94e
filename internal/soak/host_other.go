//go:build !linux

package soak

import "errors"

var errNotLinux = errors.New("soak: the server's figures and host leaks are read from Linux's /proc")

// ProcHost is Linux-only; see host_linux.go.
type ProcHost struct{}

var _ Host = (*ProcHost)(nil)

// NewProcHost fails off Linux.
func NewProcHost(int) (*ProcHost, error) { return nil, errNotLinux }

// Sample implements Host.
func (*ProcHost) Sample() (Process, error) { return Process{}, errNotLinux }

// Leaks implements Host.
func (*ProcHost) Leaks([]string) []string { return nil }

// ServerPID fails off Linux.
func ServerPID(string) (int, error) { return 0, errNotLinux }
