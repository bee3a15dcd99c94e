//go:build !unix

package standin

// The process test needs SIGTERM: Unix only.
func cleanupBinary() {}
