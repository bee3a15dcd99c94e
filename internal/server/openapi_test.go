package server

import (
	"bufio"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

// TestOpenAPICoversRoutes keeps api/openapi.yaml accurate: every route the
// server registers is documented, and nothing documented is missing. A
// path is below the document's server URL (/api/v1) unless the path item
// names its own server first (the probes, served at the root).
func TestOpenAPICoversRoutes(t *testing.T) {
	f, err := os.Open("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pathLine := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodLine := regexp.MustCompile(`^    (get|put|post|delete|patch):\s*$`)
	// The document's servers and a path item's own: "- url: <url>".
	serverLine := regexp.MustCompile(`^(  |      )- url: (\S+)\s*$`)
	var documented []string
	inPaths, current, base, docBase := false, "", "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "paths:":
			inPaths = true
		case !inPaths && serverLine.MatchString(line) && docBase == "":
			docBase = urlPath(t, serverLine.FindStringSubmatch(line)[2])
		case inPaths && len(line) > 0 && line[0] != ' ' && line[0] != '#':
			inPaths = false
		case !inPaths:
		case pathLine.MatchString(line):
			current, base = pathLine.FindStringSubmatch(line)[1], docBase
		case serverLine.MatchString(line):
			base = urlPath(t, serverLine.FindStringSubmatch(line)[2])
		case methodLine.MatchString(line):
			documented = append(documented, strings.ToUpper(methodLine.FindStringSubmatch(line)[1])+" "+base+current)
		}
	}
	var served []string
	for _, rt := range routeTable {
		// OpenAPI has no rest-of-path parameter: {ref...} is documented as {ref}.
		served = append(served, rt.method+" "+api.Prefix+strings.ReplaceAll(rt.path, "...}", "}"))
	}
	for _, rt := range probeTable {
		served = append(served, rt.method+" "+rt.path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("openapi.yaml documents\n  %s\nthe server serves\n  %s", strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}
}

// urlPath is the path of a server URL, without a trailing slash.
func urlPath(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("server url %q: %v", raw, err)
	}
	return strings.TrimSuffix(u.Path, "/")
}
