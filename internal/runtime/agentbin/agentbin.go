// Package agentbin finds or builds the static paddock-agent binary that every
// driver bind-mounts read-only into its sandboxes. The binary must be a file
// paddock owns (never a path a sandbox could reach and rewrite), so a source
// build lands in a content-addressed file under paddock's own cache dir.
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

// binaryName is the agent's file name next to the paddock binary.
const binaryName = "paddock-agent"

// builds deduplicates concurrent source builds per cache dir in one process:
// a build takes seconds, and every caller wants the same file. The first
// caller runs the build itself; there is no goroutine of the package's own.
var (
	buildsMu sync.Mutex
	builds   = map[string]*build{} // guarded by buildsMu; key: cleaned cache dir
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
	if p := os.Getenv(EnvVar); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("agent binary from $%s: %w", EnvVar, err)
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), binaryName)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	if cacheDir == "" {
		return "", errors.New("agent binary: no cache dir to build it into; " + howTo)
	}
	key := filepath.Clean(cacheDir)
	for {
		buildsMu.Lock()
		b, ok := builds[key]
		if !ok {
			// This caller builds, in its own goroutine and under its own ctx;
			// concurrent callers wait for it instead of building again.
			b = &build{done: make(chan struct{})}
			builds[key] = b
			buildsMu.Unlock()
			b.path, b.err = buildFromSource(ctx, key)
			b.abandoned = b.err != nil && ctx.Err() != nil
			if b.err != nil {
				// Let a later call retry instead of caching the failure forever.
				buildsMu.Lock()
				delete(builds, key)
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
			return "", fmt.Errorf("agent binary: %w", ctx.Err())
		}
	}
}

const howTo = "build it with `CGO_ENABLED=0 go build -trimpath -o paddock-agent ./cmd/paddock-agent` " +
	"and put it next to the paddock binary or set $" + EnvVar

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
func moduleRoot() (string, error) {
	_, file, _, ok := goruntime.Caller(0)
	if !ok {
		return "", errors.New("no caller information")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "cmd", binaryName)); err != nil {
				return "", fmt.Errorf("module root %s has no cmd/%s: %w", dir, binaryName, err)
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

func buildFromSource(ctx context.Context, cacheDir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("agent binary: cannot build from source: %w; %s", err, howTo)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if p := filepath.Join(goruntime.GOROOT(), "bin", "go"); checkExecutable(p) == nil {
			goBin = p
		} else {
			return "", fmt.Errorf("agent binary: no go toolchain to build it: %w; %s", err, howTo)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("agent binary: cache dir: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".paddock-agent-build-*")
	if err != nil {
		return "", fmt.Errorf("agent binary: temp file: %w", err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // no-op once renamed

	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", tmpName, "./cmd/"+binaryName)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("agent binary: go build in %s: %w: %s; %s", root, err, out, howTo)
	}
	sum, err := fileSHA256(tmpName)
	if err != nil {
		return "", fmt.Errorf("agent binary: hash: %w", err)
	}
	if err := os.Chmod(tmpName, 0o755); err != nil {
		return "", fmt.Errorf("agent binary: chmod: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmpName, 0, 0); err != nil {
			return "", fmt.Errorf("agent binary: chown: %w", err)
		}
	}
	final := filepath.Join(cacheDir, binaryName+"-"+sum)
	// Content-addressed: an existing file of that name has the same bytes, so
	// the rename may replace it without changing what a sandbox sees.
	if err := os.Rename(tmpName, final); err != nil {
		return "", fmt.Errorf("agent binary: install: %w", err)
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
