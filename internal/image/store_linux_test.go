package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// needRoot skips tests that chown, mknod and set trusted.* xattrs.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners and makes whiteout devices: needs root")
	}
}

// entry is one tar entry of a handcrafted layer.
type entry struct {
	name, body, link string
	typ              byte // tar.TypeReg if 0
	mode             int64
	uid, gid         int
	major, minor     int64
	pax              map[string]string
}

func tarLayer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: time.Unix(1700000000, 0), PAXRecords: e.pax, Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func buildImage(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.Config(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry serves a registry on 127.0.0.1 (never the network); wrap,
// if set, sits in front of it.
func testRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// No docker config of the machine running the tests leaks in.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t *testing.T, host, repo string, img v1.Image, opts ...remote.Option) string {
	t.Helper()
	ref := host + "/" + repo
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatal(err)
	}
	return ref
}

// openTestStore opens a store in a temp dir whose pulls may reach loopback,
// where the test registries listen.
func openTestStore(t *testing.T, opts StoreOptions) *Store {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Guard.AllowPrivate = true
	s, err := OpenStore(filepath.Join(t.TempDir(), "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &st
}

func TestPull(t *testing.T) {
	needRoot(t)
	host := testRegistry(t, nil)
	base := tarLayer(t,
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/hello", body: "hello\n", mode: 0o640, gid: 42},
		entry{name: "etc/hello2", typ: tar.TypeLink, link: "etc/hello"},
		entry{name: "bin/su", body: "#!", mode: 0o4755},
		entry{name: "home/u/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		entry{name: "home/u/f", body: "x", mode: 0o600, uid: 1000, gid: 1000},
		entry{name: "lnk", typ: tar.TypeSymlink, link: "/etc/hello"},
		entry{name: "del", body: "soon gone"},
		entry{name: "opq/old", body: "hidden"},
	)
	upper := tarLayer(t,
		entry{name: ".wh.del"},
		entry{name: "opq/.wh..wh..opq"},
		entry{name: "opq/new", body: "visible"},
	)
	cfg := v1.Config{Env: []string{"PATH=/bin", "A=b"}, WorkingDir: "/work", User: "1000:1000", Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "true"}}
	ref := push(t, host, "test/pull:v1", buildImage(t, cfg, base, upper))

	s := openTestStore(t, StoreOptions{})
	var events []LayerProgress
	img, err := s.Pull(t.Context(), testTeam, ref, PullOptions{}, func(p LayerProgress) { events = append(events, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || len(events) != 4 || !events[3].Done || events[3].Cached {
		t.Fatalf("layers %v, progress %+v", img.Layers, events)
	}
	if img.Config.WorkingDir != "/work" || img.Config.User != "1000:1000" || len(img.Config.Env) != 2 || img.Config.Cmd[1] != "true" || img.Config.Entrypoint[0] != "/bin/sh" {
		t.Errorf("config %+v", img.Config)
	}
	low, up := img.Layers[0], img.Layers[1]

	t.Run("files", func(t *testing.T) {
		tests := []struct {
			path     string
			mode     uint32
			uid, gid uint32
		}{
			{"etc/hello", unix.S_IFREG | 0o640, 0, 42},
			{"bin/su", unix.S_IFREG | 0o755, 0, 0}, // set-id bits never land on the host
			{"home/u", unix.S_IFDIR | 0o700, 1000, 1000},
			{"home/u/f", unix.S_IFREG | 0o600, 1000, 1000},
			{"lnk", unix.S_IFLNK | 0o777, 0, 0},
		}
		for _, tt := range tests {
			st := lstat(t, filepath.Join(low, tt.path))
			if st.Mode != tt.mode || st.Uid != tt.uid || st.Gid != tt.gid {
				t.Errorf("%s: mode %o %d:%d, want %o %d:%d", tt.path, st.Mode, st.Uid, st.Gid, tt.mode, tt.uid, tt.gid)
			}
		}
		if target, _ := os.Readlink(filepath.Join(low, "lnk")); target != "/etc/hello" {
			t.Errorf("symlink target %q", target)
		}
		if a, b := lstat(t, filepath.Join(low, "etc/hello")), lstat(t, filepath.Join(low, "etc/hello2")); a.Ino != b.Ino {
			t.Error("hardlink is a copy")
		}
	})
	t.Run("whiteouts", func(t *testing.T) {
		st := lstat(t, filepath.Join(up, "del"))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("del: mode %o rdev %d, want a 0/0 char device", st.Mode, st.Rdev)
		}
		buf := make([]byte, 8)
		n, err := unix.Lgetxattr(filepath.Join(up, "opq"), "trusted.overlay.opaque", buf)
		if err != nil || string(buf[:n]) != "y" {
			t.Errorf("opq opaque xattr %q, %v", buf[:n], err)
		}
		if _, err := os.Lstat(filepath.Join(up, ".wh.del")); err == nil {
			t.Error("the .wh. entry itself was written")
		}
	})
	t.Run("get and list", func(t *testing.T) {
		for _, key := range []string{ref, img.Digest} {
			got, err := s.Get(testTeam, key)
			if err != nil || got.Digest != img.Digest || len(got.Layers) != 2 {
				t.Errorf("Get(%s) = %+v, %v", key, got, err)
			}
		}
		if l := s.List(testTeam); len(l) != 1 || l[0].Ref != img.Ref {
			t.Errorf("List = %+v", l)
		}
		if _, err := s.Get(testTeam, host+"/nope:v1"); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("Get(unknown) = %v", err)
		}
		// A reopened store reads the same index.
		s2, err := OpenStore(s.dir, StoreOptions{Logger: s.log})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s2.Get(testTeam, ref); err != nil || got.Size != img.Size || got.Layers[1] != up {
			t.Errorf("reopened Get = %+v, %v", got, err)
		}
	})
	t.Run("rootfs", func(t *testing.T) {
		lowers := img.Lowerdirs()
		if len(lowers) != 2 || lowers[0] != up || lowers[1] != low {
			t.Fatalf("Lowerdirs = %v", lowers)
		}
		dir := t.TempDir()
		merged, upperDir, work := filepath.Join(dir, "m"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
		for _, d := range []string{merged, upperDir, work} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upperDir + ",workdir=" + work
		if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
			t.Skipf("cannot mount overlayfs here: %v", err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(merged, 0); err != nil {
				t.Errorf("unmount: %v", err)
			}
		})
		for _, gone := range []string{"del", "opq/old"} {
			if _, err := os.Lstat(filepath.Join(merged, gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s in the merged view: %v", gone, err)
			}
		}
		for _, p := range []string{"opq/new", "etc/hello", "bin/su"} {
			if _, err := os.Lstat(filepath.Join(merged, p)); err != nil {
				t.Errorf("%s missing from the merged view: %v", p, err)
			}
		}
	})
	t.Run("pull again is cached", func(t *testing.T) {
		before := s.unpacks.Load()
		if _, err := s.Pull(t.Context(), testTeam, ref, PullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		if n := s.unpacks.Load() - before; n != 0 {
			t.Errorf("re-pull unpacked %d layers", n)
		}
	})
}

func TestPullAuth(t *testing.T) {
	needRoot(t)
	const user, pass = "alice", "s3cret"
	host := testRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := push(t, host, "private/img:v1", img, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))

	tests := []struct {
		name     string
		opts     PullOptions
		wantCode string
	}{
		{"right credentials", PullOptions{Username: user, Password: pass}, ""},
		{"wrong password", PullOptions{Username: user, Password: "nope"}, "registry_auth"},
		{"no credentials", PullOptions{}, "registry_auth"},
	}
	// No explicit credentials: the docker config keychain ($DOCKER_CONFIG,
	// as `docker login` writes it) supplies them, only when Keychain says
	// so (the server's own logins are not every tenant's).
	t.Run("docker config keychain", func(t *testing.T) {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
		s := openTestStore(t, StoreOptions{})
		if _, err := s.Pull(t.Context(), testTeam, ref, PullOptions{}, nil); !errors.Is(err, sandbox.ErrUnauthorized) {
			t.Fatalf("pull without Keychain = %v, want the registry's refusal", err)
		}
		if _, err := s.Pull(t.Context(), testTeam, ref, PullOptions{Keychain: true}, nil); err != nil {
			t.Fatalf("pull with the keychain's credentials: %v", err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, StoreOptions{})
			_, err := s.Pull(t.Context(), testTeam, ref, tt.opts, nil)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, sandbox.ErrUnauthorized) || sandbox.CodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v (code %q), want ErrUnauthorized %s", err, sandbox.CodeOf(err), tt.wantCode)
			}
		})
	}
}

func TestConcurrentPull(t *testing.T) {
	needRoot(t)
	host := testRegistry(t, nil)
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := push(t, host, "test/conc:v1", img)
	s := openTestStore(t, StoreOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.Pull(context.Background(), testTeam, ref, PullOptions{}, nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := s.unpacks.Load(); n != 3 {
		t.Errorf("8 concurrent pulls unpacked %d layers, want 3", n)
	}
}

func TestHostileLayers(t *testing.T) {
	needRoot(t)
	host := testRegistry(t, nil)
	outside := t.TempDir()
	canary := filepath.Join(outside, "passwd")
	if err := os.WriteFile(canary, []byte("canary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The symlink attacks aim at a canary dir, not the real /etc: a
	// regression must not be able to damage the machine running the test.
	tests := []struct {
		name     string
		opts     StoreOptions
		layers   [][]entry
		wantKind error  // nil: accepted (neutralised)
		check    string // with wantKind nil: path that must be in the layer
		absent   string // with wantKind nil: path that must not be
	}{
		{name: "dotdot", layers: [][]entry{{{name: "../x", body: "x"}}}, wantKind: sandbox.ErrInvalid},
		{name: "dotdot inside", layers: [][]entry{{{name: "a/../../x", body: "x"}}}, wantKind: sandbox.ErrInvalid},
		{name: "absolute name", layers: [][]entry{{{name: "/abs", body: "x"}}}, check: "abs"},
		{name: "symlink out then through", layers: [][]entry{{
			{name: "link", typ: tar.TypeSymlink, link: outside},
			{name: "link/passwd", body: "pwned"},
		}}, wantKind: sandbox.ErrInvalid},
		{name: "relative symlink up then through", layers: [][]entry{{
			{name: "link", typ: tar.TypeSymlink, link: "../../../../../../../.." + outside},
			{name: "link/passwd", body: "pwned"},
		}}, wantKind: sandbox.ErrInvalid},
		{name: "symlink inside then through", layers: [][]entry{{
			{name: "real/", typ: tar.TypeDir},
			{name: "link", typ: tar.TypeSymlink, link: "real"},
			{name: "link/f", body: "x"},
		}}, wantKind: sandbox.ErrInvalid},
		{name: "hardlink to /etc/passwd", layers: [][]entry{{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}}, wantKind: sandbox.ErrInvalid},
		{name: "hardlink to canary", layers: [][]entry{{{name: "h", typ: tar.TypeLink, link: canary}}}, wantKind: sandbox.ErrInvalid},
		{name: "hardlink dotdot", layers: [][]entry{{{name: "h", typ: tar.TypeLink, link: "../x"}}}, wantKind: sandbox.ErrInvalid},
		{name: "hardlink through symlink", layers: [][]entry{{
			{name: "link", typ: tar.TypeSymlink, link: outside},
			{name: "h", typ: tar.TypeLink, link: "link/passwd"},
		}}, wantKind: sandbox.ErrInvalid},
		{name: "hardlink to dir", layers: [][]entry{{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}}}, wantKind: sandbox.ErrInvalid},
		{name: "absolute hardlink inside layer", layers: [][]entry{{{name: "f", body: "x"}, {name: "h", typ: tar.TypeLink, link: "/f"}}}, check: "h"},
		{name: "char device", layers: [][]entry{{{name: "dev/mem", typ: tar.TypeChar, major: 1, minor: 1}}}, absent: "dev/mem"},
		{name: "forged whiteout device", layers: [][]entry{{{name: "w", typ: tar.TypeChar}}}, absent: "w"},
		{name: "block device", layers: [][]entry{{{name: "sda", typ: tar.TypeBlock, major: 8}}}, absent: "sda"},
		{name: "fifo", layers: [][]entry{{{name: "p", typ: tar.TypeFifo}}}, absent: "p"},
		{name: "forged opaque xattr", layers: [][]entry{{{name: "d/", typ: tar.TypeDir, pax: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}}}}, check: "d"},
		{name: "file over parent", layers: [][]entry{{{name: "f", body: "x"}, {name: "f/g", body: "y"}}}, wantKind: sandbox.ErrInvalid},
		{name: "oversize layer", opts: StoreOptions{MaxLayerBytes: 1 << 20},
			layers: [][]entry{{{name: "big", body: strings.Repeat("a", 2<<20)}}}, wantKind: sandbox.ErrTooLarge},
		{name: "oversize image", opts: StoreOptions{MaxImageBytes: 1 << 20},
			layers: [][]entry{{{name: "a", body: strings.Repeat("a", 600<<10)}}, {{name: "b", body: strings.Repeat("b", 600<<10)}}}, wantKind: sandbox.ErrTooLarge},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var layers []v1.Layer
			for _, l := range tt.layers {
				layers = append(layers, tarLayer(t, l...))
			}
			ref := push(t, host, "hostile/img"+string(rune('a'+i))+":v1", buildImage(t, v1.Config{}, layers...))
			s := openTestStore(t, tt.opts)
			img, err := s.Pull(t.Context(), testTeam, ref, PullOptions{}, nil)
			if tt.wantKind != nil {
				if !errors.Is(err, tt.wantKind) {
					t.Fatalf("err = %v, want %v", err, tt.wantKind)
				}
				t.Logf("refused: %v", err)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				top := img.Layers[len(img.Layers)-1]
				if tt.check != "" {
					if _, err := os.Lstat(filepath.Join(top, tt.check)); err != nil {
						t.Errorf("%s not in the layer: %v", tt.check, err)
					}
				}
				if tt.absent != "" {
					if _, err := os.Lstat(filepath.Join(top, tt.absent)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s is in the layer: %v", tt.absent, err)
					}
				}
				if tt.name == "forged opaque xattr" {
					if _, err := unix.Lgetxattr(filepath.Join(top, "d"), "trusted.overlay.opaque", make([]byte, 8)); err == nil {
						t.Error("a layer set trusted.overlay.opaque through a PAX record")
					}
				}
			}
			// Nothing outside the store: the canary dir is untouched and
			// nothing appeared next to the store.
			if b, err := os.ReadFile(canary); err != nil || string(b) != "canary\n" {
				t.Errorf("canary: %q, %v", b, err)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 1 {
				t.Errorf("outside dir holds %d entries", len(entries))
			}
			if entries, _ := os.ReadDir(filepath.Dir(s.dir)); len(entries) != 1 {
				t.Errorf("the store's parent holds %d entries", len(entries))
			}
			if entries, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(entries) != 0 {
				t.Errorf("tmp holds %d leftovers", len(entries))
			}
		})
	}
}

func TestGC(t *testing.T) {
	needRoot(t)
	host := testRegistry(t, nil)
	imgA := buildImage(t, v1.Config{},
		tarLayer(t, entry{name: "a1", body: strings.Repeat("1", 10000)}),
		tarLayer(t, entry{name: "a2", body: strings.Repeat("2", 10000)}))
	imgB := buildImage(t, v1.Config{}, tarLayer(t, entry{name: "b1", body: strings.Repeat("3", 10000)}))
	refA, refB := push(t, host, "gc/a:v1", imgA), push(t, host, "gc/b:v1", imgB)

	clock := time.Unix(1000, 0)
	setup := func(t *testing.T, maxBytes int64) (*Store, *Image, *Image) {
		s := openTestStore(t, StoreOptions{MaxBytes: maxBytes})
		s.now = func() time.Time { clock = clock.Add(time.Second); return clock }
		a, err := s.Pull(t.Context(), testTeam, refA, PullOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Pull(t.Context(), testTeam, refB, PullOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s, a, b
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }

	t.Run("unreferenced layers go", func(t *testing.T) {
		s, a, b := setup(t, 0)
		if err := s.Remove(t.Context(), testTeam, refB); err != nil {
			t.Fatal(err)
		}
		if err := s.GC(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		if exists(b.Layers[0]) || !exists(a.Layers[0]) || !exists(a.Layers[1]) {
			t.Errorf("after GC: b1 %v, a %v %v", exists(b.Layers[0]), exists(a.Layers[0]), exists(a.Layers[1]))
		}
		if _, err := s.Get(testTeam, refB); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("Get(removed) = %v", err)
		}
	})
	t.Run("cap evicts least recently used", func(t *testing.T) {
		s, a, b := setup(t, 25000) // room for A (2 layers) or B, not both
		if err := s.Touch(testTeam, refB); err != nil {
			t.Fatal(err)
		}
		// A was used last: B goes.
		if err := s.Touch(testTeam, refA); err != nil {
			t.Fatal(err)
		}
		if err := s.GC(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		if exists(b.Layers[0]) || !exists(a.Layers[0]) {
			t.Errorf("after GC: b1 %v, a1 %v", exists(b.Layers[0]), exists(a.Layers[0]))
		}
		if size := s.Size(); size > 25000 {
			t.Errorf("store size %d over the cap", size)
		}
	})
	t.Run("in use is kept over the cap", func(t *testing.T) {
		s, a, b := setup(t, 1)
		inUse := func(dir string) bool { return dir == a.Layers[1] }
		if err := s.GC(t.Context(), inUse); err != nil {
			t.Fatal(err)
		}
		if !exists(a.Layers[0]) || !exists(a.Layers[1]) || exists(b.Layers[0]) {
			t.Errorf("after GC: a %v %v, b1 %v", exists(a.Layers[0]), exists(a.Layers[1]), exists(b.Layers[0]))
		}
		if _, err := s.Get(testTeam, refA); err != nil {
			t.Errorf("in-use image evicted: %v", err)
		}
	})
}

func TestImport(t *testing.T) {
	needRoot(t)
	img := buildImage(t, v1.Config{Cmd: []string{"/bin/true"}},
		tarLayer(t, entry{name: "etc/os-release", body: "ID=test\n"}),
		tarLayer(t, entry{name: "etc/.wh.os-release"}))
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		write   func(t *testing.T, dir string) string
		wantRef string
	}{
		{"docker archive", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "img.tar")
			tag, err := name.NewTag("example.com/imported/img:v2")
			if err != nil {
				t.Fatal(err)
			}
			if err := tarball.WriteToFile(p, tag, img); err != nil {
				t.Fatal(err)
			}
			return p
		}, "example.com/imported/img:v2"},
		{"oci layout", func(t *testing.T, dir string) string {
			p, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.AppendImage(img); err != nil {
				t.Fatal(err)
			}
			return string(p)
		}, digest.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, StoreOptions{})
			got, err := s.Import(t.Context(), testTeam, tt.write(t, t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			if got.Ref != tt.wantRef || got.Digest != digest.String() || len(got.Layers) != 2 || got.Config.Cmd[0] != "/bin/true" {
				t.Fatalf("Import = %+v", got)
			}
			if b, err := os.ReadFile(filepath.Join(got.Layers[0], "etc/os-release")); err != nil || string(b) != "ID=test\n" {
				t.Errorf("os-release: %q, %v", b, err)
			}
			if st := lstat(t, filepath.Join(got.Layers[1], "etc/os-release")); st.Mode&unix.S_IFMT != unix.S_IFCHR {
				t.Errorf("whiteout mode %o", st.Mode)
			}
			if _, err := s.Get(testTeam, tt.wantRef); err != nil {
				t.Errorf("Get(%s): %v", tt.wantRef, err)
			}
		})
	}
	t.Run("not an archive", func(t *testing.T) {
		s := openTestStore(t, StoreOptions{})
		p := filepath.Join(t.TempDir(), "junk")
		if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Import(t.Context(), testTeam, p); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	})
}

// testTeam is the scope the single-team tests pull and import into.
const testTeam = "team-test"

// importTagged imports img as a docker archive tagged tag into team's scope.
func importTagged(t *testing.T, s *Store, team, tag string, img v1.Image) *Image {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.tar")
	tg, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(p, tg, img); err != nil {
		t.Fatal(err)
	}
	got, err := s.Import(t.Context(), team, p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestRefsPerTeam is the store half of a live hole: a member of team B
// imported an archive tagged python:3.12 and so moved the host-wide tag
// team A's sandboxes and projects ran.
func TestRefsPerTeam(t *testing.T) {
	needRoot(t)
	layer := func(body string) v1.Layer { return tarLayer(t, entry{name: "who", body: body}) }
	imgA := buildImage(t, v1.Config{Env: []string{"SECRET=a"}}, layer("a"))
	imgB := buildImage(t, v1.Config{}, layer("b"))
	imgPub := buildImage(t, v1.Config{}, layer("published"))
	const tag = "python:3.12"
	s := openTestStore(t, StoreOptions{})

	a := importTagged(t, s, "team-a", tag, imgA)
	b := importTagged(t, s, "team-b", tag, imgB)
	if a.Digest == b.Digest || a.Team != "team-a" || b.Team != "team-b" {
		t.Fatalf("imports: a %+v, b %+v", a, b)
	}
	tests := []struct {
		name, team, ref, want string // want: a digest, or "" for not found
	}{
		{"own tag", "team-a", tag, a.Digest},
		{"other team's import does not move it", "team-a", "docker.io/library/python:3.12", a.Digest},
		{"each team its own", "team-b", tag, b.Digest},
		{"no ref in a third team", "team-c", tag, ""},
		{"own digest", "team-a", a.Digest, a.Digest},
		{"another team's digest is not found", "team-b", a.Digest, ""},
		{"nor for the published scope", Published, a.Digest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Get(tt.team, tt.ref)
			if tt.want == "" {
				if !errors.Is(err, sandbox.ErrNotFound) {
					t.Fatalf("Get(%s, %s) = %+v, %v, want not found", tt.team, tt.ref, got, err)
				}
				return
			}
			if err != nil || got.Digest != tt.want {
				t.Fatalf("Get(%s, %s) = %+v, %v, want %s", tt.team, tt.ref, got, err, tt.want)
			}
			if err := s.Touch(tt.team, tt.ref); err != nil {
				t.Errorf("Touch: %v", err)
			}
		})
	}

	t.Run("published refs reach every team and are shadowed by its own", func(t *testing.T) {
		pub := importTagged(t, s, Published, tag, imgPub)
		for team, want := range map[string]string{"team-a": a.Digest, "team-b": b.Digest, "team-c": pub.Digest} {
			if got, err := s.Get(team, tag); err != nil || got.Digest != want {
				t.Errorf("Get(%s) = %+v, %v, want %s", team, got, err, want)
			}
		}
		if got, err := s.Get("team-c", pub.Digest); err != nil || got.Team != Published {
			t.Errorf("published digest: %+v, %v", got, err)
		}
	})
	t.Run("list shows own and published refs only", func(t *testing.T) {
		var got []string
		for _, img := range s.List("team-a") {
			got = append(got, img.Team+":"+img.Digest)
		}
		pub, _ := s.Get("team-c", tag)
		want := []string{"team-a:" + a.Digest, ":" + pub.Digest}
		if !slices.Equal(got, want) {
			t.Errorf("List(team-a) = %v, want %v", got, want)
		}
		if n := len(s.List(AllScopes)); n != 3 {
			t.Errorf("List(AllScopes) has %d refs, want 3", n)
		}
	})
	t.Run("remove touches only the caller's scope", func(t *testing.T) {
		if err := s.Remove(t.Context(), "team-b", a.Digest); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("team-b removing team-a's digest: %v", err)
		}
		if err := s.Remove(t.Context(), "team-b", tag); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get("team-b", tag); err != nil || got.Team != Published {
			t.Errorf("after removing its own, team-b sees %+v, %v, want the published ref", got, err)
		}
		if got, err := s.Get("team-a", tag); err != nil || got.Digest != a.Digest {
			t.Errorf("team-a's ref after team-b's remove: %+v, %v", got, err)
		}
	})
}

// TestLegacyRefsPublished: the host-wide refs of a store from before teams
// become published refs, which every team still sees.
func TestLegacyRefsPublished(t *testing.T) {
	needRoot(t)
	s := openTestStore(t, StoreOptions{})
	img := importTagged(t, s, Published, "example.com/old:v1", buildImage(t, v1.Config{}, tarLayer(t, entry{name: "f", body: "x"})))
	// Rewrite the index as a paddock from before teams wrote it.
	b, err := os.ReadFile(s.indexPath())
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw, "scopes")
	raw["refs"] = json.RawMessage(fmt.Sprintf(`{%q:%q}`, img.Ref, img.Digest))
	if b, err = json.Marshal(raw); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.indexPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(s.dir, StoreOptions{Logger: s.log})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get("any-team", img.Ref); err != nil || got.Digest != img.Digest || got.Team != Published {
		t.Fatalf("legacy ref after reopen: %+v, %v", got, err)
	}
}

// TestStoreDirsPrivate: the store's directories are 0700 at every open,
// even when something widened them since (layer paths are public in
// /proc/mounts).
func TestStoreDirsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	if _, err := OpenStore(dir, StoreOptions{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "layers")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenStore(dir, StoreOptions{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "layers"), filepath.Join(dir, "tmp")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want 0700", d, fi.Mode(), err)
		}
	}
}
