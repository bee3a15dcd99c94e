package standinimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// standinBinary builds the stand-in once per test binary; it skips when
// there is no go toolchain or the host is not Linux (the image holds a
// Linux binary).
func standinBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the image holds a Linux binary; Build targets the host")
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "standinimage-test-"); buildErr != nil {
			return
		}
		buildPath, buildErr = Build(t.Context(), "", buildDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func TestBuildIsStatic(t *testing.T) {
	bin := standinBinary(t)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	arch, err := staticLinuxArch(data)
	if err != nil {
		t.Fatal(err)
	}
	if arch.goarch != runtime.GOARCH {
		t.Errorf("arch %q, want %q", arch.goarch, runtime.GOARCH)
	}
}

// TestWriteImage reads the archive back with go-containerregistry, as any
// docker-archive reader would.
func TestWriteImage(t *testing.T) {
	bin := standinBinary(t)
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, wantTag string
	}{
		{"default ref", "", DefaultRef},
		{"given ref", "example.com/demo/goose:v1", "example.com/demo/goose:v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "img.tar")
			if err := WriteImage(bin, p, tt.ref); err != nil {
				t.Fatal(err)
			}
			tag, err := name.NewTag(tt.wantTag)
			if err != nil {
				t.Fatal(err)
			}
			img, err := tarball.ImageFromPath(p, &tag)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
				t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
			}
			if !slices.Equal(c.Entrypoint, []string{BinaryPath}) || !slices.Equal(c.Cmd, []string{"agent"}) || c.WorkingDir != PathRoot {
				t.Errorf("config %+v", c)
			}
			if !slices.Contains(c.Env, "GOOSE_PORT=3001") || !slices.Contains(c.Env, "GOOSE_HOST=0.0.0.0") {
				t.Errorf("env %q", c.Env)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("layers %d, %v", len(layers), err)
			}
			rc, err := layers[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			tr := tar.NewReader(rc)
			found := false
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if h.Uid != 0 || h.Gid != 0 {
					t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
				}
				if h.Name == strings.TrimPrefix(BinaryPath, "/") {
					found = true
					if h.FileInfo().Mode().Perm() != 0o755 || h.Typeflag != tar.TypeReg {
						t.Errorf("binary mode %v type %c", h.FileInfo().Mode(), h.Typeflag)
					}
					got, _ := io.ReadAll(tr)
					if !bytes.Equal(got, want) {
						t.Errorf("binary in the layer differs from the built one")
					}
				}
			}
			if !found {
				t.Errorf("no %s in the layer", BinaryPath)
			}
		})
	}
	t.Run("deterministic", func(t *testing.T) {
		dir := t.TempDir()
		var digests []string
		for _, n := range []string{"a.tar", "b.tar"} {
			p := filepath.Join(dir, n)
			if err := WriteImage(bin, p, ""); err != nil {
				t.Fatal(err)
			}
			img, err := tarball.ImageFromPath(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			d, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			digests = append(digests, d.String())
		}
		if digests[0] != digests[1] {
			t.Errorf("two writes of one binary differ: %v", digests)
		}
	})
}

func TestWriteImageRefuses(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, bin, ref, want string
	}{
		{"not ELF", script, "", "not a Linux ELF"},
		{"missing binary", filepath.Join(dir, "nope"), "", "no such file"},
		{"bad ref", script, "UPPER/Case:??", "image reference"},
	}
	// A dynamically linked executable, where the host has one.
	for _, p := range []string{"/bin/ls", "/usr/bin/env"} {
		if data, err := os.ReadFile(p); err == nil && bytes.HasPrefix(data, []byte("\x7fELF")) {
			if _, err := staticLinuxArch(data); err != nil && strings.Contains(err.Error(), "dynamically linked") {
				tests = append(tests, struct{ name, bin, ref, want string }{"dynamic ELF", p, "", "dynamically linked"})
				break
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "img.tar")
			err := WriteImage(tt.bin, out, tt.ref)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("an archive was left at %s", out)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(t.Context(), filepath.Join(t.TempDir(), "no-go"), t.TempDir()); err == nil {
		t.Error("Build with a missing go binary succeeded")
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
