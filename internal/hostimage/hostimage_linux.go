// Package hostimage builds the "host" image, the one every sandbox can
// start from with no pull: the host's /usr (and any non-merged /bin,
// /lib...) bound read-only, over a synthesized /etc that carries none of
// the host's secrets (no shadow, keys, machine-id). It is built once per
// data dir under <data>/images/host-<content hash>/.
package hostimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/paddock-dev/paddock/internal/runtime"
)

// hostRoot is the host filesystem the image is taken from; a variable so
// tests could point it elsewhere.
var hostRoot = "/"

// hostCache remembers the built image per data dir: building takes a few
// milliseconds of file copies and should happen once per process.
var (
	hostMu    sync.Mutex
	hostCache = map[string]*runtime.Rootfs{} // guarded by hostMu
)

// topDirs are the merged-/usr candidates: a symlink on the host (bin ->
// usr/bin) becomes the same symlink in the image; a real directory becomes a
// read-only bind.
var topDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// etcCopies is the allowlist of harmless host files copied into /etc. Every
// other host /etc file (shadow, ssh keys, machine-id, credentials...) stays out.
var etcCopies = []string{
	"ld.so.cache",
	"ld.so.conf",
	"ssl/certs/ca-certificates.crt",
	"ssl/openssl.cnf",
	"localtime",
	"profile",
	"bash.bashrc",
	"shells",
	"services",
	"protocols",
	"mime.types",
	"inputrc",
	"debian_version",
	"os-release",
}

// etcDirCopies are directories whose regular files (or, for alternatives,
// symlinks) are copied one level deep.
var etcDirCopies = []string{"ld.so.conf.d", "alternatives"}

// Build returns the host image rooted under dataDir/images, building it the
// first time. The lower dir's name is the hash of its content.
func Build(dataDir string) (*runtime.Rootfs, error) {
	if dataDir == "" {
		return nil, errors.New("host image: empty data dir")
	}
	key := filepath.Clean(dataDir)
	hostMu.Lock()
	defer hostMu.Unlock()
	if r, ok := hostCache[key]; ok {
		return r, nil
	}
	r, err := buildHost(key)
	if err != nil {
		return nil, fmt.Errorf("host image: %w", err)
	}
	hostCache[key] = r
	return r, nil
}

func buildHost(dataDir string) (*runtime.Rootfs, error) {
	imagesDir := filepath.Join(dataDir, "images")
	if err := os.MkdirAll(imagesDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(imagesDir, ".build-host-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	binds, err := populateHost(tmp)
	if err != nil {
		return nil, err
	}
	sum, err := treeHash(tmp)
	if err != nil {
		return nil, fmt.Errorf("hash: %w", err)
	}
	final := filepath.Join(imagesDir, "host-"+sum[:20])
	if err := os.Rename(tmp, final); err != nil {
		// Another process built the same content first: use its copy and
		// leave it untouched, since sandboxes may already use it.
		if _, statErr := os.Stat(final); statErr != nil {
			return nil, fmt.Errorf("install %s: %w", final, err)
		}
	}
	return &runtime.Rootfs{Lower: final, ReadOnlyBinds: binds}, nil
}

// populateHost writes the skeleton into dir and returns the binds it needs.
func populateHost(dir string) ([]runtime.Bind, error) {
	type d struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}
	dirs := []d{
		{"usr", 0o755, 0, 0}, {"proc", 0o555, 0, 0}, {"sys", 0o555, 0, 0}, {"dev", 0o755, 0, 0},
		{"tmp", os.ModeSticky | 0o777, 0, 0}, {"run", 0o755, 0, 0}, {".paddock", 0o755, 0, 0}, {"root", 0o700, 0, 0},
		{"home", 0o755, 0, 0}, {"home/user", 0o755, 1000, 1000}, {"etc", 0o755, 0, 0},
		{"var", 0o755, 0, 0}, {"var/tmp", os.ModeSticky | 0o777, 0, 0}, {"var/cache", 0o755, 0, 0},
		{"var/lib", 0o755, 0, 0}, {"var/log", 0o755, 0, 0}, {"mnt", 0o755, 0, 0},
		{"opt", 0o755, 0, 0}, {"srv", 0o755, 0, 0},
	}
	for _, e := range dirs {
		p := filepath.Join(dir, e.path)
		if err := os.Mkdir(p, e.mode); err != nil {
			return nil, err
		}
		// Mkdir applies the umask and drops the sticky bit: set it exactly.
		if err := os.Chmod(p, e.mode); err != nil {
			return nil, err
		}
		if err := os.Lchown(p, e.uid, e.gid); err != nil {
			return nil, err
		}
	}
	// The agent binary is bind-mounted over this empty file.
	if err := writeFile(filepath.Join(dir, ".paddock", "agent"), nil, 0o755); err != nil {
		return nil, err
	}

	binds := []runtime.Bind{{Source: filepath.Join(hostRoot, "usr"), Target: "/usr"}}
	for _, name := range topDirs {
		hp := filepath.Join(hostRoot, name)
		fi, err := os.Lstat(hp)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, err
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return nil, err
			}
			// Only merged-/usr links are recreated; anything else would point
			// at a host path the sandbox does not have.
			if clean := strings.TrimPrefix(filepath.Clean(target), "/"); !strings.HasPrefix(clean, "usr/") {
				continue
			}
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				return nil, err
			}
		case fi.IsDir():
			if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
				return nil, err
			}
			binds = append(binds, runtime.Bind{Source: hp, Target: "/" + name})
		}
	}
	if err := writeEtc(filepath.Join(dir, "etc")); err != nil {
		return nil, fmt.Errorf("etc: %w", err)
	}
	return binds, nil
}

func writeEtc(etc string) error {
	shell := "/bin/sh"
	if _, err := os.Stat(filepath.Join(hostRoot, "usr/bin/bash")); err == nil {
		shell = "/bin/bash"
	}
	synth := map[string]string{
		"passwd": "root:x:0:0:root:/root:" + shell + "\n" +
			"user:x:1000:1000:user:/home/user:" + shell + "\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group": "root:x:0:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
		"hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		// The UTS hostname is the sandbox's own; this file is only a fallback.
		"hostname": "sandbox\n",
		// No network yet: an empty resolver config makes lookups fail fast.
		"resolv.conf":   "",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nethers: files\nrpc: files\n",
	}
	for name, content := range synth {
		if err := writeFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	// mtab points into the sandbox's own /proc, never the host's.
	if err := os.Symlink("../proc/self/mounts", filepath.Join(etc, "mtab")); err != nil {
		return err
	}
	hostEtc := filepath.Join(hostRoot, "etc")
	for _, rel := range etcCopies {
		if err := copyResolved(filepath.Join(hostEtc, rel), filepath.Join(etc, rel)); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	for _, rel := range etcDirCopies {
		entries, err := os.ReadDir(filepath.Join(hostEtc, rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(etc, rel), 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			src, dst := filepath.Join(hostEtc, rel, e.Name()), filepath.Join(etc, rel, e.Name())
			switch {
			case e.Type()&fs.ModeSymlink != 0:
				// Alternatives are symlinks by design (awk -> /etc/alternatives/awk
				// -> /usr/bin/mawk): recreate the link itself, whose target is
				// resolved inside the sandbox, not on the host.
				target, err := os.Readlink(src)
				if err != nil {
					return err
				}
				if err := os.Symlink(target, dst); err != nil {
					return err
				}
			case e.Type().IsRegular():
				if err := copyResolved(src, dst); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// copyResolved copies a regular file, following symlinks only while they
// stay inside the host's /usr or /etc; a missing source is skipped.
func copyResolved(src, dst string) error {
	real, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if !within(real, filepath.Join(hostRoot, "usr")) && !within(real, filepath.Join(hostRoot, "etc")) {
		return nil
	}
	f, err := os.Open(real)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm()&0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, f); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// treeHash hashes names, modes, owners, link targets and file contents, so
// equal trees get equal names and any difference a new name.
func treeHash(root string) (string, error) {
	var paths []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		var uid, gid uint32
		if st != nil {
			uid, gid = st.Uid, st.Gid
		}
		fmt.Fprintf(h, "%q %o %d %d\n", rel, fi.Mode(), uid, gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "-> %q\n", t)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
