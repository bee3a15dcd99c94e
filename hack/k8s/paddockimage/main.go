// Command paddockimage builds paddock's container image from this tree and
// writes it as a tarball (`ctr images import`, `docker load`, or any tool
// that pushes one): static paddock, paddock-agent and paddock-init in
// /usr/local/bin, one layer each, over a base layer with /etc/passwd,
// /tmp and the data dir, paddock as the entrypoint; /paddock-agent links to
// the agent, so that the image is also the Kubernetes driver's agent image.
// No Docker: go build and go-containerregistry. The chart's install test
// uses it, and so can anyone installing the chart while no image is
// published.
//
//	go run ./hack/k8s/paddockimage -ref registry.example/paddock:v0.1.0 -o paddock.tar
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "paddockimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("paddockimage", flag.ContinueOnError)
	ref := fs.String("ref", "", "image reference to record in the tarball")
	out := fs.String("o", "", "tarball to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *out == "" || fs.NArg() > 0 {
		return errors.New("usage: paddockimage -ref REF -o OUT.tar (run from the module's root)")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return err
	}
	bin, err := os.MkdirTemp("", "paddockimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	if err := build(bin, false, "./cmd/paddock-agent"); err != nil {
		return err
	}
	if err := build(bin, true, "./cmd/paddock", "./cmd/paddock-init"); err != nil {
		return err
	}
	img, err := image(bin)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(*out, tag, img)
}

// build compiles pkgs into dir, static. paddock and paddock-init (cgo)
// link libcontainer's C half: static with glibc, with Go's own resolver
// and user lookup.
func build(dir string, cgo bool, pkgs ...string) error {
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	env := "CGO_ENABLED=0"
	if cgo {
		args = append(args, "-tags", "netgo,osusergo", "-ldflags", `-s -w -linkmode external -extldflags "-static"`)
		env = "CGO_ENABLED=1"
	} else {
		args = append(args, "-ldflags", "-s -w")
	}
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), env)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", pkgs, err, b)
	}
	return nil
}

// image stacks the base layer and one layer per binary of dir.
func image(dir string) (v1.Image, error) {
	base, err := layer(func(tw *tar.Writer) error {
		for _, d := range []string{"etc/", "tmp/", "var/", "var/lib/", "var/lib/paddock/"} {
			mode := int64(0o755)
			if d == "tmp/" {
				mode = 0o1777
			}
			if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode}); err != nil {
				return err
			}
		}
		if err := file(tw, "etc/passwd", []byte("root:x:0:0:root:/root:/sbin/nologin\n"), 0o644); err != nil {
			return err
		}
		return file(tw, "etc/group", []byte("root:x:0:\n"), 0o644)
	})
	if err != nil {
		return nil, err
	}
	layers := []v1.Layer{base}
	for _, n := range []string{"paddock-agent", "paddock-init", "paddock"} {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		l, err := layer(func(tw *tar.Writer) error {
			for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
				if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
					return err
				}
			}
			if err := file(tw, "usr/local/bin/"+n, data, 0o755); err != nil {
				return err
			}
			if n != "paddock-agent" {
				return nil
			}
			// Where the Kubernetes driver's init container runs it: this
			// image is its own agent image (--k8s-agent-image).
			return tw.WriteHeader(&tar.Header{Name: "paddock-agent", Typeflag: tar.TypeSymlink, Linkname: "/usr/local/bin/paddock-agent", Mode: 0o777})
		})
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/local/bin"}
	cf.Config.Entrypoint = []string{"/usr/local/bin/paddock"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

func file(tw *tar.Writer, name string, data []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// layer is the layer whose tar fill writes.
func layer(fill func(*tar.Writer) error) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := fill(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
