//go:build !linux

package fstree

import "os"

// Remove deletes path and everything below it. Only Linux runs sandboxes,
// so elsewhere it is os.RemoveAll.
func Remove(path string) error { return os.RemoveAll(path) }
