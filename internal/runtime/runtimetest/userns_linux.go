package runtimetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// needUserNS skips unless the driver gives sandboxes user namespaces.
func needUserNS(t *testing.T, d runtime.Driver) {
	t.Helper()
	if !d.Capabilities().UserNS {
		t.Skipf("driver %s runs sandboxes without user namespaces", d.Capabilities().Name)
	}
}

// hostIDs is what the host knows of a sandbox's agent: its real uid and
// the first host uid of its mapping.
type hostIDs struct {
	uid, base, size uint64
}

// agentHostPID is the host pid of the sandbox's agent: List's, or the
// harness's HostPID for a driver whose List has none of this host's.
func agentHostPID(t *testing.T, h Harness, d runtime.Driver, id string) int {
	t.Helper()
	if h.HostPID != nil {
		return h.HostPID(t, id)
	}
	list, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range list {
		if info.ID == id && info.PID != 0 {
			return info.PID
		}
	}
	t.Fatalf("sandbox %s has no running agent in List: %+v", id, list)
	return 0
}

// agentHostIDs reads the sandbox's agent's credentials on the host:
// /proc/<pid>/status (Uid: real effective saved fs) and uid_map.
func agentHostIDs(t *testing.T, h Harness, d runtime.Driver, id string) hostIDs {
	t.Helper()
	pid := agentHostPID(t, h, d, id)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out hostIDs
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			for i, x := range f {
				n, err := strconv.ParseUint(x, 10, 32)
				if err != nil {
					t.Fatalf("Uid line %q", line)
				}
				if i == 0 {
					out.uid = n
				} else if n != out.uid {
					t.Errorf("agent's uids differ on the host: %q", line)
				}
			}
		}
	}
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(uidMap))
	if len(f) != 3 || f[0] != "0" {
		t.Fatalf("agent's uid_map %q: want one range from 0", uidMap)
	}
	out.base, _ = strconv.ParseUint(f[1], 10, 32)
	out.size, _ = strconv.ParseUint(f[2], 10, 32)
	return out
}

// testUserNamespace: root in a sandbox is an unprivileged host uid, the
// first of a range of the sandbox's own, disjoint from another sandbox's.
func testUserNamespace(t *testing.T, h Harness) {
	d := h.NewDriver(t)
	needUserNS(t, d)
	a := createBox(t, d, "userns-a", defaultRes)
	b := createBox(t, d, "userns-b", defaultRes)
	for _, bx := range []*box{a, b} {
		r := bx.sh("id -u; id -g", true).mustOK(t)
		if l := lines(r.Stdout); len(l) != 2 || l[0] != "0" || l[1] != "0" {
			t.Errorf("%s: sudo id -u, id -g = %q, want 0 0", bx.id, r.Stdout)
		}
	}
	ha, hb := agentHostIDs(t, h, d, a.id), agentHostIDs(t, h, d, b.id)
	for _, h := range []hostIDs{ha, hb} {
		if h.uid == 0 {
			t.Fatalf("the agent (root inside) is host root: %+v", h)
		}
		// The agent is root inside, so it is the first id of the range.
		if h.uid != h.base || h.size < 65536 {
			t.Errorf("agent's host uid %d, mapping %d+%d: want the range's first id, 65536 ids", h.uid, h.base, h.size)
		}
	}
	if ha.base < hb.base+hb.size && hb.base < ha.base+ha.size {
		t.Errorf("two sandboxes share host ids: %d+%d and %d+%d", ha.base, ha.size, hb.base, hb.size)
	}
	// What a sandbox's root may do to its own files it still may.
	a.sh("touch /etc/x && chown 1000:1000 /etc/x && test \"$(stat -c %u:%g /etc/x)\" = 1000:1000 && "+
		"test \"$(stat -c %U /usr/bin/env)\" = root", true).mustOK(t)
}

// testUserNamespaceLimits: per-uid kernel limits are the sandbox's own.
// Sandbox A's user opens inotify instances until the kernel's per-user
// cap refuses one (bounded: fs.inotify.max_user_instances); sandbox B's
// user can still open one, as it could not if both users were one host
// uid.
func testUserNamespaceLimits(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	needUserNS(t, d)
	a := createBox(t, d, "limits-a", defaultRes)
	b := createBox(t, d, "limits-b", defaultRes)
	const hold = `import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 100000:
    if libc.inotify_init1(0) < 0:
        break
    n += 1
err = ctypes.get_errno()
print(n, err, flush=True)
time.sleep(300)
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Left running, holding the instances, until the sandbox goes.
	cmd, err := a.c.Start(ctx, agent.CommandRequest{Cmd: "python3", Args: []string{"-c", hold}})
	if err != nil {
		t.Fatal(err)
	}
	out := firstLine(ctx, t, a.c, cmd.ID)
	var n, errno int
	if _, err := fmt.Sscan(out, &n, &errno); err != nil || n == 0 || n >= 100000 || errno != 24 {
		t.Fatalf("sandbox A opened %q inotify instances: want the per-user cap, then EMFILE (24)", out)
	}
	r := b.sh(`python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); fd=l.inotify_init1(0); print(fd, ctypes.get_errno()); sys.exit(fd<0)'`, false)
	if r.exitCode() != 0 {
		t.Errorf("sandbox B cannot open an inotify instance while A holds %d: %q", n, r.Stdout)
	}
}

// firstLine follows a running command's stdout up to its first newline.
func firstLine(ctx context.Context, t *testing.T, c *agent.Client, cmdID string) string {
	t.Helper()
	out, err := c.Output(ctx, cmdID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var line []byte
	for {
		f, err := out.Next()
		if err != nil {
			t.Fatalf("output of %s ended before a line (%q): %v", cmdID, line, err)
		}
		if f.Kind == agent.FrameStdout {
			line = append(line, f.Data...)
			if i := bytes.IndexByte(line, '\n'); i >= 0 {
				return string(line[:i])
			}
		}
	}
}
