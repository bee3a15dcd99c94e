//go:build linux

package seccompgen_test

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/agent/seccompgen"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestGeneratedFilterCurrent: the filter compiled into the agent is the one
// the profile and the compiler give today, and its file is exactly what
// gen writes. When this fails, run `go generate ./internal/agent` (on
// amd64) and commit the result.
func TestGeneratedFilterCurrent(t *testing.T) {
	want, err := seccompgen.Filter(sandbox.Capabilities)
	if err != nil {
		t.Fatal(err)
	}
	got, err := agent.SeccompFilter()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the agent's seccomp filter (%d instructions) differs from the compiled profile (%d): run go generate ./internal/agent", len(got), len(want))
	}
	if runtime.GOARCH != "amd64" {
		return
	}
	src, err := seccompgen.Source(runtime.GOARCH, want)
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join("..", "seccomp_filter_linux_amd64.go"))
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != string(src) {
		t.Fatal("seccomp_filter_linux_amd64.go is not what gen writes: run go generate ./internal/agent")
	}
}

func TestProgramSize(t *testing.T) {
	prog, err := seccompgen.Program(sandbox.Capabilities)
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) < 50 || len(prog) > seccompgen.MaxInstructions {
		t.Fatalf("program has %d instructions", len(prog))
	}
	// The capability set changes the profile: CAP_SYS_ADMIN allows mount.
	more, err := seccompgen.Program(append(slices.Clone(sandbox.Capabilities), "CAP_SYS_ADMIN"))
	if err != nil {
		t.Fatal(err)
	}
	if len(more) <= len(prog) {
		t.Fatalf("CAP_SYS_ADMIN gave %d instructions, not more than %d", len(more), len(prog))
	}
}
