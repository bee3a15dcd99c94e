// Command genmanifests writes deploy/manifests/paddock.yaml: the chart
// rendered with its default values. Run through `go generate ./deploy`
// (from the deploy directory); TestManifestsMatchChart fails until it has
// run after a chart change.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/deploy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "genmanifests:", err)
		os.Exit(1)
	}
}

func run() error {
	objs, err := deploy.Render(deploy.DefaultRelease, nil)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(deploy.ManifestsFile), 0o755); err != nil {
		return err
	}
	return os.WriteFile(deploy.ManifestsFile, deploy.Manifests(objs), 0o644)
}
