package main

import (
	"encoding/json"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// sandboxConfig is the shape of what containerd 2's CRI writes for a Pod's
// sandbox container with hostUsers: false, plus a field no runtime-spec
// knows.
const sandboxConfig = `{
  "ociVersion": "1.2.1",
  "process": {"args": ["/pause"], "cwd": "/"},
  "root": {"path": "rootfs", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
  "linux": {
    "uidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}],
    "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"},
    "namespaces": [
      {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
      {"type": "network", "path": "/var/run/netns/cni-1"},
      {"type": "user", "path": "/run/containerd/pinned/user"}
    ],
    "futureField": {"x": [1, 2]}
  },
  "futureTop": true
}`

func TestConfigRewrite(t *testing.T) {
	c, err := parseConfig(strings.NewReader(sandboxConfig))
	if err != nil {
		t.Fatal(err)
	}
	if base, ok := c.rangeBase(); !ok || base != 65536 {
		t.Errorf("rangeBase = %d, %v", base, ok)
	}
	if !c.isSandbox() {
		t.Error("not the sandbox container")
	}
	c.setUserNS("/run/paddock-runc/x/user")
	moved := c.moveNetSysctls()
	if len(moved) != 1 || moved["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("moved sysctls %v", moved)
	}
	if n, err := c.bindSysfs("/run/paddock-runc/x/sys"); n != 1 || err != nil {
		t.Errorf("bindSysfs = %d, %v", n, err)
	}
	data, err := c.marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mounts    []specs.Mount `json:"mounts"`
		FutureTop bool          `json:"futureTop"`
		Linux     struct {
			specs.Linux
			FutureField json.RawMessage `json:"futureField"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !got.FutureTop || string(got.Linux.FutureField) != `{"x":[1,2]}` {
		t.Errorf("fields unknown to the wrapper lost: %s", data)
	}
	if m := got.Mounts[1]; m.Type != "bind" || m.Source != "/run/paddock-runc/x/sys" || m.Destination != "/sys" || !strings.Contains(strings.Join(m.Options, ","), "ro") {
		t.Errorf("sysfs mount %+v", m)
	}
	if got.Mounts[0].Type != "proc" {
		t.Errorf("proc mount %+v", got.Mounts[0])
	}
	if len(got.Linux.Sysctl) != 1 || got.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" {
		t.Errorf("sysctls %v", got.Linux.Sysctl)
	}
	for _, ns := range got.Linux.Namespaces {
		if ns.Type == specs.UserNamespace && ns.Path != "/run/paddock-runc/x/user" ||
			ns.Type == specs.NetworkNamespace && ns.Path != "/var/run/netns/cni-1" {
			t.Errorf("namespace %+v", ns)
		}
	}
	if len(got.Linux.Namespaces) != 6 || len(got.Linux.UIDMappings) != 1 || got.Linux.UIDMappings[0].HostID != 65536 {
		t.Errorf("namespaces or mappings changed: %s", data)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	for name, data := range map[string]string{
		"trailing data":       `{"linux": {}} {}`,
		"not an object":       `[1]`,
		"bad namespaces":      `{"linux": {"namespaces": {"type": "user"}}}`,
		"too large":           `{"x": "` + strings.Repeat("a", maxConfig) + `"}`,
		"truncated":           `{"linux": {`,
		"bad mapping numbers": `{"linux": {"uidMappings": [{"hostID": -1}]}}`,
	} {
		if _, err := parseConfig(strings.NewReader(data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestRangeBase(t *testing.T) {
	m := func(c, h, s uint32) []specs.LinuxIDMapping {
		return []specs.LinuxIDMapping{{ContainerID: c, HostID: h, Size: s}}
	}
	for _, tc := range []struct {
		name     string
		uid, gid []specs.LinuxIDMapping
		ok       bool
	}{
		{"the kubelet's", m(0, 1<<20, 65536), m(0, 1<<20, 65536), true},
		{"host root", m(0, 0, 65536), m(0, 0, 65536), false},
		{"other size", m(0, 1<<20, 131072), m(0, 1<<20, 131072), false},
		{"gids elsewhere", m(0, 1<<20, 65536), m(0, 2<<20, 65536), false},
		{"not from 0", m(1, 1<<20, 65536), m(1, 1<<20, 65536), false},
		{"two ranges", append(m(0, 1<<20, 65536), m(65536, 2<<20, 1)...), m(0, 1<<20, 65536), false},
		{"none", nil, nil, false},
		{"past 2^32", m(0, 1<<32-65536, 65536), m(0, 1<<32-65536, 65536), false},
	} {
		c := &config{uidMap: tc.uid, gidMap: tc.gid}
		if _, ok := c.rangeBase(); ok != tc.ok {
			t.Errorf("%s: rangeBase ok = %v", tc.name, ok)
		}
	}
}
