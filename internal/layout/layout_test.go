package layout

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/paddock-dev/paddock"

// rule forbids a package (and everything it links, when deep) to import
// the listed prefixes. stdlibOnly allows nothing but the standard library
// and the listed exceptions.
type rule struct {
	pkg        string
	why        string
	deep       bool     // check every package it links, not just its own imports
	stdlibOnly bool     // only the standard library (and allow) may appear
	allow      []string // with stdlibOnly: these module packages too
	deny       []string // import path prefixes it must not reach
}

var rules = []rule{
	{pkg: "api", why: "wire types others import: stdlib only", stdlibOnly: true},
	{pkg: "sdk", why: "the Go client: api and the stdlib only", deep: true, stdlibOnly: true, allow: []string{"api"}},
	{pkg: "internal/sandbox", why: "domain types at the bottom of the tree", stdlibOnly: true},
	{pkg: "cmd/paddock-agent", why: "the static in-sandbox agent links nothing of the host side", deep: true,
		deny: []string{"github.com/opencontainers/runc", "internal/node", "internal/server", "internal/store", "internal/image",
			"internal/runtime", "internal/netns", "internal/control", "internal/proxy", "internal/auth", "internal/daemon", "k8s.io"}},
	{pkg: "internal/runtime", why: "drivers know no image store or registry client", deep: true,
		deny: []string{"internal/image", "github.com/google/go-containerregistry"}},
	{pkg: "internal/runtime/kubernetes", why: "a driver: no image store or registry client (the node hands it a reference), nothing above the runtime layer, no other driver", deep: true,
		deny: []string{"internal/image", "github.com/google/go-containerregistry", "internal/node", "internal/daemon", "internal/server",
			"internal/store", "internal/control", "internal/runtime/runc", "internal/runtime/gvisor"}},
	{pkg: "internal/node", why: "the sandbox layer knows no auth, store, API, control plane or proxy", deep: true,
		deny: []string{"internal/auth", "internal/store", "internal/server", "internal/control", "internal/proxy", "internal/daemon", "internal/pool"}},
	{pkg: "internal/pool", why: "pools sit on node alone: the API, control plane and store reach them through the daemon", deep: true,
		deny: []string{"internal/auth", "internal/store", "internal/server", "internal/control", "internal/proxy", "internal/daemon"}},
	{pkg: "internal/server", why: "the API drives sandboxes through interfaces, never node", deep: true,
		deny: []string{"internal/node", "internal/runtime/runc", "internal/daemon"}},
	{pkg: "internal/store", why: "the store interface and backends sit below the layers that use them", deep: true,
		deny: []string{"internal/node", "internal/server", "internal/control", "internal/daemon", "internal/runtime"}},
	{pkg: "internal/control", why: "the control plane reaches sandboxes through its own interface", deep: true,
		deny: []string{"internal/node", "internal/server", "internal/daemon", "internal/runtime/runc"}},
	{pkg: "internal/server/compat/e2b/envd", why: "envd drives sandboxes through its Sandboxes interface and the agent client", deep: true,
		deny: []string{"internal/node", "internal/runtime/runc", "internal/daemon", "internal/store", "internal/control"}},
	{pkg: "internal/server/compat/e2b/envd", why: "envd's messages are paddock's own plain structs with a JSON codec: no generated protobuf code",
		deny: []string{"google.golang.org/protobuf"}},
	{pkg: "internal/web", why: "the dashboard reads only through the API (the SDK against its handler), never the layers behind it",
		deny: []string{"internal/node", "internal/server", "internal/store", "internal/control", "internal/daemon", "internal/runtime",
			"internal/pool", "internal/admission", "internal/metering", "internal/events"}},
	{pkg: "cmd/paddock", why: "Helm's library is the chart's tests' (package deploy), never in the binary", deep: true,
		deny: []string{"helm.sh/helm", "deploy"}},
	{pkg: "internal/proxy", why: "the port proxy knows sandboxes only through its Resolver", deep: true,
		deny: []string{"internal/node", "internal/server", "internal/control", "internal/daemon", "internal/store", "internal/auth"}},
}

// listDeps returns the import paths pkg reaches: its own imports, or with
// deep every package it links, each with whether it is standard.
func listDeps(t *testing.T, pkg string, deep bool) map[string]bool {
	t.Helper()
	args := []string{"list", "-f", `{{range .Imports}}{{.}}{{"\n"}}{{end}}`, module + "/" + pkg}
	if deep {
		args = []string{"list", "-deps", "-f", `{{.ImportPath}}`, module + "/" + pkg}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	paths := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); p != "" && p != module+"/"+pkg {
			paths[p] = true
		}
	}
	std := exec.Command("go", "list", "std")
	stdOut, err := std.Output()
	if err != nil {
		t.Fatalf("go list std: %v", err)
	}
	stdSet := map[string]bool{}
	for _, p := range strings.Fields(string(stdOut)) {
		stdSet[p] = true
	}
	for p := range paths {
		paths[p] = stdSet[p] || strings.HasPrefix(p, "vendor/") || strings.HasPrefix(p, "internal/")
	}
	return paths
}

// TestImportRules holds DESIGN.md's layering: imports point down.
func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			reported := map[string]bool{} // one error per denied entry
			deps := listDeps(t, r.pkg, r.deep)
			for _, dep := range slices.Sorted(maps.Keys(deps)) {
				rel := strings.TrimPrefix(dep, module+"/")
				if r.stdlibOnly && !deps[dep] && !slices.Contains(r.allow, rel) {
					t.Errorf("%s imports %s: %s", r.pkg, dep, r.why)
				}
				for _, d := range r.deny {
					if denied(dep, d) && !reported[d] {
						reported[d] = true
						t.Errorf("%s reaches %s (%s): %s", r.pkg, d, dep, r.why)
					}
				}
			}
		})
	}
}

// denied matches dep against a deny entry: an external module path prefix
// (it has a dot), or a package of this module and everything below it.
func denied(dep, d string) bool {
	if strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
		return dep == d || strings.HasPrefix(dep, d+"/")
	}
	full := module + "/" + d
	return dep == full || strings.HasPrefix(dep, full+"/")
}

// testOnly are packages of test support: _test.go files import them,
// production code never does, so no binary links a fake.
var testOnly = []string{"internal/fake", "internal/web/webtest"}

// TestFakeOnlyInTests holds that no non-test file imports a test-support
// package (go list's Imports leave test files out).
func TestFakeOnlyInTests(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		for _, dep := range f[1:] {
			for _, only := range testOnly {
				if dep == module+"/"+only {
					t.Errorf("%s imports %s, which only tests may import", f[0], dep)
				}
			}
		}
	}
}

// TestEveryPackageHasDoc keeps the house rule that every package says what
// it is for in a package comment.
func TestEveryPackageHasDoc(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		documented[dir] = documented[dir] || f.Doc != nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, ok := range documented {
		if !ok {
			rel, _ := filepath.Rel(root, dir)
			t.Errorf("package %s has no package comment", rel)
		}
	}
}
