package runtimetest

import (
	"archive/tar"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Harness is what a driver's test gives the suite: the driver, and how to
// prepare what a sandbox takes from outside the driver the way the node
// prepares it for that driver (an image's layers, a volume, a network).
// A nil fixture skips its case with the reason, so a driver under
// construction can run the rest; every shipped driver provides them all.
type Harness struct {
	// NewDriver must give each call its own data dir and close the driver
	// in t.Cleanup. Required.
	NewDriver func(t *testing.T) runtime.Driver
	// Image makes an image of layers (lowest first) ready for a Spec's
	// Rootfs, as the node resolves one from its image store.
	Image func(t *testing.T, layers ...v1.Layer) *runtime.Rootfs
	// Volume returns a host directory, holding the file "seed" (content
	// "seed\n"), that a Spec may mount read-write, as a named volume is.
	Volume func(t *testing.T) string
	// VolumeMount, for a driver whose sandboxes mount claims instead of
	// host directories (Kubernetes), is the mount of the directory Volume
	// made for driver d's sandboxes (a claim bound to a volume at it, in
	// d's namespace); nil mounts the directory itself.
	VolumeMount func(t *testing.T, d runtime.Driver, dir string) runtime.Mount
	// Network prepares a network for sandbox id, as netns does for node,
	// and reports the sandbox's address the host reaches it at.
	Network func(t *testing.T, id string) (*runtime.NetworkSpec, string)
	// EmulatedDevices says, for a driver whose sandbox kernel serves
	// device nodes from its own emulated devices and never opens the
	// host's (gVisor's sentry), why a volume's nodev is not a mount option
	// the sandbox sees there. The Volume case then checks the property
	// nodev guards (no host device through a volume) and not the option.
	EmulatedDevices string
	// PlainVolumeMounts says, for a driver that cannot mount a volume
	// nosuid and nodev (a Pod's claim is mounted by the kubelet and the
	// container runtime, with no such options), what guards the
	// properties instead. The Volume case then checks the properties (a
	// set-user-ID file raises no one, no host device opens through a
	// node in the volume) and not the options.
	PlainVolumeMounts string
	// HostPID, for a driver whose List reports no pid of this host
	// (Kubernetes: the agent's inside its Pod, on a node that is this
	// host in tests), is the host pid of a running sandbox's agent, for
	// the cases that look at its ids from the host side.
	HostPID func(t *testing.T, id string) int
	// Restore makes the root filesystem of a sandbox started from a
	// snapshot layer (a directory Snapshot filled) over base, the root
	// filesystem of the snapshotted sandbox (nil: the host image), as the
	// node resolves a snapshot. nil: the layer's directory over base's
	// Lowers (OnHost for the host image), for a driver that mounts layers
	// of this host.
	Restore func(t *testing.T, base *runtime.Rootfs, layer string) *runtime.Rootfs
	// Known names the cases (as Run names them: "Volume", "Escape") a driver
	// under construction is known to fail, each with the reason; they are
	// skipped with it, so the rest keeps guarding the driver. Every
	// shipped driver has none.
	Known map[string]string
}

// testCapabilities: the driver says what it is and its optional powers
// match its methods, never faked.
func testCapabilities(t *testing.T, h Harness) {
	d := h.NewDriver(t)
	c := d.Capabilities()
	if c.Name == "" {
		t.Error("Capabilities has no Name")
	}
	if c.CgroupVersion != 1 && c.CgroupVersion != 2 {
		t.Errorf("CgroupVersion %d, want 1 or 2", c.CgroupVersion)
	}
	if !c.Seccomp {
		t.Error("Seccomp is false: every driver confines syscalls")
	}
	_, snap := d.(runtime.Snapshotter)
	if c.Snapshot != snap {
		t.Errorf("Capabilities.Snapshot = %v, but the driver implements Snapshotter: %v", c.Snapshot, snap)
	}
}

// testImage: a multi-layer image mounts in order: the upper layer adds a
// file, hides one of the lower layer's with a whiteout and an opaque
// directory, and the lower layer's files stay as they were.
func testImage(t *testing.T, h Harness) {
	if h.Image == nil {
		t.Skip("the driver's harness makes no images")
	}
	base := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat", "ls", "id", "echo", "stat")
		imagetest.File(t, tw, "etc/base-only", []byte("base\n"), 0o644)
		imagetest.File(t, tw, "deleted", []byte("gone\n"), 0o644)
		imagetest.Dir(t, tw, "opq/")
		imagetest.File(t, tw, "opq/old", []byte("old\n"), 0o644)
	})
	top := imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "added", []byte("added\n"), 0o644)
		imagetest.File(t, tw, ".wh.deleted", nil, 0o644)
		imagetest.Dir(t, tw, "opq/")
		imagetest.File(t, tw, "opq/.wh..wh..opq", nil, 0o644)
		imagetest.File(t, tw, "opq/new", []byte("new\n"), 0o644)
	})
	d := h.NewDriver(t)
	b := createBoxSpec(t, d, "image", runtime.Spec{Image: "test/layers", Rootfs: h.Image(t, base, top), Resources: defaultRes})
	r := b.sh("cat /added /etc/base-only; ls /opq; test -e /deleted || echo deleted-hidden; test -e /opq/old || echo old-hidden", false).mustOK(t)
	if want := "added\nbase\nnew\ndeleted-hidden\nold-hidden\n"; r.Stdout != want {
		t.Errorf("the image's merged view:\n%s\nwant\n%s", r.Stdout, want)
	}
	// The layers are shared: writing in the sandbox changes its own layer.
	b.sh("echo mine > /added && cat /added", true).mustOK(t)
	other := createBoxSpec(t, d, "image2", runtime.Spec{Image: "test/layers", Rootfs: h.Image(t, base, top), Resources: defaultRes})
	if r := other.sh("cat /added", false).mustOK(t); r.Stdout != "added\n" {
		t.Errorf("another sandbox of the image reads %q: a layer was written", r.Stdout)
	}
}

// testVolume: a mounted host directory is read and written through, and
// it is mounted nosuid and nodev: a set-user-ID file in it raises no one,
// and a device node in it does not open the host's device.
func testVolume(t *testing.T, h Harness) {
	if h.Volume == nil {
		t.Skip("the driver's harness makes no volumes")
	}
	dir := h.Volume(t)
	marker := hostBlockDevice(t, filepath.Join(dir, "disk"))
	d := h.NewDriver(t)
	m := runtime.Mount{Source: dir}
	if h.VolumeMount != nil {
		m = h.VolumeMount(t, d, dir)
	}
	m.Dest = "/data"
	b := createBoxSpec(t, d, "volume", runtime.Spec{Image: "host", Resources: defaultRes, Mounts: []runtime.Mount{m}})
	r := b.sh("cat /data/seed && echo written > /data/out && grep ' /data ' /proc/self/mounts", true).mustOK(t)
	if !strings.HasPrefix(r.Stdout, "seed\n") {
		t.Errorf("the volume reads %q", r.Stdout)
	}
	opts := r.Stdout
	if !strings.Contains(opts, "nosuid") && h.PlainVolumeMounts == "" {
		t.Errorf("the volume's mount options: %q, want nosuid", opts)
	}
	if !strings.Contains(opts, "nodev") && h.EmulatedDevices == "" && h.PlainVolumeMounts == "" {
		t.Errorf("the volume's mount options: %q, want nodev", opts)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || string(got) != "written\n" {
		t.Errorf("the host sees %q, %v", got, err)
	}
	// The sandbox's root makes a set-user-ID copy of id in the volume; its
	// user runs it and stays who it is.
	b.sh("cp \"$(command -v id)\" /data/suid-id && chmod 4755 /data/suid-id", true).mustOK(t)
	user := strings.TrimSpace(b.sh("id -u", false).mustOK(t).Stdout)
	if got := strings.TrimSpace(b.sh("/data/suid-id -u", false).mustOK(t).Stdout); got != user {
		t.Errorf("a set-user-ID file in the volume runs as uid %s, not its caller's %s: the volume is not nosuid", got, user)
	}
	// The host's block device, as a node in the volume: its bytes must not
	// reach even the sandbox's root.
	r = b.sh("head -c 4194304 /data/disk | grep -c "+marker+" || true", true)
	if strings.TrimSpace(r.Stdout) != "0" {
		t.Errorf("the sandbox read the host's block device through a node in the volume: %q %q", r.Stdout, r.Stderr)
	}
}

// hostBlockDevice makes a device node at node for a loop device of the
// host (a small ext4 image, mounted until the test ends) holding the
// returned marker.
func hostBlockDevice(t *testing.T, node string) string {
	t.Helper()
	if why := diskimg.Available(); why != "" {
		t.Skipf("no loop devices to test nodev with: %s", why)
	}
	const marker = "paddock-nodev-marker"
	tmp := t.TempDir()
	img, mnt := filepath.Join(tmp, "disk.img"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := diskimg.Format(context.Background(), img, 4<<20, diskimg.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := diskimg.Mount(img, mnt, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := diskimg.Unmount(mnt); err != nil {
			t.Error(err)
		}
	})
	// Synced, so the device holds it.
	f, err := os.Create(filepath.Join(mnt, "m"))
	if err == nil {
		_, err = f.WriteString(strings.Repeat(marker+"\n", 64))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	dev := diskimg.LoopOf(img)
	// The check in the sandbox means something only if the host reads
	// the marker there.
	if data, err := os.ReadFile(dev); err != nil || !strings.Contains(string(data), marker) {
		t.Fatalf("the host does not read the marker on %s: %v", dev, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatalf("loop device of the image %q: %v", dev, err)
	}
	if err := unix.Mknod(node, unix.S_IFBLK|0o666, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	return marker
}

// testJoinNetwork: the sandbox joins the network it is given: it has the
// address the host reaches it at, its resolv.conf names the resolver, and a
// server inside answers the host.
func testJoinNetwork(t *testing.T, h Harness) {
	if h.Network == nil {
		t.Skip("the driver's harness makes no networks")
	}
	d := h.NewDriver(t)
	id := newID("joinnet")
	nw, addr := h.Network(t, id)
	b := createBoxWithID(t, d, id, runtime.Spec{Image: "host", Resources: defaultRes, Network: nw})
	r := b.sh("cat /etc/resolv.conf", false).mustOK(t)
	if !strings.Contains(r.Stdout, "nameserver "+nw.DNS.String()) {
		t.Errorf("resolv.conf %q does not name %s", r.Stdout, nw.DNS)
	}
	const port = 8123
	b.start("python3", "-c", "import http.server as h; h.HTTPServer(('0.0.0.0', "+strconv.Itoa(port)+"), h.SimpleHTTPRequestHandler).serve_forever()")
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host cannot reach the sandbox's server at %s:%d: %v", addr, port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testSnapshotRoundTrip: a driver that snapshots copies the changes a
// sandbox of an image made (new files and directories, a deleted file, a
// renamed directory, a changed mode) into a layer a new sandbox starts
// from over the same image.
func testSnapshotRoundTrip(t *testing.T, h Harness) {
	if h.Image == nil {
		t.Skip("the driver's harness makes no images")
	}
	d := h.NewDriver(t)
	snap, ok := d.(runtime.Snapshotter)
	if !ok {
		t.Skip("the driver has no Snapshotter")
	}
	rootfs := h.Image(t, imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "cat", "echo", "mkdir", "mv", "rm", "chmod", "stat", "test")
		imagetest.File(t, tw, "etc/base", []byte("base\n"), 0o644)
		imagetest.Dir(t, tw, "olddir/")
		imagetest.File(t, tw, "olddir/f", []byte("f\n"), 0o644)
		imagetest.File(t, tw, "mode-me", []byte("m\n"), 0o644)
	}))
	b := createBoxSpec(t, d, "snapimg", runtime.Spec{Image: "test/snapshot", Rootfs: rootfs, Resources: defaultRes})
	b.sh("echo kept > /kept && mkdir -p /d && echo x > /d/x && rm /etc/base && mv /olddir /newdir && chmod 600 /mode-me", true).mustOK(t)
	layer := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := snap.Snapshot(ctx, b.id, rootfs, layer, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Errorf("Snapshot copied %d bytes", n)
	}
	if _, err := snap.Snapshot(ctx, b.id, rootfs, t.TempDir(), 3); !isTooLarge(err) {
		t.Errorf("Snapshot over a 3-byte cap = %v, want ErrTooLarge", err)
	}
	restored := createBoxSpec(t, d, "snapimgdst", runtime.Spec{Image: "test/snapshot", Resources: defaultRes, Rootfs: restore(t, h, rootfs, layer)})
	r := restored.sh("cat /kept /d/x /newdir/f; test -e /etc/base || echo base-gone; test -e /olddir || echo olddir-gone; stat -c %a /mode-me", true).mustOK(t)
	if want := "kept\nx\nf\nbase-gone\nolddir-gone\n600\n"; r.Stdout != want {
		t.Errorf("the restored sandbox reads:\n%s\nwant\n%s", r.Stdout, want)
	}
}

// restore is h.Restore, or its default.
func restore(t *testing.T, h Harness, base *runtime.Rootfs, layer string) *runtime.Rootfs {
	if h.Restore != nil {
		return h.Restore(t, base, layer)
	}
	if base == nil {
		return &runtime.Rootfs{Lowers: []string{layer}, OnHost: true}
	}
	return &runtime.Rootfs{Lowers: append([]string{layer}, base.Lowers...), OnHost: base.OnHost}
}

// testSnapshotHostImage: a sandbox of the host image snapshots too (new
// files, deletions).
func testSnapshotHostImage(t *testing.T, h Harness) {
	d := h.NewDriver(t)
	snap, ok := d.(runtime.Snapshotter)
	if !ok {
		t.Skip("the driver has no Snapshotter")
	}
	b := createBoxSpec(t, d, "snapsrc", runtime.Spec{Image: "host", Resources: defaultRes})
	b.sh("echo kept > /home/user/kept && mkdir -p /home/user/d && echo x > /home/user/d/x", false).mustOK(t)
	b.sh("rm -f /etc/hostname.snap-probe; echo gone > /opt-probe && rm /opt-probe", true).mustOK(t)
	// A file the host image has, deleted: its snapshot must whiteout it.
	// Files the runtime binds (hosts, resolv.conf) and the user database
	// are kept.
	gone := strings.TrimSpace(b.sh(`for f in /etc/*; do case "${f##*/}" in passwd|group|shadow|gshadow|hosts|hostname|resolv.conf|nsswitch.conf|sudoers*) continue;; esac; `+
		`if [ -f "$f" ] && [ ! -L "$f" ]; then rm "$f" && echo "$f"; break; fi; done`, true).mustOK(t).Stdout)
	layer := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := snap.Snapshot(ctx, b.id, nil, layer, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Errorf("Snapshot copied %d bytes", n)
	}
	if _, err := snap.Snapshot(ctx, b.id, nil, t.TempDir(), 3); !isTooLarge(err) {
		t.Errorf("Snapshot over a 3-byte cap = %v, want ErrTooLarge", err)
	}
	restored := createBoxSpec(t, d, "snapdst", runtime.Spec{Image: "host", Resources: defaultRes,
		Rootfs: restore(t, h, nil, layer)})
	r := restored.sh("cat /home/user/kept /home/user/d/x; test -e /opt-probe || echo absent", false).mustOK(t)
	if want := "kept\nx\nabsent\n"; r.Stdout != want {
		t.Errorf("the restored sandbox reads:\n%s\nwant\n%s", r.Stdout, want)
	}
	if gone == "" {
		t.Log("the host image has no plain file in /etc to delete: deletions of its files untested")
	} else if r := restored.sh("test -e "+gone+" && echo present || echo deleted", false).mustOK(t); r.Stdout != "deleted\n" {
		t.Errorf("%s, deleted before the snapshot, is %s in the restored sandbox", gone, strings.TrimSpace(r.Stdout))
	}
}

func isTooLarge(err error) bool { return errors.Is(err, sandbox.ErrTooLarge) }
