//go:build !linux

package doctor

import (
	"context"
	"runtime"
)

func checks(Options) []Check {
	return []Check{{Name: "os", Run: func(context.Context) Result {
		return Result{Level: Fail, Detail: "paddock sandboxes need Linux, this is " + runtime.GOOS,
			Fix: "run paddock on a Linux host (kernel 5.11 or newer)"}
	}}}
}
