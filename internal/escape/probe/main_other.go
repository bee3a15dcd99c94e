//go:build !linux

// Command probe is paddock's escape battery; it runs inside Linux
// sandboxes only (see main_linux.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "probe: Linux only")
	os.Exit(2)
}
