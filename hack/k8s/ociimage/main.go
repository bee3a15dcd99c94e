// Command ociimage packs static binaries into a one-layer linux/amd64 image
// and writes it as a tarball that `ctr images import` loads. The test
// cluster uses it for its pause image, which must be in containerd before
// the first Pod because the cluster pulls from nowhere.
//
//	ociimage -ref docker.io/paddock/pause:test -o pause.tar -entrypoint /pause /pause=./pause
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	ref := fs.String("ref", "", "image reference to record in the tarball")
	out := fs.String("o", "", "tarball to write")
	entrypoint := fs.String("entrypoint", "", "entrypoint (one path; no arguments)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *out == "" || fs.NArg() == 0 {
		return errors.New("usage: ociimage -ref REF -o OUT.tar [-entrypoint /path] /dest=src...")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return err
	}
	layer, err := packLayer(fs.Args())
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if *entrypoint != "" {
		cf.Config.Entrypoint = []string{*entrypoint}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return tarball.WriteToFile(*out, tag, img)
}

// packLayer writes each /dest=src file, executable, into one layer.
func packLayer(files []string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		dest, src, ok := strings.Cut(f, "=")
		dest = strings.TrimPrefix(dest, "/")
		if !ok || dest == "" || strings.Contains(dest, "/") {
			return nil, fmt.Errorf("%q: want /name=source (files at the image root only)", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Name: dest, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
