//go:build !linux

package agent

import (
	"fmt"
	"io"
	"os"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Protect is only available on Linux.
func Protect() error {
	return fmt.Errorf("agent: protect: %w on this OS", sandbox.ErrUnsupported)
}

// OutputWriter is only available on Linux.
func OutputWriter(f *os.File) (io.Writer, error) {
	return nil, fmt.Errorf("agent: output writer: %w on this OS", sandbox.ErrUnsupported)
}
