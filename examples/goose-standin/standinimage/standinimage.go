// Package standinimage builds the goose stand-in (examples/goose-standin)
// as one static binary and packs it into a docker-archive image that
// paddock's `image import` accepts. Paddock's tests and `paddock demo` use
// it to get an image for a project that runs the stand-in, with no registry
// and no network.
package standinimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// Module is the Go module the stand-in's source belongs to.
	Module = "github.com/paddock-dev/paddock"
	// Package is the stand-in's main package.
	Package = Module + "/examples/goose-standin"
	// BinaryName is the name Build gives the binary.
	BinaryName = "goose-standin"
	// BinaryPath is where the image holds the binary.
	BinaryPath = "/usr/local/bin/goose-standin"
	// DefaultRef is the image's reference when WriteImage gets none. Its
	// registry host does not exist, so nothing ever tries to pull it.
	DefaultRef = "paddock.local/examples/goose-standin:latest"
	// Port is the port the image's stand-in listens on (GOOSE_PORT), a
	// project's default app port.
	Port = 3001
	// PathRoot is the image's GOOSE_PATH_ROOT and working directory, mode
	// 1777 so that the app can write it whatever user it runs as: the
	// stand-in keeps its sessions under PathRoot/data/sessions, so a
	// project lists PathRoot as its persistent path (or sets its own
	// GOOSE_PATH_ROOT and lists that).
	PathRoot = "/var/lib/goose"
	// HealthPath answers 200 "ok" without the secret.
	HealthPath = "/status"
)

// Env is the image's environment. GOOSE_HOST is 0.0.0.0 because paddock
// reaches a sandbox's port over the sandbox's own network interface;
// GOOSE_SERVER__SECRET_KEY is left to the project (an image must not carry
// a secret).
var Env = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"GOOSE_HOST=0.0.0.0",
	fmt.Sprintf("GOOSE_PORT=%d", Port),
	"GOOSE_TLS=false",
	"GOOSE_PATH_ROOT=" + PathRoot,
	"GOOSE_DISABLE_KEYRING=1",
}

// Build compiles the stand-in with goBin ("go" from PATH if empty) into
// outDir/goose-standin and returns that path: CGO_ENABLED=0 (a static
// binary that runs in any rootfs), -trimpath, no VCS stamp, stripped. It
// targets the host's GOOS and GOARCH unless the environment sets them.
// It needs paddock's source tree: the one this package was compiled from,
// or else the one holding the working directory.
func Build(ctx context.Context, goBin, outDir string) (binaryPath string, err error) {
	if goBin == "" {
		if goBin, err = exec.LookPath("go"); err != nil {
			return "", fmt.Errorf("standinimage: no go toolchain on PATH: %w", err)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("standinimage: %w", err)
	}
	out, err := filepath.Abs(filepath.Join(outDir, BinaryName))
	if err != nil {
		return "", fmt.Errorf("standinimage: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, Package)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("standinimage: go build %s: %w\n%s", Package, err, bytes.TrimSpace(output))
	}
	return out, nil
}

// moduleRoot finds the directory of paddock's go.mod: above this source
// file when the binary was built from a checkout without -trimpath, else
// above the working directory.
func moduleRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("standinimage: paddock's source (a go.mod of module %s) is not above %q: build from a checkout", Module, starts)
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == Module
		}
	}
	return false
}

// layerTime is every entry's mtime and the image's creation time, so the
// same binary always gives the same image digest.
var layerTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteImage writes a docker-archive (docker save format) of a one-layer
// image to tarPath: the binary at /usr/local/bin/goose-standin (mode 0755),
// an empty PathRoot and /tmp (both mode 1777), Entrypoint [goose-standin], Cmd [agent], Env,
// WorkingDir PathRoot, tagged ref (DefaultRef if empty). The binary must
// be a static Linux ELF executable; its machine gives the image's
// architecture. The archive replaces tarPath atomically.
func WriteImage(binaryPath, tarPath, ref string) error {
	if ref == "" {
		ref = DefaultRef
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("standinimage: image reference %q: %w", ref, err)
	}
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return fmt.Errorf("standinimage: %w", err)
	}
	arch, err := staticLinuxArch(bin)
	if err != nil {
		return fmt.Errorf("standinimage: %s: %w", binaryPath, err)
	}
	layerTar, err := buildLayer(bin)
	if err != nil {
		return fmt.Errorf("standinimage: layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("standinimage: layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: layerTime}, CreatedBy: "standinimage.WriteImage", Comment: "goose stand-in"},
	})
	if err != nil {
		return fmt.Errorf("standinimage: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("standinimage: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch.goarch
	cf.Variant = arch.variant
	cf.Created = v1.Time{Time: layerTime}
	cf.Config = v1.Config{
		Entrypoint:   []string{BinaryPath},
		Cmd:          []string{"agent"},
		Env:          append([]string(nil), Env...),
		WorkingDir:   PathRoot,
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "goose-standin",
			"org.opencontainers.image.description": "a stand-in for goose's agent server (goosed v1.31) with echo replies",
		},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("standinimage: %w", err)
	}
	return writeAtomic(tarPath, func(w io.Writer) error { return tarball.Write(tag, img, w) })
}

// buildLayer is the layer's uncompressed tar: directories first, owned by
// root.
func buildLayer(bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		mode int64
	}{
		{"tmp/", 0o1777}, {"usr/", 0o755}, {"usr/local/", 0o755}, {"usr/local/bin/", 0o755},
		// PathRoot is writable by any user, sticky as /tmp: paddock runs a
		// project's app as the sandbox's unprivileged user.
		{"var/", 0o755}, {"var/lib/", 0o755}, {strings.TrimPrefix(PathRoot, "/") + "/", 0o1777},
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: layerTime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinaryPath, "/"), Mode: 0o755,
		Size: int64(len(bin)), ModTime: layerTime, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type imageArch struct{ goarch, variant string }

// staticLinuxArch checks that bin is a statically linked Linux ELF
// executable and returns its architecture as an image config names it.
func staticLinuxArch(bin []byte) (imageArch, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return imageArch{}, fmt.Errorf("not a Linux ELF executable (build it for GOOS=linux): %w", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return imageArch{}, fmt.Errorf("ELF type %s is not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return imageArch{}, errors.New("dynamically linked (it names an ELF interpreter): build it with CGO_ENABLED=0")
		}
	}
	le := f.ByteOrder.String() == "LittleEndian"
	switch {
	case f.Machine == elf.EM_X86_64:
		return imageArch{goarch: "amd64"}, nil
	case f.Machine == elf.EM_AARCH64:
		return imageArch{goarch: "arm64", variant: "v8"}, nil
	case f.Machine == elf.EM_386:
		return imageArch{goarch: "386"}, nil
	case f.Machine == elf.EM_ARM:
		return imageArch{goarch: "arm", variant: "v7"}, nil
	case f.Machine == elf.EM_RISCV && f.Class == elf.ELFCLASS64:
		return imageArch{goarch: "riscv64"}, nil
	case f.Machine == elf.EM_PPC64 && le:
		return imageArch{goarch: "ppc64le"}, nil
	case f.Machine == elf.EM_PPC64:
		return imageArch{goarch: "ppc64"}, nil
	case f.Machine == elf.EM_S390:
		return imageArch{goarch: "s390x"}, nil
	case f.Machine == elf.EM_LOONGARCH:
		return imageArch{goarch: "loong64"}, nil
	}
	return imageArch{}, fmt.Errorf("unsupported ELF machine %s", f.Machine)
}

// writeAtomic writes path through a temp file in the same directory that
// is renamed over it once whole.
func writeAtomic(path string, write func(io.Writer) error) error {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("standinimage: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("standinimage: write %s: %w", path, err)
	}
	return nil
}
