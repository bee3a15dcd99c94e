//go:build !linux

package tartest

import "syscall"

// The BSDs name a stat's times differently; tartest's callers run on Linux.
func mtime(st *syscall.Stat_t) int64 { return st.Mtimespec.Nano() }
func ctime(st *syscall.Stat_t) int64 { return st.Ctimespec.Nano() }
