package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/deathsig"
	"github.com/paddock-dev/paddock/internal/netns"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: user namespaces with a mapping, mounts")
	}
}

// testBase is a range no test elsewhere uses at once (ownership is all
// that is checked, so a clash would not break this test anyway).
const testBase = 1<<30 + 7*65536

// podNamespaces starts what containerd 2 makes for a Pod with hostUsers:
// false: a user namespace owned by host root with the Pod's mapping, and
// a network namespace inside it, held by a process; it returns the pid.
func podNamespaces(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "120")
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: testBase, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: m, GidMappings: m, Setsid: true}
	child, err := deathsig.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); child.Wait() })
	return cmd.Process.Pid
}

func writeBundle(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readBundle(t *testing.T, bundle string) specs.Spec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func nsPath(s specs.Spec, typ specs.LinuxNamespaceType) string {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns.Path
		}
	}
	return ""
}

func ownerUID(t *testing.T, path string) uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var uid uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.NS_GET_OWNER_UID, uintptr(unsafe.Pointer(&uid))); e != 0 {
		t.Fatal(e)
	}
	return uid
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestPrepareSandboxAndApp: the sandbox container of a Pod whose user
// namespace root owns gets one owned by its range's first uid, with the
// same mapping, pinned under the state dir; its sysfs is bound from the
// host side and its network sysctls are written there; an app container
// of the Pod joining that namespace gets the sysfs but no new namespace;
// delete leaves nothing, twice.
func TestPrepareSandboxAndApp(t *testing.T) {
	requireRoot(t)
	old := stateDir
	stateDir = filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { stateDir = old })
	pid := podNamespaces(t)
	proc := "/proc/" + strconv.Itoa(pid) + "/ns/"
	cfg := strings.NewReplacer("/var/run/netns/cni-1", proc+"net", "/run/containerd/pinned/user", proc+"user",
		`"hostID": 65536`, `"hostID": `+strconv.Itoa(testBase)).Replace(sandboxConfig)

	bundle := writeBundle(t, cfg)
	sandbox := filepath.Join(stateDir, "sandbox")
	if err := prepare(call{command: "create", bundle: bundle, id: "sandbox"}, sandbox); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(sandbox) })
	s := readBundle(t, bundle)
	pin := filepath.Join(sandbox, userPin)
	if got := nsPath(s, specs.UserNamespace); got != pin {
		t.Fatalf("user namespace %q, want the pin %s", got, pin)
	}
	if got := ownerUID(t, pin); got != testBase {
		t.Errorf("pinned namespace owned by %d, want %d", got, testBase)
	}
	if got := nsPath(s, specs.NetworkNamespace); got != proc+"net" {
		t.Errorf("network namespace %q", got)
	}
	if m := s.Linux.UIDMappings; len(m) != 1 || m[0].HostID != testBase || m[0].Size != 65536 {
		t.Errorf("uid mappings %+v", m)
	}
	if _, ok := s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"]; ok || s.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" {
		t.Errorf("sysctls %v: the network one should be gone, the other kept", s.Linux.Sysctl)
	}
	sysfs := filepath.Join(sandbox, sysfsDir)
	if s.Mounts[1].Type != "bind" || s.Mounts[1].Source != sysfs {
		t.Errorf("sysfs mount %+v", s.Mounts[1])
	}
	var st unix.Statfs_t
	if err := unix.Statfs(sysfs, &st); err != nil || st.Type != unix.SYSFS_MAGIC {
		t.Errorf("%s: statfs %x, %v: want sysfs", sysfs, st.Type, err)
	}
	// The Pod's network namespace has no eth0 and lo only: its sysfs shows lo.
	if ents, err := os.ReadDir(filepath.Join(sysfs, "class/net")); err != nil || len(ents) != 1 || ents[0].Name() != "lo" {
		t.Errorf("sysfs of the Pod's network namespace shows %v, %v: want lo alone", ents, err)
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Errorf("ip_unprivileged_port_start in the Pod's network namespace: %q, %v", out, err)
	}

	// An app container: no annotation, joins the sandbox's namespaces.
	appCfg := strings.NewReplacer(`"io.kubernetes.cri.container-type": "sandbox"`, `"io.kubernetes.cri.container-type": "container"`,
		proc+"user", pin).Replace(cfg)
	appBundle := writeBundle(t, appCfg)
	app := filepath.Join(stateDir, "app")
	if err := prepare(call{command: "create", bundle: appBundle, id: "app"}, app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(app) })
	as := readBundle(t, appBundle)
	if got := nsPath(as, specs.UserNamespace); got != pin {
		t.Errorf("app's user namespace %q, want the sandbox's %s", got, pin)
	}
	if _, err := os.Lstat(filepath.Join(app, userPin)); err == nil {
		t.Error("the app container got a namespace of its own")
	}
	if as.Mounts[1].Source != filepath.Join(app, sysfsDir) {
		t.Errorf("app's sysfs mount %+v", as.Mounts[1])
	}

	for _, dir := range []string{app, sandbox, sandbox} {
		if err := cleanup(dir); err != nil {
			t.Errorf("cleanup %s: %v", dir, err)
		}
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("%s still there", dir)
		}
	}
	if m := mountsUnder(t, stateDir); len(m) > 0 {
		t.Errorf("left mounted: %v", m)
	}
}

// TestPrepareLeavesOthers: containers without a user namespace, with a
// mapping of another shape, or joining a namespace root owns that are not
// a Pod's sandbox are passed on as they came.
func TestPrepareLeavesOthers(t *testing.T) {
	requireRoot(t)
	old := stateDir
	stateDir = filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { stateDir = old })
	pid := podNamespaces(t)
	proc := "/proc/" + strconv.Itoa(pid) + "/ns/"
	base := strings.NewReplacer("/var/run/netns/cni-1", proc+"net", "/run/containerd/pinned/user", proc+"user",
		`"hostID": 65536`, `"hostID": `+strconv.Itoa(testBase))
	for name, cfg := range map[string]string{
		"no user namespace": `{"linux": {"namespaces": [{"type": "network"}]}}`,
		"other size":        strings.ReplaceAll(base.Replace(sandboxConfig), `"size": 65536`, `"size": 131072`),
		"not the sandbox":   strings.ReplaceAll(base.Replace(sandboxConfig), `"sandbox"`, `"container"`),
	} {
		bundle := writeBundle(t, cfg)
		if err := prepare(call{command: "create", bundle: bundle, id: "x"}, filepath.Join(stateDir, "x")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		got, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
		if !bytes.Equal(got, []byte(cfg)) {
			t.Errorf("%s: config.json rewritten:\n%s", name, got)
		}
		if _, err := os.Lstat(filepath.Join(stateDir, "x")); err == nil {
			t.Errorf("%s: a state dir was made", name)
		}
	}
}

// TestPrepareGuardsNode: create of a Pod's container installs the node
// guard in the Pod's network namespace (again on the next container,
// still one table), and the containers' root cannot remove it: a process
// in the network namespace and in the wrapper's user namespace, with every
// capability there, fails to flush nft's ruleset or iptables' chains,
// while one in the user namespace that owns the network namespace (the
// runtime's) may read it. A container without a network namespace path
// gets no guard, and the node's own namespace is refused.
func TestPrepareGuardsNode(t *testing.T) {
	requireRoot(t)
	old := stateDir
	stateDir = filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { stateDir = old })
	pid := podNamespaces(t)
	proc := "/proc/" + strconv.Itoa(pid) + "/ns/"
	cfg := strings.NewReplacer("/var/run/netns/cni-1", proc+"net", "/run/containerd/pinned/user", proc+"user",
		`"hostID": 65536`, `"hostID": `+strconv.Itoa(testBase)).Replace(sandboxConfig)
	sandbox := filepath.Join(stateDir, "sandbox")
	if err := prepare(call{command: "create", bundle: writeBundle(t, cfg), id: "sandbox"}, sandbox); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(sandbox) })
	pin := filepath.Join(sandbox, userPin)
	table := []string{"list", "table", "inet", netns.GuardTable}
	// As the runtime (the namespace's owner) would.
	owner := func(args ...string) (string, error) {
		out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(pid), "--user", "--net", "--"}, args...)...).CombinedOutput()
		return string(out), err
	}
	listed, err := owner(append([]string{"nft"}, table...)...)
	if err != nil || !strings.Contains(listed, "169.254.0.0/16") {
		t.Fatalf("the guard in the Pod's namespace: %v\n%s", err, listed)
	}
	app := filepath.Join(stateDir, "app")
	appCfg := strings.NewReplacer(`"io.kubernetes.cri.container-type": "sandbox"`, `"io.kubernetes.cri.container-type": "container"`,
		proc+"user", pin).Replace(cfg)
	if err := prepare(call{command: "create", bundle: writeBundle(t, appCfg), id: "app"}, app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(app) })
	if again, err := owner(append([]string{"nft"}, table...)...); err != nil || again != listed {
		t.Errorf("the guard after the app container's create: %v\n%s\nwant as before:\n%s", err, again, listed)
	}

	// As the container's root: joined the network namespace (runc does,
	// while still privileged), then entered the wrapper's user namespace
	// (nsenter enters the user namespace last when it leaves privilege).
	for _, args := range [][]string{
		{"nft", "flush", "ruleset"},
		{"nft", "delete", "table", "inet", netns.GuardTable},
		{"iptables", "-I", "OUTPUT", "-j", "ACCEPT"},
		{"iptables", "-F"},
	} {
		out, err := exec.Command("nsenter", append([]string{"--net=" + proc + "net", "--user=" + pin, "--"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("the container's root ran %q: %s", args, out)
		}
		t.Logf("%q as the container's root: %v: %s", args, err, bytes.TrimSpace(out))
	}
	if after, err := owner(append([]string{"nft"}, table...)...); err != nil || after != listed {
		t.Errorf("the guard after the container's tries: %v\n%s", err, after)
	}

	// The node's own namespace, and none at all.
	host := `{"linux": {"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}]}}`
	if err := prepare(call{command: "create", bundle: writeBundle(t, host), id: "host"}, filepath.Join(stateDir, "host")); err == nil {
		t.Error("a container in the node's network namespace was let through")
	}
	if out, err := exec.Command("nft", table...).CombinedOutput(); err == nil {
		t.Errorf("the node's namespace has the guard:\n%s", out)
	}
}
