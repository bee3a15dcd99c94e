//go:build !linux

package diskimg

import (
	"context"
	"os"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// unsupported is every entry point's error off Linux.
var unsupported = sandbox.Errorf(sandbox.ErrUnsupported, "disk_images_unsupported", "ext4 disk images need Linux")

// Available says why images cannot work here.
func Available() string { return "ext4 disk images need Linux" }

// Format fails off Linux.
func Format(context.Context, string, int64, FormatOptions) error { return unsupported }

func clone(*os.File, string) error { return unsupported }

// Mount fails off Linux.
func Mount(string, string, bool) error { return unsupported }

// Unmount has nothing to do off Linux.
func Unmount(string) error { return nil }

// IsMountpoint is false off Linux: nothing is ever mounted.
func IsMountpoint(string) bool { return false }

// Mounted finds nothing off Linux.
func Mounted(string) (map[string]bool, error) { return map[string]bool{}, nil }

// LoopOf finds nothing off Linux.
func LoopOf(string) string { return "" }

// Stat fails off Linux.
func Stat(string) (Usage, error) { return Usage{}, unsupported }
