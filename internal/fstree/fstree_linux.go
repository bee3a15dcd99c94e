package fstree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// maxOpen bounds the directories Remove holds open at once: past that
// depth it moves the deeper subtree up to the root and takes it later.
const maxOpen = 32

// batch is how many names Remove reads from a directory at a time.
const batch = 256

// flattened names the subtrees Remove moves up; the counter keeps them
// apart within the process, the prefix from anything a sandbox named.
var flattened atomic.Uint64

// Remove deletes path and everything below it without following any
// symlink, with at most maxOpen directories open and a stack of bounded
// depth. A missing path is not an error. Like os.RemoveAll it relies on
// the caller's permission to unlink everything (root does).
func Remove(path string) error {
	path = filepath.Clean(path)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
			return &fs.PathError{Op: "unlink", Path: path, Err: err}
		}
		return nil
	}
	root, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	err = emptyDir(root)
	unix.Close(root)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := unix.Rmdir(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "rmdir", Path: path, Err: err}
	}
	return nil
}

// frame is one open directory on the way down.
type frame struct {
	fd   int
	name string // its name in the parent frame
}

// emptyDir removes everything in the directory root, depth first, without
// recursion. A directory met at depth maxOpen is renamed into root under a
// fresh name, which root's next reading finds; each move takes a subtree's
// depth back to one, so the loop ends.
func emptyDir(root int) error {
	stack := []frame{{fd: root}}
	defer func() {
		for _, f := range stack[1:] {
			unix.Close(f.fd)
		}
	}()
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		names, err := readNames(top.fd)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			// Empty: go back up and remove it from its parent.
			if len(stack) == 1 {
				return nil
			}
			done := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			unix.Close(done.fd)
			parent := stack[len(stack)-1]
			if err := unix.Unlinkat(parent.fd, done.name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("rmdir %s: %w", done.name, err)
			}
			continue
		}
		for _, name := range names {
			err := unix.Unlinkat(top.fd, name, 0)
			switch {
			case err == nil, errors.Is(err, unix.ENOENT):
				continue
			case !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM):
				// Linux answers EISDIR for a directory; EPERM is POSIX's.
				return fmt.Errorf("unlink %s: %w", name, err)
			}
			err = unix.Unlinkat(top.fd, name, unix.AT_REMOVEDIR)
			switch {
			case err == nil, errors.Is(err, unix.ENOENT):
				continue
			case !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST):
				return fmt.Errorf("rmdir %s: %w", name, err)
			}
			if len(stack) >= maxOpen {
				moved := ".fstree-" + strconv.FormatUint(flattened.Add(1), 10)
				if err := unix.Renameat2(top.fd, name, root, moved, unix.RENAME_NOREPLACE); err != nil {
					return fmt.Errorf("move %s up: %w", name, err)
				}
				continue
			}
			fd, err := unix.Openat(top.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return fmt.Errorf("open %s: %w", name, err)
			}
			stack = append(stack, frame{fd: fd, name: name})
			break // read the child first; this directory is read again after
		}
	}
	return nil
}

// readNames reads up to batch names of the directory dirfd from its start,
// through a descriptor of its own, so names already removed are not met
// again and the caller's descriptor keeps no offset.
func readNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen directory: %w", err)
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	names, err := f.Readdirnames(batch)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	return names, nil
}
