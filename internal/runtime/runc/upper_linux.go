package runc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/internal/agent"
)

// prepareUpper readies a Store image sandbox's fresh upper dir before the
// overlay is mounted, so the mountpoints paddock needs and the user's home
// exist whatever the image holds. It writes only into upper, which Create
// has just made: the layer directories are shared by every sandbox of the
// image and are never written. Mountpoints runc makes itself when they are
// missing (/proc, /sys, /dev, /tmp) and the agent's state dir (/run/paddock,
// which the agent creates) are left to them.
//
// Entries made here shadow what the image has at the same path, which is
// why /etc/resolv.conf and /etc/hosts are made only when bindEtc says the
// driver binds its own over them (a sandbox with a network); without one
// the image's files stay visible.
func prepareUpper(upper string, lowers []string, bindEtc bool) error {
	type entry struct {
		rel      string
		dir      bool
		uid, gid int
	}
	entries := []entry{
		{rel: ".paddock", dir: true},
		{rel: agent.BinaryPath[1:]},
	}
	if bindEtc {
		entries = append(entries, entry{rel: "etc", dir: true},
			entry{rel: "etc/" + resolvConfName}, entry{rel: "etc/" + hostsName})
	}
	home := agent.UserHome[1:]
	if !inLowers(lowers, home) {
		entries = append(entries,
			entry{rel: filepath.Dir(home), dir: true},
			entry{rel: home, dir: true, uid: agent.UserUID, gid: agent.UserGID})
	}
	for _, e := range entries {
		p := filepath.Join(upper, e.rel)
		var err error
		if e.dir {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, nil, 0o644)
			if e.rel == agent.BinaryPath[1:] {
				err = errors.Join(err, os.Chmod(p, 0o755))
			}
		}
		if err != nil && !(e.dir && errors.Is(err, fs.ErrExist)) {
			return fmt.Errorf("prepare upper dir: %w", err)
		}
		if e.uid != 0 || e.gid != 0 {
			if err := os.Lchown(p, e.uid, e.gid); err != nil {
				return fmt.Errorf("prepare upper dir: %w", err)
			}
		}
	}
	return nil
}

// inLowers reports whether rel exists in the merged view of the layers
// (topmost first): the first layer that has it, or a whiteout of it,
// decides. Layers are hostile input, so each is looked into through
// os.Root and a symlink never leads out of its layer; a symlinked
// component resolved inside one layer is an approximation of the merged
// view that errs towards "missing", which only adds a home dir.
func inLowers(lowers []string, rel string) bool {
	for _, l := range lowers {
		root, err := os.OpenRoot(l)
		if err != nil {
			continue
		}
		fi, err := root.Lstat(rel)
		root.Close()
		if err != nil {
			continue
		}
		// overlayfs's whiteout is a 0/0 character device.
		return fi.Mode()&fs.ModeCharDevice == 0
	}
	return false
}
