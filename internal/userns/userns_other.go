//go:build !linux

package userns

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("user namespaces need Linux")

// NS is a user namespace (Linux only).
type NS struct{}

// New is Linux-only.
func New(base uint32) (*NS, error) { return nil, errUnsupported }

// File is Linux-only.
func (n *NS) File() *os.File { return nil }

// Path is Linux-only.
func (n *NS) Path() string { return "" }

// Close is Linux-only.
func (n *NS) Close() error { return nil }

// Clone is Linux-only.
func Clone(path string, ns *NS) (int, error) { return -1, errUnsupported }

// As is Linux-only.
func As(base uint32, fn func() error) error { return errUnsupported }

// Probe is Linux-only.
func Probe(dir string, base uint32) error { return errUnsupported }

// FSName is Linux-only.
func FSName(magic int64) string { return "" }
