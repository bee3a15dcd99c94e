package server

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPICoversRoutes keeps api/openapi.yaml accurate: every route the
// server registers is documented, and nothing documented is missing.
func TestOpenAPICoversRoutes(t *testing.T) {
	f, err := os.Open("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pathLine := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodLine := regexp.MustCompile(`^    (get|put|post|delete|patch):\s*$`)
	var documented []string
	inPaths, current := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && len(line) > 0 && line[0] != ' ' && line[0] != '#':
			inPaths = false
		case !inPaths:
		case pathLine.MatchString(line):
			current = pathLine.FindStringSubmatch(line)[1]
		case methodLine.MatchString(line):
			documented = append(documented, strings.ToUpper(methodLine.FindStringSubmatch(line)[1])+" "+current)
		}
	}
	var served []string
	for _, rt := range routeTable {
		// OpenAPI has no rest-of-path parameter: {ref...} is documented as {ref}.
		served = append(served, rt.method+" "+strings.ReplaceAll(rt.path, "...}", "}"))
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("openapi.yaml documents\n  %s\nthe server serves\n  %s", strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}
}
