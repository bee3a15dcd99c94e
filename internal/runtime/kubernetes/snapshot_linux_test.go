package kubernetes

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeAgent serves body as the changes stream, as a hostile sandbox's
// agent could, and returns a client for it.
func fakeAgent(t *testing.T, body []byte) *agent.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/changes" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c := agent.TCPClient(strings.TrimPrefix(srv.URL, "http://"), strings.Repeat("t", 64))
	t.Cleanup(c.Close)
	return c
}

// changesTar builds a changes stream from headers (a TypeReg's data is
// its Linkname field, moved into the body; a TypeDirNames' likewise).
func changesTar(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		var data string
		if h.Typeflag == tar.TypeReg || h.Typeflag == agent.TypeDirNames || h.Typeflag == agent.TypeBaseNames {
			data, h.Linkname = h.Linkname, ""
			if h.Size == 0 {
				h.Size = int64(len(data))
			}
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
			t.Fatal(err)
		}
	}
	// An entry declaring more than it holds cannot be closed: the stream
	// then ends there, cut, as a hostile agent may send it.
	_ = tw.Close()
	return buf.Bytes()
}

func dir(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755} }
func file(name, data string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Linkname: data}
}
func names(dir string, n ...string) *tar.Header {
	var list strings.Builder
	for _, s := range n {
		list.WriteString(s + "\x00")
	}
	return &tar.Header{Typeflag: agent.TypeDirNames, Name: dir, Linkname: list.String()}
}

// imageNames is the agent's list of what the image has in dir.
func imageNames(dir string, n ...string) *tar.Header {
	h := names(dir, n...)
	h.Typeflag = agent.TypeBaseNames
	return h
}

// lowerLayers makes two image layers, topmost first: the top one hides
// the bottom one's etc/hidden with a whiteout and its o/ with an opaque
// directory.
func lowerLayers(t *testing.T) []string {
	t.Helper()
	top, bottom := t.TempDir(), t.TempDir()
	for _, d := range []string{top + "/etc", top + "/o", bottom + "/etc", bottom + "/o"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{top + "/etc/kept", top + "/etc/gone", top + "/o/a", bottom + "/etc/hidden", bottom + "/etc/low", bottom + "/o/b"} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(top+"/etc/hidden", unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(top+"/o", layer.OpaqueXattr, []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	return []string{top, bottom}
}

// TestSnapshotFromChanges: a changes stream becomes the runc driver's
// layer form: set-id bits dropped, the sandbox's ids kept, and a whiteout
// for each name the lowers show in a changed directory and its list lacks
// (not for one a lower's whiteout or opaque directory already hides).
func TestSnapshotFromChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners, whiteouts and trusted xattrs")
	}
	suid := file("etc/new", "new")
	suid.Mode, suid.Uid, suid.Gid = 0o4755, 1000, 1000
	c := fakeAgent(t, changesTar(t, dir("etc/"), suid, names("etc", "kept", "new"), dir("o/"), names("o")))
	dst := t.TempDir()
	n, err := snapshotFrom(context.Background(), c, lowerLayers(t), dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("wrote %d bytes, want 3", n)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dst+"/etc/new", &st); err != nil || st.Mode != unix.S_IFREG|0o755 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("etc/new: mode %o, owner %d:%d (%v); want 0755, the set-uid bit dropped, 1000:1000", st.Mode, st.Uid, st.Gid, err)
	}
	whiteouts := map[string]bool{"etc/gone": true, "etc/low": true, "o/a": true}
	err = filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dst {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		wo := st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
		if wo != whiteouts[rel] {
			t.Errorf("%s: whiteout %v, want %v", rel, wo, whiteouts[rel])
		}
		delete(whiteouts, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(whiteouts) > 0 {
		t.Errorf("missing whiteouts %v", whiteouts)
	}
}

// TestSnapshotFromImageNames: without the image's layers here (the host
// image), the whiteouts come from what the agent says the image has in
// each changed directory, which must come with every name list; such
// names are refused from an agent when paddock has the layers.
func TestSnapshotFromImageNames(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts")
	}
	c := fakeAgent(t, changesTar(t, dir("etc/"), file("etc/new", "new"), imageNames("etc", "kept", "gone"), names("etc", "kept", "new"),
		dir("fresh/"), imageNames("fresh"), names("fresh")))
	dst := t.TempDir()
	if _, err := snapshotFrom(context.Background(), c, nil, dst, 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dst+"/etc/gone", &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone: %o %v, want a whiteout", st.Mode, err)
	}
	for _, n := range []string{"etc/kept", "fresh/gone"} {
		if err := unix.Lstat(dst+"/"+n, &st); err == nil {
			t.Errorf("%s is in the layer", n)
		}
	}
	for name, hdrs := range map[string][]*tar.Header{
		"a list without the image's names": {dir("etc/"), names("etc", "kept")},
		"the image's names twice":          {dir("etc/"), imageNames("etc", "a"), imageNames("etc", "b"), names("etc")},
		"the image's names after the list": {dir("etc/"), imageNames("etc", "a"), names("etc"), imageNames("etc", "a")},
		"the image's names of no dir sent": {imageNames("etc", "a")},
		"the image's names naming a path":  {dir("etc/"), imageNames("etc", "../x"), names("etc")},
	} {
		if _, err := snapshotFrom(context.Background(), fakeAgent(t, changesTar(t, hdrs...)), nil, t.TempDir(), 0); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	withLayers := changesTar(t, dir("etc/"), imageNames("etc", "kept"), names("etc", "kept"))
	if _, err := snapshotFrom(context.Background(), fakeAgent(t, withLayers), lowerLayers(t), t.TempDir(), 0); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("the image's names where paddock has the layers: %v, want ErrInvalid", err)
	}
}

// TestSnapshotHostileAgent: what a sandbox's agent sends is hostile: names
// leaving the layer, a symlink then a file through it, links to outside,
// device nodes (a forged whiteout among them), a second entry of a name and
// a stream past the cap are refused, and nothing is written outside dst.
func TestSnapshotHostileAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: owners")
	}
	big := file("big", strings.Repeat("x", 2<<20))
	for _, tc := range []struct {
		name string
		hdrs func(outside string) []*tar.Header
		max  int64
		want error
	}{
		{"dotdot", func(string) []*tar.Header { return []*tar.Header{file("../x", "escaped")} }, 0, sandbox.ErrInvalid},
		{"dotdot inside", func(string) []*tar.Header { return []*tar.Header{dir("a/"), file("a/../../x", "escaped")} }, 0, sandbox.ErrInvalid},
		{"absolute", func(string) []*tar.Header { return []*tar.Header{file("/x", "escaped")} }, 0, sandbox.ErrInvalid},
		{"absolute outside", func(o string) []*tar.Header { return []*tar.Header{file(o+"/x", "escaped")} }, 0, sandbox.ErrInvalid},
		{"through a symlink", func(o string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeSymlink, Name: "l", Linkname: o}, file("l/x", "escaped")}
		}, 0, sandbox.ErrInvalid},
		{"through a relative symlink", func(string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "../outside"}, dir("l/")}
		}, 0, sandbox.ErrInvalid},
		{"parent never sent", func(string) []*tar.Header { return []*tar.Header{file("etc/x", "x")} }, 0, sandbox.ErrInvalid},
		{"hard link outside", func(string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeLink, Name: "h", Linkname: "../outside/secret"}}
		}, 0, sandbox.ErrInvalid},
		{"hard link to a symlink", func(o string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeSymlink, Name: "l", Linkname: o + "/secret"}, {Typeflag: tar.TypeLink, Name: "h", Linkname: "l"}}
		}, 0, sandbox.ErrInvalid},
		{"device", func(string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeChar, Name: "mem", Devmajor: 1, Devminor: 1}}
		}, 0, sandbox.ErrInvalid},
		{"forged whiteout", func(string) []*tar.Header { return []*tar.Header{{Typeflag: tar.TypeChar, Name: "etc"}} }, 0, sandbox.ErrInvalid},
		{"block device", func(string) []*tar.Header { return []*tar.Header{{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8}} }, 0, sandbox.ErrInvalid},
		{"twice", func(string) []*tar.Header { return []*tar.Header{file("x", "1"), file("x", "2")} }, 0, sandbox.ErrInvalid},
		{"list of a file", func(string) []*tar.Header { return []*tar.Header{file("x", "1"), names("x", "y")} }, 0, sandbox.ErrInvalid},
		{"list naming a path", func(string) []*tar.Header { return []*tar.Header{names(".", "../outside")} }, 0, sandbox.ErrInvalid},
		{"root entry", func(string) []*tar.Header { return []*tar.Header{dir("./")} }, 0, sandbox.ErrInvalid},
		{"oversize", func(string) []*tar.Header { return []*tar.Header{big} }, 1 << 20, sandbox.ErrTooLarge},
		{"oversize declared", func(string) []*tar.Header {
			return []*tar.Header{{Typeflag: tar.TypeReg, Name: "huge", Size: 1 << 40}}
		}, 1 << 20, sandbox.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			dst, outside := filepath.Join(tmp, "dst"), filepath.Join(tmp, "outside")
			for _, d := range []string{dst, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			c := fakeAgent(t, changesTar(t, tc.hdrs(outside)...))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := snapshotFrom(ctx, c, lowerLayers(t), dst, tc.max)
			if !errors.Is(err, tc.want) {
				t.Errorf("snapshot = %v, want %v", err, tc.want)
			}
			for _, d := range []string{tmp, outside} {
				ents, err := os.ReadDir(d)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					if n := e.Name(); n != "dst" && n != "outside" && n != "secret" {
						t.Errorf("%s written outside the layer", filepath.Join(d, n))
					}
				}
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(outside, "secret"), &st); err != nil || st.Nlink != 1 {
				t.Errorf("outside/secret: %v, %d links", err, st.Nlink)
			}
		})
	}
}

// TestSnapshotPod: a real Pod's changes (a deleted, a changed-mode and a
// changed-owner base file, new files, directories and a symlink, a renamed
// directory) are exactly what its snapshot holds, in the runc driver's
// layer form with the sandbox's own ids; nothing of /proc, /sys, /dev,
// /tmp or the agent's dirs is. A stopped sandbox (its Pod gone) and one of
// the host image are refused.
func TestSnapshotPod(t *testing.T) {
	e := testEnv(t)
	d := e.newDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rootfs := e.image(t, imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.WriteBusybox(t, tw, "sh", "rm", "mkdir", "ln", "chmod", "chown", "mv", "echo", "touch")
		imagetest.File(t, tw, "etc/base-del", []byte("del\n"), 0o644)
		imagetest.Dir(t, tw, "olddir/")
		imagetest.File(t, tw, "olddir/f", []byte("f\n"), 0o644)
		imagetest.File(t, tw, "chmod-me", []byte("m\n"), 0o644)
		imagetest.Dir(t, tw, "untouched/")
		imagetest.File(t, tw, "untouched/u", []byte("u\n"), 0o644)
	}))
	const id = "k8s-snapshot-1"
	c, err := d.Create(ctx, runtime.Spec{ID: id, Image: "test/snapshot", Rootfs: rootfs, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Cleanup(func() { d.Destroy(context.Background(), id) })
	sh(t, c, "rm /etc/base-del && echo new > /new && chown 1000:1000 /new && mkdir -p /newd/sub && ln -s /etc/passwd /link && "+
		"chmod 600 /chmod-me && mv /olddir /renamed && touch /tmp/in-tmp /run/paddock/in-state", true)

	dst := t.TempDir()
	n, err := d.Snapshot(ctx, id, rootfs, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len("new\nm\nf\n")); n != want {
		t.Errorf("Snapshot wrote %d bytes, want %d", n, want)
	}
	got := map[string]string{}
	err = filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dst {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%o %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			desc = fmt.Sprintf("whiteout %d", st.Rdev)
		case unix.S_IFDIR:
			desc = "dir " + desc
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			desc = "symlink " + target
		case unix.S_IFREG:
			data, _ := os.ReadFile(p)
			desc = fmt.Sprintf("file %q %s", data, desc)
		}
		got[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etc/base-del": "whiteout 0",
		"olddir":       "whiteout 0",
		"new":          `file "new\n" 644 1000:1000`,
		"newd":         "dir 755 0:0",
		"newd/sub":     "dir 755 0:0",
		"link":         "symlink /etc/passwd",
		"chmod-me":     `file "m\n" 600 0:0`,
		"renamed":      "dir 755 0:0",
		"renamed/f":    `file "f\n" 644 0:0`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		_, wanted := want[k]
		// The directories holding changes (etc, the root's entries) come
		// as directories; nothing else may be there.
		if !wanted && !(k == "etc" && strings.HasPrefix(v, "dir ")) {
			t.Errorf("unexpected %s: %s", k, v)
		}
	}

	if _, err := d.Snapshot(ctx, id, nil, t.TempDir(), 0); !errors.Is(err, sandbox.ErrUnsupported) {
		t.Errorf("Snapshot without the image's layers = %v, want ErrUnsupported", err)
	}
	if err := d.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, id, rootfs, t.TempDir(), 0); !errors.Is(err, sandbox.ErrConflict) || !strings.Contains(err.Error(), "nothing to snapshot") {
		t.Errorf("Snapshot of a stopped sandbox = %v, want ErrConflict", err)
	}
}
