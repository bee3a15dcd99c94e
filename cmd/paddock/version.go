package main

import (
	"context"
	"flag"
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

func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the data dir serve uses (user namespaces need idmapped mounts on its filesystem)")
	if err := fs.Parse(args); err != nil {
		return usagef("doctor: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("doctor: unexpected arguments %q", fs.Args())
	}
	return doctor.Run(ctx, stdout, doctor.Options{DataDir: *dataDir})
}
