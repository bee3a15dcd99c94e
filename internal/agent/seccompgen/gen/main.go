//go:build linux

// Command gen writes the agent's compiled seccomp filter for the machine's
// architecture (go generate ./internal/agent runs it on amd64).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/paddock-dev/paddock/internal/agent/seccompgen"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func main() {
	out := flag.String("o", "", "file to write (default: standard output)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "seccompgen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if runtime.GOARCH != "amd64" {
		// The agent builds the other architectures' filters at start; the
		// profile is evaluated for the architecture it runs on.
		return fmt.Errorf("generate on amd64, not %s", runtime.GOARCH)
	}
	filter, err := seccompgen.Filter(sandbox.Capabilities)
	if err != nil {
		return err
	}
	src, err := seccompgen.Source(runtime.GOARCH, filter)
	if err != nil {
		return err
	}
	if out == "" {
		_, err = os.Stdout.Write(src)
		return err
	}
	return os.WriteFile(out, src, 0o644)
}
