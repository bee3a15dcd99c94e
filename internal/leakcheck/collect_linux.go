package leakcheck

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

const cgroupRoot = "/sys/fs/cgroup"

func collect(scope Scope) []string {
	var out []string
	out = append(out, mounts(scope)...)
	out = append(out, loops(scope)...)
	out = append(out, cgroupDirs(scope)...)
	out = append(out, procs(scope)...)
	if scope.Children {
		out = append(out, netns()...)
	}
	if scope.LinkPrefix != "" {
		out = append(out, links(scope.LinkPrefix)...)
	}
	return out
}

// links lists this namespace's interfaces named with prefix. Removing a
// veth also removes its addresses and routes, so the name is the whole check.
func links(prefix string) []string {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return []string{"/sys/class/net unreadable: " + err.Error()}
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, "link "+e.Name())
		}
	}
	return out
}

// mounts lists mount points (and nsfs pins anywhere) from mountinfo.
func mounts(scope Scope) []string {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return []string{"mountinfo unreadable: " + err.Error()}
	}
	var out []string
	for _, m := range infos {
		mp, fstype := m.Mountpoint, m.FSType
		match := scope.Children && fstype == "nsfs"
		if len(scope.Dirs) == 0 && len(scope.IDs) == 0 {
			match = match || strings.Contains(mp, "paddock")
		}
		// Drivers keep a sandbox's mounts below a directory named by its id.
		if len(scope.IDs) > 0 {
			for _, comp := range strings.Split(mp, "/") {
				if comp != "" && inIDs(scope, comp) {
					match = true
				}
			}
		}
		for _, d := range scope.Dirs {
			if mp == d || strings.HasPrefix(mp, strings.TrimSuffix(d, "/")+"/") {
				match = true
			}
		}
		if match {
			out = append(out, "mount "+fstype+" "+mp)
		}
	}
	return out
}

// loops lists loop devices backed by a file below scope.Dirs (no Dirs:
// a file whose path contains "paddock"): a volume's image still attached.
func loops(scope Scope) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		back := strings.TrimSpace(string(b))
		match := len(scope.Dirs) == 0 && strings.Contains(back, "paddock")
		for _, d := range scope.Dirs {
			match = match || strings.HasPrefix(back, strings.TrimSuffix(d, "/")+"/")
		}
		if match {
			out = append(out, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" backed by "+back)
		}
	}
	return out
}

// cgroupDirs lists paddock/<id> dirs in every v1 hierarchy and in v2.
func cgroupDirs(scope Scope) []string {
	var out []string
	hier, _ := os.ReadDir(cgroupRoot)
	roots := []string{cgroupRoot} // pure v2
	for _, h := range hier {
		if h.IsDir() {
			roots = append(roots, filepath.Join(cgroupRoot, h.Name()))
		}
	}
	for _, r := range roots {
		base := filepath.Join(r, "paddock")
		entries, err := os.ReadDir(base)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() || !inIDs(scope, e.Name()) {
				continue
			}
			out = append(out, "cgroup "+filepath.Join(base, e.Name()))
		}
	}
	return out
}

func inIDs(scope Scope, id string) bool {
	if len(scope.IDs) == 0 {
		return true
	}
	for _, x := range scope.IDs {
		if x == id || strings.HasSuffix(x, "*") && strings.HasPrefix(id, strings.TrimSuffix(x, "*")) {
			return true
		}
	}
	return false
}

// procs lists processes in paddock/ cgroups (any host process) and, with
// Children, this process's children.
func procs(scope Scope) []string {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cg, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err != nil {
			continue
		}
		state, parent := stat(pid)
		if state == 'Z' && parent == 1 {
			// Dead, and init's to reap: what a sandbox whose paddock was
			// killed (and which a new paddock stopped) leaves until init
			// gets to it, which may take seconds on a minimal init.
			continue
		}
		if id, ok := paddockCgroup(cg); ok && inIDs(scope, id) {
			out = append(out, "process "+e.Name()+" "+comm(pid)+" in cgroup paddock/"+id)
			continue
		}
		if scope.Children && parent == self {
			ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/net")
			out = append(out, "child process "+e.Name()+" "+comm(pid)+" "+ns)
		}
	}
	return out
}

// paddockCgroup finds "/paddock/<id>" in a /proc/<pid>/cgroup file.
func paddockCgroup(data []byte) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		_, path, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		_, path, _ = strings.Cut(path, ":")
		if rest, ok := strings.CutPrefix(path, "/paddock/"); ok {
			id, _, _ := strings.Cut(rest, "/")
			return id, true
		}
	}
	return "", false
}

func comm(pid int) string {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(data))
}

// stat returns a process's state letter and parent pid (0 and 0 if gone).
func stat(pid int) (byte, int) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || f[0] == "" {
		return 0, 0
	}
	n, _ := strconv.Atoi(f[1])
	return f[0][0], n
}

// netns lists network namespaces this process pins through an open fd
// (other pins show up as nsfs mounts or as processes).
func netns() []string {
	fds, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "net:[") {
			out = append(out, "netns fd "+link)
		}
	}
	return out
}
