package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/paddock-dev/paddock/sdk"
)

// remoteRef matches <id>:<absolute path>. A local path cannot match by
// accident: sandbox ids have no '.' or '/', remote paths start with '/'.
// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var remoteRef = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([a-z0-9][a-z0-9-]{0,62}):(/.*)$`) })

func splitRemote(s string) (id, p string, ok bool) {
	m := remoteRef().FindStringSubmatch(s)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// copyCmd copies between the host and a sandbox. Directories travel as tar
// streams; in both directions a directory's contents land in the
// destination (created if needed), like cp -r SRC/. DST.
//
//	cp ./f.txt id:/work/g.txt   writes /work/g.txt
//	cp ./f.txt id:/work/        writes /work/f.txt
//	cp ./dir   id:/work         writes dir's contents into /work
//	cp id:/work/g.txt ./        writes ./g.txt ("-" writes to stdout)
//	cp id:/work ./out           writes /work's contents into ./out ("-": a tar on stdout)
//
// A remote source is read as a file first; only when the sandbox answers
// is_a_directory is it fetched as an archive.
func copyCmd(ctx context.Context, c *sdk.Client, src, dst string, stdout, stderr io.Writer) error {
	srcID, srcPath, srcRemote := splitRemote(src)
	dstID, dstPath, dstRemote := splitRemote(dst)
	switch {
	case srcRemote && dstRemote:
		return usagef("sandbox cp: copying between sandboxes is not supported; copy through a local path")
	case !srcRemote && !dstRemote:
		return usagef("sandbox cp: one side must be <id>:<absolute path>")
	case dstRemote:
		return copyIn(ctx, c.Sandbox(dstID), src, dstPath, stderr)
	default:
		return copyOut(ctx, c.Sandbox(srcID), srcPath, dst, stdout, stderr)
	}
}

func copyIn(ctx context.Context, sb *sdk.Sandbox, local, remote string, stderr io.Writer) error {
	fi, err := os.Stat(local)
	if err != nil {
		return err
	}
	// A directory's contents go into remote itself (entries named "."
	// and below); a file goes into remote/ or becomes remote.
	dir, name := remote, "."
	switch {
	case fi.IsDir():
	case strings.HasSuffix(remote, "/"):
		name = filepath.Base(local)
	default:
		dir, name = path.Dir(remote), path.Base(remote)
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() { // owned: copyIn waits for it below
		defer close(done)
		pw.CloseWithError(tarLocal(pw, local, name, fi))
	}()
	res, err := sb.WriteTar(ctx, dir, pr)
	pr.CloseWithError(errors.New("upload ended"))
	<-done
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "copied %d files, %d bytes to %s:%s\n", res.Files, res.Bytes, sb.ID, path.Join(dir, name))
	return nil
}

// tarLocal writes local (a file or a directory tree) as a tar stream whose
// entries start with name.
func tarLocal(w io.Writer, local, name string, fi fs.FileInfo) error {
	tw := tar.NewWriter(w)
	if !fi.IsDir() {
		if err := addFile(tw, local, name, fi); err != nil {
			return err
		}
		return tw.Close()
	}
	err := filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(local, p)
		if err != nil {
			return err
		}
		if rel == "." && name == "." {
			return nil // the target directory itself: the agent creates it
		}
		entry := path.Join(name, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		return addFile(tw, p, entry, info)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, p, name string, fi fs.FileInfo) error {
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() && link == "" {
		return nil // sockets, devices, fifos have no place in a sandbox copy
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("tar %s: %w", p, err)
	}
	h.Name = name
	if fi.IsDir() {
		h.Name += "/"
	}
	// Ownership is the sandbox's business: the agent assigns its user.
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
		return fmt.Errorf("tar %s: %w", p, err)
	}
	return nil
}

// copyOut copies a file, or a directory's contents, out of the sandbox.
func copyOut(ctx context.Context, sb *sdk.Sandbox, remote, local string, stdout, stderr io.Writer) error {
	f, err := sb.ReadFile(ctx, remote)
	if sdk.IsCode(err, "is_a_directory") {
		return copyDirOut(ctx, sb, remote, local, stdout, stderr)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if local == "-" {
		_, err := io.Copy(stdout, f)
		return err
	}
	if fi, err := os.Stat(local); err == nil && fi.IsDir() {
		local = filepath.Join(local, path.Base(remote))
	}
	mode := fs.FileMode(f.Info.Mode).Perm()
	if mode == 0 {
		mode = 0o644
	}
	out, err := os.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, f); err != nil {
		out.Close()
		return fmt.Errorf("copy to %s: %w", local, err)
	}
	return out.Close()
}

// copyDirOut extracts the archive of a sandbox directory into local,
// creating it if needed; "-" writes the tar itself to stdout.
func copyDirOut(ctx context.Context, sb *sdk.Sandbox, remote, local string, stdout, stderr io.Writer) error {
	rc, err := sb.ReadArchive(ctx, remote)
	if err != nil {
		return err
	}
	defer rc.Close()
	if local == "-" {
		_, err := io.Copy(stdout, rc)
		return err
	}
	if err := os.MkdirAll(local, 0o755); err != nil {
		return err
	}
	res, err := extractTar(rc, local)
	if err != nil {
		return fmt.Errorf("extract %s:%s into %s: %w", sb.ID, remote, local, err)
	}
	fmt.Fprintf(stderr, "copied %d files, %d bytes from %s:%s to %s\n", res.files, res.bytes, sb.ID, remote, local)
	return nil
}
