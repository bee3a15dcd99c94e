package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/userns"
)

// userNSFix is what an operator can do when sandboxes cannot have user
// namespaces here.
const userNSFix = "use Linux 5.19 or newer (idmapped mounts, overlayfs over idmapped layers) with the data dir on ext4, xfs or btrfs; " +
	"or run `paddock serve --no-userns`, which is weaker: root in a sandbox is then root on the host, and sandboxes share per-uid limits"

// checkUserNS: each sandbox runs in a user namespace of its own, with its
// overlay's layers and its binds idmapped, so the kernel must have user
// namespaces, and the data dir's filesystem idmapped mounts that overlayfs
// takes as layers. Volumes are ext4 images: the probe covers ext4 when the
// data dir is on it, and the kernel version does otherwise. The default
// id ranges should not meet host users or subordinate ids.
func checkUserNS(ctx context.Context, opts Options) Result {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return Result{Level: Fail, Detail: "no user namespaces (CONFIG_USER_NS)", Fix: userNSFix}
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return Result{Level: Fail, Detail: "user.max_user_namespaces is 0", Fix: "sysctl -w user.max_user_namespaces=15000; or " + userNSFix}
	}
	if os.Geteuid() != 0 {
		return Result{Level: Warn, Detail: "present; probing idmapped mounts needs root"}
	}
	dir := probeDir(opts.DataDir)
	if err := userns.Probe(dir, userns.DefaultBase); err != nil {
		return Result{Level: Fail, Detail: err.Error(), Fix: userNSFix}
	}
	fsName := "?"
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		fsName = userns.FSName(st.Type)
	}
	detail := fmt.Sprintf("idmapped mounts and overlayfs over them work on %s (%s)", fsName, dir)
	if fsName == "ext4" {
		detail += ", so ext4 volumes too"
	} else {
		detail += "; ext4 volumes: " + ext4Support()
	}
	end := uint64(userns.DefaultBase) + uint64(userns.DefaultRanges)*userns.Size
	detail += fmt.Sprintf("; sandbox ids %d-%d", userns.DefaultBase, end-1)
	if clash := idClashes(userns.DefaultBase, end); len(clash) > 0 {
		return Result{Level: Warn, Detail: detail + "; these host ids meet that range: " + strings.Join(clash, ", "),
			Fix: "serve with --userns-base set past them, or move those ids"}
	}
	return Result{Detail: detail}
}

// probeDir is dataDir, or its nearest existing parent (the data dir is
// made by the first serve), or the temp dir.
func probeDir(dataDir string) string {
	if dataDir == "" {
		return os.TempDir()
	}
	for d := filepath.Clean(dataDir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
		if d == "/" || d == "." {
			return os.TempDir()
		}
	}
}

// ext4Support: ext4 takes idmapped mounts since Linux 5.12.
func ext4Support() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown kernel"
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if major > 5 || (major == 5 && minor >= 12) {
		return "supported by this kernel"
	}
	return "NOT supported before Linux 5.12"
}

// idClashes lists entries of /etc/passwd, /etc/group, /etc/subuid and
// /etc/subgid whose ids fall in [lo, hi).
func idClashes(lo, hi uint64) []string {
	var out []string
	out = append(out, clashesIn("/etc/passwd", 2, -1, lo, hi)...)
	out = append(out, clashesIn("/etc/group", 2, -1, lo, hi)...)
	out = append(out, clashesIn("/etc/subuid", 1, 2, lo, hi)...)
	return append(out, clashesIn("/etc/subgid", 1, 2, lo, hi)...)
}

// clashesIn reads a colon-separated id file: the id in field idField and,
// when countField >= 0, a count of ids from it (subuid's ranges).
func clashesIn(path string, idField, countField int, lo, hi uint64) []string {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) <= max(idField, countField) {
			continue
		}
		start, err := strconv.ParseUint(fields[idField], 10, 32)
		if err != nil {
			continue
		}
		count := uint64(1)
		if countField >= 0 {
			if count, err = strconv.ParseUint(fields[countField], 10, 32); err != nil {
				continue
			}
		}
		if start < hi && lo < start+count {
			out = append(out, fmt.Sprintf("%s %s (%d+%d)", filepath.Base(path), fields[0], start, count))
		}
	}
	return out
}
