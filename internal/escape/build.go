// Package escape runs paddock's escape battery against a sandbox: it builds
// the probe (./probe, a static program of attacks), copies it into the
// sandbox through the agent, runs it as the sandbox user and with sudo,
// adds what only the host can see (canary processes on the host that a
// kill(-1) inside must not reach), and fails the test for every attack that
// worked. The battery knows no driver: runtimetest runs it against every
// runtime.Driver, and the e2e suite runs it with the whole stack around
// (other sandboxes on the network, the agent sockets, the data dir).
//
// knownOpen (knownopen.go) lists the attacks that still work, each with
// what will close it; it fails the test both ways, so it shrinks as fixes
// merge and cannot rot.
package escape

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
	"time"
)

// Build compiles the probe (CGO_ENABLED=0, for this machine's
// architecture) from the source tree this package was compiled from, into
// cacheDir/probe-<sha256>, and returns that path. The file and cacheDir are
// world-readable: the host canaries run it as the sandbox user's uid.
func Build(ctx context.Context, cacheDir string) (string, error) {
	_, file, _, ok := goruntime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("escape: no source path recorded: build the probe from a checkout")
	}
	src := filepath.Dir(file)
	if _, err := os.Stat(filepath.Join(src, "probe")); err != nil {
		return "", fmt.Errorf("escape: probe source: %w", err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("escape: cache dir: %w", err)
	}
	if err := os.Chmod(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("escape: cache dir: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".probe-build-*")
	if err != nil {
		return "", fmt.Errorf("escape: %w", err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op once renamed

	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmpName, "./probe")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goruntime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("escape: go build ./probe: %w: %s", err, out)
	}
	f, err := os.Open(tmpName)
	if err != nil {
		return "", fmt.Errorf("escape: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("escape: hash the probe: %w", err)
	}
	if err := os.Chmod(tmpName, 0o755); err != nil {
		return "", fmt.Errorf("escape: %w", err)
	}
	// Content-addressed: a file of that name already has these bytes.
	final := filepath.Join(cacheDir, "probe-"+hex.EncodeToString(h.Sum(nil)))
	if err := os.Rename(tmpName, final); err != nil {
		return "", fmt.Errorf("escape: %w", err)
	}
	return final, nil
}

// probeOnce builds the probe once per test process, into a cache shared
// across runs (as the tests' agent binary is).
var probeOnce = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return Build(ctx, filepath.Join(os.TempDir(), "paddock-test-escape"))
})
