package main

import (
	"context"
	"io"
	"runtime/debug"

	"github.com/paddock-dev/paddock/internal/doctor"
)

// buildVersion is set by the release build (-ldflags "-X main.buildVersion=v1.2.3").
var buildVersion = ""

// version is the release version, else the VCS revision Go recorded.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}

func doctorCmd(ctx context.Context, stdout io.Writer) error {
	return doctor.Run(ctx, stdout)
}
