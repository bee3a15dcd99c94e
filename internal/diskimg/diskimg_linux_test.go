package diskimg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/leakcheck"
)

// requireImages skips unless this host can format and loop-mount images,
// and checks that the test leaves no mount or loop device below dir.
func requireImages(t *testing.T) string {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip("ext4 images cannot work here: " + why)
	}
	dir := t.TempDir()
	// IDs names no sandbox: only mounts and loop devices below dir count,
	// not the sandboxes of tests running beside these.
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"diskimg-test"}})
	return dir
}

// allocated is what a file takes on the host's disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func mount(t *testing.T, image, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Mount(image, dir, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Unmount(dir); err != nil {
			t.Error(err)
		}
	})
}

func TestTemplatesMakeSparseCappedImages(t *testing.T) {
	dir := requireImages(t)
	const size = 64 << 20
	const bpi = 8192
	tpl, err := NewTemplates(filepath.Join(dir, "templates"), FormatOptions{BytesPerInode: bpi}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent first uses share one format.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = tpl.Make(context.Background(), filepath.Join(dir, fmt.Sprintf("img%d", i)), size) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("make img%d: %v", i, err)
		}
	}
	if got := tpl.Sizes(); !slices.Equal(got, []int64{size}) {
		t.Fatalf("templates: %v, want one of %d", got, size)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "templates"))
	if len(ents) != 1 {
		t.Fatalf("template dir holds %d entries, want 1", len(ents))
	}

	img := filepath.Join(dir, "img0")
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Fatalf("image size %d, want %d", fi.Size(), size)
	}
	if a, tmpl := allocated(t, img), allocated(t, filepath.Join(dir, "templates", "67108864.img")); a > tmpl || a > 8<<20 {
		t.Fatalf("image takes %d bytes on disk (template %d): not sparse", a, tmpl)
	}

	mnt := filepath.Join(dir, "mnt")
	mount(t, img, mnt)
	u, err := Stat(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if u.BytesLimit > size || u.BytesLimit < size*8/10 {
		t.Fatalf("filesystem size %d, want about %d", u.BytesLimit, size)
	}
	if u.InodesLimit != size/bpi {
		t.Fatalf("inodes %d, want %d (one per %d bytes)", u.InodesLimit, size/bpi, bpi)
	}
	if !IsMountpoint(mnt) || IsMountpoint(dir) {
		t.Fatalf("IsMountpoint: %s %v, %s %v", mnt, IsMountpoint(mnt), dir, IsMountpoint(dir))
	}

	// The cap holds: a write past it fails with ENOSPC, and the image never
	// takes more of the host than its size.
	f, err := os.Create(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 2*size/len(chunk); i++ {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing twice the cap: %v, want ENOSPC", err)
	}
	if a := allocated(t, img); a > size {
		t.Fatalf("image takes %d bytes on the host, over its size %d", a, size)
	}
	// The other images are their own filesystems.
	mnt1 := filepath.Join(dir, "mnt1")
	mount(t, filepath.Join(dir, "img1"), mnt1)
	if _, err := os.Stat(filepath.Join(mnt1, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("img1 sees img0's file: %v", err)
	}
}

func TestTemplatesEvictOldSizes(t *testing.T) {
	dir := requireImages(t)
	tpl, err := NewTemplates(filepath.Join(dir, "templates"), FormatOptions{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, size := range []int64{32 << 20, 33 << 20, 32 << 20, 34 << 20} {
		if err := tpl.Make(context.Background(), filepath.Join(dir, fmt.Sprintf("img%d", i)), size); err != nil {
			t.Fatal(err)
		}
	}
	// 33 MiB was used least recently.
	if got, want := tpl.Sizes(), []int64{32 << 20, 34 << 20}; !slices.Equal(got, want) {
		t.Fatalf("templates kept: %v, want %v", got, want)
	}
	// A new Templates finds the kept ones and sweeps half-made ones.
	if err := os.WriteFile(filepath.Join(dir, "templates", tmpPrefix+"1.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := NewTemplates(filepath.Join(dir, "templates"), FormatOptions{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := again.Sizes(), []int64{32 << 20, 34 << 20}; !slices.Equal(got, want) {
		t.Fatalf("templates found: %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "templates", tmpPrefix+"1.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("half-made template left: %v", err)
	}
}

func TestMakeRefusesExisting(t *testing.T) {
	dir := requireImages(t)
	tpl, err := NewTemplates(filepath.Join(dir, "templates"), FormatOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "taken")
	if err := os.WriteFile(dst, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tpl.Make(context.Background(), dst, 32<<20); !errors.Is(err, os.ErrExist) {
		t.Fatalf("make over an existing file: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "mine" {
		t.Fatalf("existing file changed to %q", b)
	}
}

func TestReadOnlyMount(t *testing.T) {
	dir := requireImages(t)
	img := filepath.Join(dir, "img")
	if err := Format(context.Background(), img, 32<<20, FormatOptions{Label: "a-label-longer-than-sixteen"}); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, mnt, true); err != nil {
		t.Fatal(err)
	}
	defer Unmount(mnt)
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to a read-only mount: %v, want EROFS", err)
	}
}

// TestConcurrentMounts: a burst of sandboxes mounts its disks at once, and
// the kernel names the same free loop device to every caller until one
// configures it; all must mount (20 at once failed with "no free loop
// device" before attaches were serialised).
func TestConcurrentMounts(t *testing.T) {
	dir := requireImages(t)
	const n = 24
	tpl := filepath.Join(dir, "tpl")
	if err := Format(context.Background(), tpl, 16<<20, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(tpl)
	if err != nil {
		t.Fatal(err)
	}
	mnts := make([]string, n)
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("img%d", i))
		if err := os.WriteFile(img, data, 0o600); err != nil {
			t.Fatal(err)
		}
		mnts[i] = filepath.Join(dir, fmt.Sprintf("mnt%d", i))
		if err := os.Mkdir(mnts[i], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = Mount(filepath.Join(dir, fmt.Sprintf("img%d", i)), mnts[i], false) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("mount %d: %v", i, err)
			continue
		}
		if err := Unmount(mnts[i]); err != nil {
			t.Error(err)
		}
	}
}
