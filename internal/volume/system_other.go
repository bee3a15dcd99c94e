//go:build !linux

package volume

import (
	"context"
	"io/fs"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

var errUnsupported = sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "volumes are unsupported on this OS: they need Linux")

type otherSystem struct{}

func newSystem() system { return otherSystem{} }

// Available says why volumes cannot work on this host.
func Available() string { return "volumes need Linux" }

func (otherSystem) format(context.Context, string, int64, string) error { return errUnsupported }
func (otherSystem) mount(string, string) error                          { return errUnsupported }
func (otherSystem) unmount(string) error                                { return nil }
func (otherSystem) mounted(string) (map[string]bool, error)             { return map[string]bool{}, nil }
func (otherSystem) emptyDir(string, string) (bool, error)               { return false, errUnsupported }
func (otherSystem) chownDir(string, string, int, int) error             { return errUnsupported }

func allocated(fi fs.FileInfo) int64            { return fi.Size() }
func owner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }
