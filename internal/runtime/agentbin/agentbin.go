// Package agentbin finds or builds the static paddock-agent binary that every
// driver bind-mounts read-only into its sandboxes, and paddock-init, the
// runc driver's small helper that libcontainer re-executes as each
// container's init. A binary must be a file paddock owns (never a path a
// sandbox could reach and rewrite), so a source build lands in a
// content-addressed file under paddock's own cache dir.
package agentbin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
)

// EnvVar names the environment variable that points at a prebuilt agent.
const EnvVar = "PADDOCK_AGENT"

// InitEnvVar names the environment variable that points at a prebuilt
// paddock-init.
const InitEnvVar = "PADDOCK_INIT"

// binary is one program of the module this package finds or builds.
type binary struct {
	name   string // file name next to the paddock binary, and cmd/<name>
	envVar string
	cgo    bool // paddock-init links libcontainer's C half
}

var (
	agentBinary = binary{name: "paddock-agent", envVar: EnvVar}
	initBinary  = binary{name: "paddock-init", envVar: InitEnvVar, cgo: true}
)

// builds deduplicates concurrent source builds per cache dir in one process:
// a build takes seconds, and every caller wants the same file. The first
// caller runs the build itself; there is no goroutine of the package's own.
var (
	buildsMu sync.Mutex
	builds   = map[string]*build{} // guarded by buildsMu; key: cleaned cache dir and name
)

type build struct {
	done chan struct{}
	path string
	err  error
	// abandoned: the build failed because its caller's ctx ended.
	abandoned bool
}

// Path returns the path of a static agent binary: $PADDOCK_AGENT if set,
// else paddock-agent next to the running executable, else a build from the
// module's source (works under `go run` and `go test` on the machine that
// has the source) cached as cacheDir/paddock-agent-<sha256>.
func Path(ctx context.Context, cacheDir string) (string, error) {
	return find(ctx, agentBinary, cacheDir)
}

// InitPath is Path for paddock-init ($PADDOCK_INIT, next to the running
// executable, or built from source with cgo into cacheDir).
func InitPath(ctx context.Context, cacheDir string) (string, error) {
	return find(ctx, initBinary, cacheDir)
}

func find(ctx context.Context, bin binary, cacheDir string) (string, error) {
	if p := os.Getenv(bin.envVar); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%s binary from $%s: %w", bin.name, bin.envVar, err)
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), bin.name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	if cacheDir == "" {
		return "", fmt.Errorf("%s binary: no cache dir to build it into; %s", bin.name, bin.howTo())
	}
	key := filepath.Clean(cacheDir)
	bkey := key + "\x00" + bin.name
	for {
		buildsMu.Lock()
		b, ok := builds[bkey]
		if !ok {
			// This caller builds, in its own goroutine and under its own ctx;
			// concurrent callers wait for it instead of building again.
			b = &build{done: make(chan struct{})}
			builds[bkey] = b
			buildsMu.Unlock()
			b.path, b.err = buildFromSource(ctx, bin, key)
			b.abandoned = b.err != nil && ctx.Err() != nil
			if b.err != nil {
				// Let a later call retry instead of caching the failure forever.
				buildsMu.Lock()
				delete(builds, bkey)
				buildsMu.Unlock()
			}
			close(b.done)
			return b.path, b.err
		}
		buildsMu.Unlock()
		select {
		case <-b.done:
			if b.abandoned && ctx.Err() == nil {
				continue // the builder's caller gave up, not the build: build again
			}
			return b.path, b.err
		case <-ctx.Done():
			return "", fmt.Errorf("%s binary: %w", bin.name, ctx.Err())
		}
	}
}

func (bin binary) howTo() string {
	cgo := "0"
	if bin.cgo {
		cgo = "1"
	}
	return "build it with `CGO_ENABLED=" + cgo + " go build -trimpath -o " + bin.name + " ./cmd/" + bin.name + "` " +
		"and put it next to the paddock binary or set $" + bin.envVar
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// moduleRoot finds the source tree this package was compiled from, through
// the file path the compiler recorded; it exists only on the build machine.
func moduleRoot(bin binary) (string, error) {
	_, file, _, ok := goruntime.Caller(0)
	if !ok {
		return "", errors.New("no caller information")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "cmd", bin.name)); err != nil {
				return "", fmt.Errorf("module root %s has no cmd/%s: %w", dir, bin.name, err)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s (source not on this machine)", filepath.Dir(file))
		}
		dir = parent
	}
}

func buildFromSource(ctx context.Context, bin binary, cacheDir string) (string, error) {
	what := bin.name + " binary"
	root, err := moduleRoot(bin)
	if err != nil {
		return "", fmt.Errorf("%s: cannot build from source: %w; %s", what, err, bin.howTo())
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if p := filepath.Join(goruntime.GOROOT(), "bin", "go"); checkExecutable(p) == nil {
			goBin = p
		} else {
			return "", fmt.Errorf("%s: no go toolchain to build it: %w; %s", what, err, bin.howTo())
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("%s: cache dir: %w", what, err)
	}
	tmp, err := os.CreateTemp(cacheDir, "."+bin.name+"-build-*")
	if err != nil {
		return "", fmt.Errorf("%s: temp file: %w", what, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // no-op once renamed

	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", tmpName, "./cmd/"+bin.name)
	cmd.Dir = root
	cgo := "CGO_ENABLED=0"
	if bin.cgo {
		cgo = "CGO_ENABLED=1"
	}
	cmd.Env = append(os.Environ(), cgo, "GOOS=linux", "GOARCH="+goruntime.GOARCH, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: go build in %s: %w: %s; %s", what, root, err, out, bin.howTo())
	}
	sum, err := fileSHA256(tmpName)
	if err != nil {
		return "", fmt.Errorf("%s: hash: %w", what, err)
	}
	if err := os.Chmod(tmpName, 0o755); err != nil {
		return "", fmt.Errorf("%s: chmod: %w", what, err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmpName, 0, 0); err != nil {
			return "", fmt.Errorf("%s: chown: %w", what, err)
		}
	}
	final := filepath.Join(cacheDir, bin.name+"-"+sum)
	// Content-addressed: an existing file of that name has the same bytes, so
	// the rename may replace it without changing what a sandbox sees.
	if err := os.Rename(tmpName, final); err != nil {
		return "", fmt.Errorf("%s: install: %w", what, err)
	}
	return final, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
