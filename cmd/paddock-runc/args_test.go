package main

import (
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want call
		ok   bool
	}{
		{"containerd create", "--root /run/containerd/runc/k8s.io --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid abc123",
			call{command: "create", root: "/run/containerd/runc/k8s.io", bundle: "/b", id: "abc123"}, true},
		{"equals and single dash", "--root=/r -debug create -b=/b --no-pivot --console-socket /s x",
			call{command: "create", root: "/r", bundle: "/b", id: "x"}, true},
		{"run detached", "run -d --bundle /b --preserve-fds 2 x", call{command: "run", bundle: "/b", id: "x"}, true},
		{"delete force", "--root /r delete --force x", call{command: "delete", root: "/r", id: "x"}, true},
		{"bundle is the working dir", "create x", call{command: "create", id: "x"}, true},
		{"other command", "--root /r start x", call{}, false},
		{"features", "features", call{}, false},
		{"unknown flag", "create --bundle /b --brand-new x", call{}, false},
		{"missing value", "create --bundle", call{}, false},
		{"no id", "create --bundle /b", call{}, false},
		{"two ids", "create --bundle /b x y", call{}, false},
		{"id with a slash", "delete ../x", call{}, false},
		{"dot id", "delete ..", call{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseArgs(strings.Fields(tc.line))
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("parseArgs(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
			}
		})
	}
}
