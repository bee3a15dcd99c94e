// Package deploy holds paddock's Helm chart (helm/paddock) and renders it
// with Helm's own Go library: for the plain manifests in manifests/ (which
// a test keeps equal to the chart), for the chart's tests, and for the test
// that installs it into a real cluster. No paddock binary imports it.
package deploy

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
)

//go:generate go run ./genmanifests

// ChartDir is the chart's directory, relative to this package's.
const ChartDir = "helm/paddock"

// ManifestsFile is the plain manifests' file, relative to this package's
// directory: the chart rendered with its default values for DefaultRelease.
const ManifestsFile = "manifests/paddock.yaml"

// The chart's files, "all:" so that _helpers.tpl and .helmignore come too.
//
//go:embed all:helm/paddock
var chartFiles embed.FS

// Release names an installation: its name and its namespace (paddock's
// own; the sandboxes' is a value).
type Release struct {
	Name, Namespace string
}

// DefaultRelease is the release manifests/ is rendered for.
var DefaultRelease = Release{Name: "paddock", Namespace: "paddock"}

// Chart loads the chart from the files embedded in this package.
func Chart() (*chart.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(chartFiles, ChartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFiles.ReadFile(path)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(path, ChartDir+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load the chart: %w", err)
	}
	return c, nil
}

// Object is one rendered Kubernetes object: its kind, name, the template
// it came from, and its YAML.
type Object struct {
	Kind, Name, Template, YAML string
}

// Render renders the chart for rel with values over the chart's defaults
// (nil: the defaults) and returns its objects in the order Helm installs
// them (namespaces, accounts and secrets before what uses them). The chart
// has no hooks; NOTES.txt is not an object and is left out.
func Render(rel Release, values map[string]any) ([]Object, error) {
	c, err := Chart()
	if err != nil {
		return nil, err
	}
	vals, err := util.ToRenderValues(c, values, common.ReleaseOptions{Name: rel.Name, Namespace: rel.Namespace, Revision: 1, IsInstall: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return nil, fmt.Errorf("render the chart: %w", err)
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("sort the rendered objects: %w", err)
	}
	if len(hooks) > 0 {
		return nil, errors.New("the chart renders hooks, which plain manifests cannot express")
	}
	objs := make([]Object, 0, len(manifests))
	for _, m := range manifests {
		if m.Head == nil || m.Head.Kind == "" {
			return nil, fmt.Errorf("%s: a document without a kind", m.Name)
		}
		name := ""
		if m.Head.Metadata != nil {
			name = m.Head.Metadata.Name
		}
		objs = append(objs, Object{Kind: m.Head.Kind, Name: name, Template: m.Name, YAML: strings.TrimSpace(m.Content) + "\n"})
	}
	return objs, nil
}

// Manifests is objs as one multi-document YAML file, each object under a
// comment naming its template: what manifests/ holds.
func Manifests(objs []Object) []byte {
	var b strings.Builder
	b.WriteString("# Generated from deploy/helm/paddock with its default values (release \"" + DefaultRelease.Name +
		"\", namespace \"" + DefaultRelease.Namespace + "\"): do not edit.\n# Regenerate: go generate ./deploy\n")
	for _, o := range objs {
		b.WriteString("---\n# Source: " + o.Template + "\n" + o.YAML)
	}
	return []byte(b.String())
}
